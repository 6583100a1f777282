"""asyncio benchmark: polymsg.aio on one event loop against the 16-thread sync client.

    python benchmarks/bench_aio.py [--url-rabbit rabbit://guest:guest@127.0.0.1:5673/]
                                   [--calls 10000] [--inflight 1000] [--threads 16]
                                   [--only memory,kombu,pika,zmq,faststream]

For each transport an RPC server runs in a child process (memory: in this
process, on a loop of its own): a ``polymsg.aio`` server with an ``async
def echo``. From this process, in turns:

* aio: one event loop, ``--inflight`` calls in flight at all times until
  ``--calls`` calls returned: calls/s, median and p99 latency;
* sync: ``--threads`` threads sharing one ``polymsg.RPCClient``, the same
  number of calls: calls/s, median and p99 latency;
* faststream (RabbitMQ only, when ``faststream[rabbit]`` is installed):
  ``broker.request`` (aio-pika, publisher confirms on) with ``--inflight``
  requests in flight against a faststream subscriber in a child process.

Figures are the best of ``--rounds`` rounds. ``cpu us/call`` is the CPU time
of client and server together per call (both processes; Linux), a figure
that other jobs on the machine disturb less than calls/s: on a loaded
machine the scheduler shares the cores per thread, which favours 16 threads
over one loop. The load average is printed before and after. The RabbitMQ
URL defaults to ``$POLYMSG_TEST_RABBIT_URL``. Not a test: run it by hand on
a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

TRANSPORTS = ("memory", "kombu", "pika", "zmq", "faststream")


class Echo:
    async def echo(self, ctxt: Any, x: Any) -> Any:
        return x


class PlainEcho:
    def echo(self, ctxt: Any, x: Any) -> Any:
        return x


# -- servers -----------------------------------------------------------------

async def serve_polymsg(url: str, topic: str, ready: Callable[[], None],
                        done: Awaitable[Any]) -> None:
    import polymsg
    from polymsg import aio

    target = polymsg.Target(topic=topic, server="bench")
    with polymsg.get_transport(url) as transport:
        if os.environ.get("BENCH_AIO_SERVER", "aio") == "sync":
            with polymsg.get_rpc_server(transport, target, [PlainEcho()]):
                ready()
                await done
            return
        async with aio.get_rpc_server(transport, target, [Echo()]):
            ready()
            await done


def _faststream_broker(url: str) -> Any:
    """A faststream RabbitBroker (an optional, untyped benchmark-only import)."""
    rabbit: Any = importlib.import_module("faststream.rabbit")
    return rabbit.RabbitBroker(url, logger=None)


async def serve_faststream(url: str, topic: str, ready: Callable[[], None],
                           done: Awaitable[Any]) -> None:
    broker = _faststream_broker(url)

    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    broker.subscriber(topic)(echo)

    async with broker:
        await broker.start()
        ready()
        await done


def child(kind: str, url: str, topic: str) -> None:
    """Serve until stdin closes (the child process)."""
    out, sys.stdout = sys.stdout, sys.stderr  # stdout says "ready", nothing else

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(None, sys.stdin.read)
        serve = serve_faststream if kind == "faststream" else serve_polymsg
        await serve(url, topic, lambda: print("ready", file=out, flush=True), done)
    asyncio.run(main())


class Server:
    """A server in a child process (or, for memory://, on a thread's loop here)."""

    def __init__(self, kind: str, url: str, topic: str) -> None:
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen[str] | None = None
        if url.startswith("memory://"):
            started, self.stop_loop = threading.Event(), threading.Event()

            async def run() -> None:
                done = asyncio.get_running_loop().run_in_executor(None, self.stop_loop.wait)
                await serve_polymsg(url, topic, started.set, done)
            self.thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
            self.thread.start()
            started.wait(30)
            return
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, url, topic],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # faststream logs its start on stdout first
            if line.strip() == "ready":
                return
        raise SystemExit(f"the {kind} server did not start")

    def cpu(self) -> float:
        """CPU seconds the child server used so far (0 in process or off Linux)."""
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.thread is not None:
            self.stop_loop.set()
            self.thread.join(30)
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(30)


# -- clients -----------------------------------------------------------------

def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    latencies.sort()
    return {"calls/s": len(latencies) / elapsed,
            "p50 ms": latencies[len(latencies) // 2] * 1000,
            "p99 ms": latencies[int(len(latencies) * 0.99) - 1] * 1000}


async def in_flight(call: Callable[[], Awaitable[Any]], total: int,
                    inflight: int) -> dict[str, float]:
    """``total`` calls with ``inflight`` of them in flight at all times."""
    await call()  # warm-up: connections, declarations
    latencies: list[float] = []
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(inflight, total))))
    return summary(latencies, time.perf_counter() - started)


async def aio_round(url: str, topic: str, total: int, inflight: int) -> dict[str, float]:
    import polymsg
    from polymsg import aio

    with polymsg.get_transport(url) as transport:
        client = aio.RPCClient(transport, polymsg.Target(topic=topic), timeout=120)
        return await in_flight(lambda: client.call({}, "echo", x=1), total, inflight)


