"""End-to-end throughput of the memory:// driver.

    python benchmarks/bench_memory.py [--calls N] [--threads T] [--casts N] [--json PATH]

Measures, through the public API with a real RPC server and its executor:

* sequential calls/s: one client thread, each call waits for its reply;
* concurrent calls/s: T threads sharing one client;
* casts/s end to end: from the first cast sent until the server has
  executed the last one.

The goal for memory:// is at least 20,000 sequential calls/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polymsg

GOAL_SEQUENTIAL = 20_000


class Endpoint:
    """Counts casts and wakes the benchmark when the expected number arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.expected = 0
        self.done = threading.Event()

    def echo(self, ctxt: dict[str, Any], value: int) -> int:
        return value

    def tick(self, ctxt: dict[str, Any]) -> None:
        with self.lock:
            self.count += 1
            if self.count == self.expected:
                self.done.set()

    def expect(self, n: int) -> None:
        with self.lock:
            self.count, self.expected = 0, n
            self.done.clear()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_sequential(client: polymsg.RPCClient, n: int) -> float:
    def run() -> None:
        for i in range(n):
            if client.call({}, "echo", value=i) != i:
                raise AssertionError("crossed reply")
    return n / timed(run)


def bench_concurrent(client: polymsg.RPCClient, n: int, threads: int) -> float:
    per_thread = n // threads

    def worker(offset: int) -> None:
        for i in range(per_thread):
            if client.call({}, "echo", value=offset + i) != offset + i:
                raise AssertionError("crossed reply")

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker, t * per_thread) for t in range(threads)]:
                future.result()
    return per_thread * threads / timed(run)


def bench_casts(client: polymsg.RPCClient, endpoint: Endpoint, n: int) -> float:
    endpoint.expect(n)

    def run() -> None:
        for _ in range(n):
            client.cast({}, "tick")
        if not endpoint.done.wait(timeout=120):
            raise AssertionError(f"only {endpoint.count} of {n} casts executed")
    return n / timed(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per call benchmark")
    parser.add_argument("--threads", type=int, default=16, help="threads for concurrent calls")
    parser.add_argument("--casts", type=int, default=50_000, help="casts to send")
    parser.add_argument("--json", dest="json_path", help="also write the figures to this file")
    args = parser.parse_args()

    endpoint = Endpoint()
    with polymsg.get_transport("memory://bench") as transport:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic="bench", server="s1"), [endpoint])
        with server:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="bench"), timeout=30)
            bench_sequential(client, min(1000, args.calls))  # warm up
            figures = {
                "sequential_calls_per_s": bench_sequential(client, args.calls),
                f"concurrent_calls_per_s_{args.threads}_threads":
                    bench_concurrent(client, args.calls, args.threads),
                "casts_per_s_end_to_end": bench_casts(client, endpoint, args.casts),
            }

    print(f"memory:// on Python {platform.python_version()}, {os.cpu_count()} CPUs")
    for name, value in figures.items():
        print(f"  {name:<40} {value:>10,.0f}")
    ok = figures["sequential_calls_per_s"] >= GOAL_SEQUENTIAL
    print(f"  goal: >= {GOAL_SEQUENTIAL:,} sequential calls/s -> {'met' if ok else 'NOT met'}")
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"driver": "memory", **figures}, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
