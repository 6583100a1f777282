"""polymsg-zmq next to raw pyzmq, between two processes, in one run.

Measured (each in a fresh pair of processes on this machine):

* raw DEALER/ROUTER round trip: a client DEALER sends a small message, an
  echo ROUTER in the other process sends it back (sequential, microseconds);
* polymsg-zmq call round trip: ``RPCClient.call`` to an RPC server in the
  other process (sequential, microseconds);
* raw PUSH/PULL: messages per second from a PUSH to a PULL in the other
  process, counted when the last one is received;
* polymsg-zmq casts/s end to end: ``RPCClient.cast`` from this process,
  counted when the server in the other process has *executed* the last one.

The server process is the host's first polymsg user, so it runs the host's
receiver in-process (``zmq://`` with nothing else installed). Goals
(DESIGN.md): call round trip <= 3x raw DEALER/ROUTER, >= 100,000 casts/s.

    python benchmarks/bench_zmq.py [--calls 3000] [--casts 200000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import time
from typing import Any

import zmq

PAYLOAD = {"name": "instance-1", "flavor": "m1.small", "count": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- raw pyzmq ---------------------------------------------------------------------------

def _raw_router(endpoint: str, ready: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    ready.put(True)
    while True:
        frames = sock.recv_multipart()
        if frames[-1] == b"stop":
            break
        sock.send_multipart(frames)
    ctx.destroy(linger=0)


class _RawEcho:
    """A raw ROUTER echo server in a child process, and a DEALER to it."""

    def __init__(self) -> None:
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        ready: Any = mp.Queue()
        self.child = mp.Process(target=_raw_router, args=(endpoint, ready))
        self.child.start()
        ready.get()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)
        self.body = repr(PAYLOAD).encode()

    def round_trips(self, n: int) -> list[float]:
        """Microseconds of each of ``n`` DEALER->ROUTER->DEALER round trips."""
        sock, body, clock = self.sock, self.body, time.perf_counter
        times = []
        for _ in range(n):
            started = clock()
            sock.send(body)
            sock.recv()
            times.append((clock() - started) * 1e6)
        return times

    def close(self) -> None:
        self.sock.send(b"stop")
        self.child.join()
        self.ctx.destroy(linger=0)


def _raw_pull(endpoint: str, n: int, ready: Any, done: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(endpoint)
    ready.put(True)
    for _ in range(n):
        sock.recv_multipart()
    done.put(time.monotonic())
    ctx.destroy(linger=0)


def raw_push_pull(n: int) -> float:
    """Messages per second, PUSH -> PULL, sent to received."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ready: Any = mp.Queue()
    done: Any = mp.Queue()
    child = mp.Process(target=_raw_pull, args=(endpoint, n, ready, done))
    child.start()
    ready.get()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.sndhwm = 0
    sock.connect(endpoint)
    header, body = b'{"k":"rpc"}', repr(PAYLOAD).encode()
    started = time.monotonic()
    for _ in range(n):
        sock.send_multipart([header, body])
    finished = done.get()
    child.join()
    ctx.destroy(linger=0)
    return n / (finished - started)


# -- polymsg-zmq -------------------------------------------------------------------------

class _Endpoint:
    def __init__(self, expected: int, done: Any) -> None:
        self.count = 0
        self.expected = expected
        self.done = done

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value

    def work(self, ctxt: dict[str, Any], value: Any) -> None:
        self.count += 1  # one worker thread: no lock needed
        if self.count == self.expected:
            self.done.put(time.monotonic())


def _polymsg_server(url: str, expected: int, ready: Any, done: Any, stop: Any) -> None:
    import polymsg

    with polymsg.get_transport(url) as transport:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic="bench", server="server-1"),
            [_Endpoint(expected, done)], max_workers=1)
        server.start()
        ready.put(True)
        stop.get()
        server.stop()
        server.wait()


def _polymsg_pair(url: str, expected: int) -> tuple[Any, Any, Any, Any]:
    ready: Any = mp.Queue()
    done: Any = mp.Queue()
    stop: Any = mp.Queue()
    child = mp.Process(target=_polymsg_server, args=(url, expected, ready, done, stop))
    child.start()
    ready.get()
    return child, done, stop, ready


def round_trips(url: str, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Microseconds of each round trip, raw DEALER/ROUTER and RPCClient.call, measured
    in alternating rounds against long-lived servers (the machine's load varies)."""
    import polymsg

    raw = _RawEcho()
    child, _, stop, _ = _polymsg_pair(url, -1)
    raw_times: list[float] = []
    zmq_times: list[float] = []
    with polymsg.get_transport(url) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="bench"), timeout=30)

        def calls(count: int) -> list[float]:
            clock, times = time.perf_counter, []
            for _ in range(count):
                started = clock()
                client.call({}, "echo", value=PAYLOAD)
                times.append((clock() - started) * 1e6)
            return times

        raw.round_trips(500)  # warm up both
        calls(500)
        for _ in range(rounds):
            raw_times.extend(raw.round_trips(n))
            zmq_times.extend(calls(n))
    stop.put(True)
    child.join()
    raw.close()
    return raw_times, zmq_times


def polymsg_casts(url: str, n: int) -> float:
    """Casts per second, from the first cast to the server executing the last."""
    import polymsg

    child, done, stop, _ = _polymsg_pair(url, n)
    with polymsg.get_transport(url) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="bench"), timeout=30)
        started = time.monotonic()
        for _ in range(n):
            client.cast({}, "work", value=PAYLOAD)
        finished = done.get()
    stop.put(True)
    child.join()
    return n / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--casts", type=int, default=200000, help="casts per round")
    parser.add_argument("--cast-rounds", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="pmz-bench-", dir="/tmp")
    try:
        url = f"zmq://127.0.0.1:{_free_port()}/?ipc_dir={os.path.join(root, 'ipc')}"
        raw_times, zmq_times = round_trips(url, args.calls, args.rounds)
        raw_rates, zmq_rates = [], []
        for index in range(args.cast_rounds):
            raw_rates.append(raw_push_pull(args.casts))
            url = f"zmq://127.0.0.1:{_free_port()}/?ipc_dir={os.path.join(root, str(index))}"
            zmq_rates.append(polymsg_casts(url, args.casts))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    raw_rate, zmq_rate = statistics.median(raw_rates), statistics.median(zmq_rates)
    raw_p50, zmq_p50 = statistics.median(raw_times), statistics.median(zmq_times)
    raw_mean, zmq_mean = statistics.fmean(raw_times), statistics.fmean(zmq_times)
    print(f"{args.rounds} alternating rounds of {args.calls} calls, median of "
          f"{args.cast_rounds} rounds of {args.casts:,} casts (load {os.getloadavg()[0]:.1f})")
    print(f"raw pyzmq DEALER/ROUTER round trip   p50 {raw_p50:8.1f} us   mean {raw_mean:8.1f} us")
    print(f"polymsg-zmq call round trip          p50 {zmq_p50:8.1f} us   mean {zmq_mean:8.1f} us"
          f"   ratio p50 {zmq_p50 / raw_p50:.2f}x, mean {zmq_mean / raw_mean:.2f}x"
          " (goal <= 3x)")
    print(f"raw pyzmq PUSH/PULL                  {raw_rate:10,.0f} msg/s")
    print(f"polymsg-zmq casts end to end         {zmq_rate:10,.0f} casts/s"
          f"   {zmq_rate / raw_rate:.2f} of raw (goal >= 100,000/s)")


if __name__ == "__main__":
    main()