def sync_round(url: str, topic: str, total: int, threads: int) -> dict[str, float]:
    import polymsg

    with polymsg.get_transport(url) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=120)
        client.call({}, "echo", x=1)
        latencies: list[float] = []

        def work() -> None:
            mine = []
            for _ in range(total // threads):
                started = time.perf_counter()
                client.call({}, "echo", x=1)
                mine.append(time.perf_counter() - started)
            latencies.extend(mine)
        workers = [threading.Thread(target=work) for _ in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return summary(latencies, time.perf_counter() - started)


async def faststream_round(url: str, topic: str, total: int,
                           inflight: int) -> dict[str, float]:
    async with _faststream_broker(url) as broker:
        async def call() -> Any:
            reply = await broker.request({"x": 1}, topic, timeout=120)
            return await reply.decode()
        return await in_flight(call, total, inflight)


# -- the run -----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def urls(args: argparse.Namespace, tmp: str) -> dict[str, str]:
    found = {"memory": f"memory://bench-{uuid.uuid4().hex[:8]}",
             "zmq": f"zmq://127.0.0.1:{free_port()}/?ipc_dir={tmp}/ipc"}
    if args.url_rabbit:
        rest = args.url_rabbit.split("://", 1)[1]
        found |= {"kombu": f"rabbit+kombu://{rest}", "pika": f"rabbit+pika://{rest}",
                  "faststream": f"amqp://{rest}"}
    return {name: url for name, url in found.items() if name in args.only}


def measure(name: str, url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    topic = f"bench-aio-{uuid.uuid4().hex[:8]}"
    kind = "faststream" if name == "faststream" else "polymsg"
    server = Server(kind, url, topic)
    best: dict[str, dict[str, float]] = {}
    rounds: dict[str, Callable[[], dict[str, float]]]
    try:
        for _ in range(args.rounds):
            if kind == "faststream":
                rounds = {"faststream": lambda: asyncio.run(
                    faststream_round(url, topic, args.calls, args.inflight))}
            else:
                rounds = {
                    "aio": lambda: asyncio.run(aio_round(url, topic, args.calls, args.inflight)),
                    "sync": lambda: sync_round(url, topic, args.calls, args.threads)}
            for label, run in rounds.items():
                cpu = time.process_time() + server.cpu()
                figures = run()
                # client and server together (memory: both in this process)
                used = time.process_time() + server.cpu() - cpu
                figures["cpu us"] = used / args.calls * 1e6
                if figures["calls/s"] > best.get(label, {}).get("calls/s", 0):
                    best[label] = figures
    finally:
        server.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "URL", "TOPIC"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--url-rabbit", default=os.environ.get("POLYMSG_TEST_RABBIT_URL"))
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server", choices=("aio", "sync"), default="aio",
                        help="the polymsg server: aio (async def echo) or sync (threads)")
    parser.add_argument("--only", default=",".join(TRANSPORTS),
                        type=lambda text: set(text.split(",")))
    args = parser.parse_args()
    if args.serve:
        child(*args.serve)
        return
    os.environ["BENCH_AIO_SERVER"] = args.server  # the server processes inherit it
    tmp = tempfile.mkdtemp(prefix="bench-aio", dir="/tmp")
    try:
        print(_load())
        print(f"{'transport':12s}{'client':>12s}{'calls/s':>12s}{'p50 ms':>10s}{'p99 ms':>10s}"
              f"{'cpu us/call':>13s}")
        results = {}
        for name, url in urls(args, tmp).items():
            if name == "faststream" and not _has("faststream"):
                print("faststream: not installed (pip install 'faststream[rabbit]')")
                continue
            results[name] = measure(name, url, args)
            for label, figures in results[name].items():
                client = (f"{args.inflight} tasks" if label != "sync"
                          else f"{args.threads} threads")
                print(f"{name:12s}{client:>12s}{figures['calls/s']:12,.0f}"
                      f"{figures['p50 ms']:10.1f}{figures['p99 ms']:10.1f}"
                      f"{figures['cpu us']:13.0f}", flush=True)
        ratios(results)
        print(_load())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ratios(results: dict[str, dict[str, dict[str, float]]]) -> None:
    print()
    for name, figures in results.items():
        if "aio" in figures and "sync" in figures:
            ratio = figures["aio"]["calls/s"] / figures["sync"]["calls/s"]
            print(f"{name}: aio / 16-thread sync = {ratio:.2f}x "
                  f"({'PASS' if ratio >= 1 else 'MISS'}, goal >= 1x)")
    fast = results.get("faststream", {}).get("faststream")
    for name in ("kombu", "pika"):
        if fast and "aio" in results.get(name, {}):
            ratio = results[name]["aio"]["calls/s"] / fast["calls/s"]
            print(f"{name}: aio / faststream = {ratio:.2f}x "
                  f"({'PASS' if ratio >= 3 else 'MISS'}, goal >= 3x)")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} (1, 5, 15 min)"


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
