"""polymsg-zmq next to raw pyzmq, between two processes, in one run.

Measured (each in a fresh pair of processes on this machine):

* raw DEALER/ROUTER round trip: a client DEALER sends a small message, an
  echo ROUTER in the other process sends it back (sequential, microseconds);
* polymsg-zmq call round trip: ``RPCClient.call`` to an RPC server in the
  other process (sequential, microseconds);
* raw PUSH/PULL: messages per second from a PUSH to a PULL in the other
  process, counted when the last one is received;
* polymsg-zmq casts/s end to end: ``RPCClient.cast`` from this process,
  counted when the server in the other process has *executed* the last one,
  with the server's CPU time per cast (steadier than rates on a busy machine);
* polymsg-zmq server RSS after 20k and after 200k casts from 16 threads.

Servers use the default worker pool (``executor_thread_pool_size``), as real
ones do, unless ``--max-workers`` says otherwise.

The server process is the host's first polymsg user, so it runs the host's
receiver in-process (``zmq://`` with nothing else installed). Goals
(DESIGN.md): call round trip <= 3x raw DEALER/ROUTER, >= 100,000 casts/s,
server RSS after 200k casts within 10% of after 20k.

    python benchmarks/bench_zmq.py [--calls 3000] [--casts 200000] [--rss-batch 0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import threading
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
    finished: float = done.get()
    child.join()
    ctx.destroy(linger=0)
    return n / (finished - started)


# -- polymsg-zmq -------------------------------------------------------------------------

class _Endpoint:
    """Echoes calls; counts casts and answers "have n run?" (several workers may count)."""

    def __init__(self) -> None:
        self.count = 0
        self.wanted = 1 << 62
        self.cond = threading.Condition()

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value

    def work(self, ctxt: dict[str, Any], value: Any) -> None:
        with self.cond:
            self.count += 1
            if self.count == self.wanted:  # the waiter wakes once, not per cast
                self.cond.notify_all()

    def wait_for(self, n: int) -> float:
        """Block until ``n`` casts ran; the monotonic time (host-wide) the last one did."""
        with self.cond:
            self.wanted = n
            self.cond.wait_for(lambda: self.count >= n)
        return time.monotonic()


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _polymsg_server(url: str, max_workers: int | None, ready: Any, commands: Any,
                    answers: Any) -> None:
    """Child: an RPC server answering ``("wait", n)`` with (time, CPU seconds used so
    far, RSS) once ``n`` casts ran; ``None`` stops it."""
    import polymsg

    endpoint = _Endpoint()
    with polymsg.get_transport(url) as transport:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic="bench", server="server-1"), [endpoint],
            max_workers=max_workers)
        server.start()
        ready.put(True)
        while (command := commands.get()) is not None:
            finished = endpoint.wait_for(command[1])
            answers.put((finished, time.process_time(), _rss()))
        server.stop()
        server.wait()


class _Server:
    """A polymsg-zmq RPC server in a child process (the host's first user: it runs the
    receiver in-process)."""

    def __init__(self, url: str, max_workers: int | None) -> None:
        ready: Any = mp.Queue()
        self.commands: Any = mp.Queue()
        self.answers: Any = mp.Queue()
        self.child = mp.Process(target=_polymsg_server,
                                args=(url, max_workers, ready, self.commands, self.answers))
        self.child.start()
        ready.get()
        self.done = 0

    def wait(self, casts: int) -> tuple[float, float, int]:
        """Wait until ``casts`` more casts ran: (time the last ran, server CPU s, RSS)."""
        self.done += casts
        self.commands.put(("wait", self.done))
        answer: tuple[float, float, int] = self.answers.get()
        return answer

    def close(self) -> None:
        self.commands.put(None)
        self.child.join()


def round_trips(url: str, n: int, rounds: int, max_workers: int | None
                ) -> tuple[list[float], list[float]]:
    """Microseconds of each round trip, raw DEALER/ROUTER and RPCClient.call, measured
    in alternating rounds against long-lived servers (the machine's load varies)."""
    import polymsg

    raw = _RawEcho()
    server = _Server(url, max_workers)
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
    server.close()
    raw.close()
    return raw_times, zmq_times


def polymsg_casts(url: str, n: int, max_workers: int | None) -> tuple[float, float]:
    """Casts per second, from the first cast to the server executing the last, and the
    server's CPU microseconds per cast."""
    import polymsg

    server = _Server(url, max_workers)
    try:
        with polymsg.get_transport(url) as transport:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="bench"), timeout=30)
            client.cast({}, "work", value=PAYLOAD)
            _, cpu_before, _ = server.wait(1)
            started = time.monotonic()
            for _ in range(n):
                client.cast({}, "work", value=PAYLOAD)
            finished, cpu_after, _ = server.wait(n)
    finally:
        server.close()
    return n / (finished - started), (cpu_after - cpu_before) / n * 1e6


def server_rss(url: str, batch: int, batches: int, max_workers: int | None,
               senders: int = 16) -> tuple[int, int]:
    """Server RSS after ``batch`` casts and after ``batch * batches``, sent a batch at a
    time from ``senders`` threads, each batch waited for (as ``polymsg bench`` does)."""
    import polymsg

    server = _Server(url, max_workers)
    try:
        with polymsg.get_transport(url) as transport:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="bench"), timeout=30)

            def send(count: int) -> None:
                for _ in range(count):
                    client.cast({}, "work", value=PAYLOAD)

            first = last = 0
            for _ in range(batches):
                shares = [batch // senders + (i < batch % senders) for i in range(senders)]
                threads = [threading.Thread(target=send, args=(k,)) for k in shares]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                last = server.wait(batch)[2]
                first = first or last
    finally:
        server.close()
    return first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--casts", type=int, default=200000, help="casts per round")
    parser.add_argument("--cast-rounds", type=int, default=3)
    parser.add_argument("--max-workers", type=int, default=None,
                        help="the server's worker threads (default: executor_thread_pool_size)")
    parser.add_argument("--rss-batch", type=int, default=20000,
                        help="server RSS after this many casts and after ten times as many "
                             "(0: skip)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="pmz-bench-", dir="/tmp")

    def url(name: str) -> str:
        return f"zmq://127.0.0.1:{_free_port()}/?ipc_dir={os.path.join(root, name)}"

    try:
        raw_times, zmq_times = round_trips(url("calls"), args.calls, args.rounds,
                                           args.max_workers)
        raw_rates, zmq_rates, zmq_cpu = [], [], []
        for index in range(args.cast_rounds):
            raw_rates.append(raw_push_pull(args.casts))
            rate, cpu = polymsg_casts(url(f"casts{index}"), args.casts, args.max_workers)
            zmq_rates.append(rate)
            zmq_cpu.append(cpu)
        rss = (server_rss(url("rss"), args.rss_batch, 10, args.max_workers)
               if args.rss_batch else None)
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
          f"   {zmq_rate / raw_rate:.2f} of raw (goal >= 100,000/s)"
          f"   server CPU {statistics.median(zmq_cpu):.1f} us/cast")
    if rss is not None:
        first, last = rss
        print(f"polymsg-zmq server RSS               {first / 2**20:.1f} MiB after "
              f"{args.rss_batch:,} casts, {last / 2**20:.1f} MiB after {10 * args.rss_batch:,}"
              f"   growth {(last - first) / first * 100:+.1f}% (goal <= 10%)")


if __name__ == "__main__":
    main()
