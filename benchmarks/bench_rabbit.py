"""RabbitMQ benchmark: polymsg (rabbit+kombu, rabbit+pika) against oslo.messaging, one run.

    python benchmarks/bench_rabbit.py [--url rabbit://guest:guest@127.0.0.1:5673/]
                                      [--calls 2000] [--casts 10000] [--threads 16]
                                      [--rounds 3] [--only polymsg-kombu,oslo]

For each library it starts an RPC server in a child process (so client and
server do not share an interpreter lock, as in production), then measures
from this process, each figure ``--rounds`` times with the libraries taking
turns, keeping each library's best round (other load on the machine then
weighs on both alike):

* sequential calls/s: one thread, call after call;
* concurrent calls/s: ``--threads`` threads calling at once;
* casts/s end to end: one thread casts N messages (each broker-confirmed
  for polymsg), then a call waits until the server has executed all N; the
  rate is N over the time from the first cast to that call's return;
* concurrent casts/s end to end: the same with ``--threads`` casting threads.

It prints a table and the ratios of each polymsg driver to oslo.messaging.
The URL defaults to ``$POLYMSG_TEST_RABBIT_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LIBRARIES = ("polymsg-kombu", "polymsg-pika", "oslo")
SCHEMES = {"polymsg-kombu": "rabbit+kombu", "polymsg-pika": "rabbit+pika"}


class Endpoint:
    """What both servers serve: an echo, and a cast counter a call can wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def echo(self, ctxt: Any, x: Any) -> Any:
        return x

    def tick(self, ctxt: Any) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def reset(self, ctxt: Any) -> int:
        with self._cond:
            self._count = 0
        return 0

    def count(self, ctxt: Any, n: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._count >= n, timeout)
            return self._count


# -- URL and oslo.messaging configuration ------------------------------------

def library_url(url: str, library: str) -> str:
    """``url`` with the scheme of ``library`` (oslo keeps ``rabbit``)."""
    rest = url.split("://", 1)[1]
    return f"{SCHEMES.get(library, 'rabbit')}://{rest}"


def oslo_conf() -> Any:
    """A private ConfigOpts oslo.messaging 18 can run on (it registers tracing
    and metrics options on the global CONF only)."""
    from oslo_config import cfg
    from oslo_messaging._metrics import client as metrics
    from oslo_messaging._tracing import client as tracing

    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    return conf


# -- the server process ----------------------------------------------------

def serve(library: str, url: str, topic: str) -> None:
    """Run a server until stdin closes (child process)."""
    if library == "oslo":
        import oslo_messaging as om

        transport = om.get_rpc_transport(oslo_conf(), url=url)
        server = om.get_rpc_server(transport, om.Target(topic=topic, server="bench"),
                                   [Endpoint()])
    else:
        import polymsg

        transport = polymsg.get_transport(url)
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="bench"),
                                        [Endpoint()])
    server.start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()
    server.wait()
    transport.cleanup()


# -- the client side -------------------------------------------------------

class Client:
    """call/cast for one library, with the same shape for both."""

    def __init__(self, library: str, url: str, topic: str) -> None:
        if library == "oslo":
            import oslo_messaging as om

            self.transport = om.get_rpc_transport(oslo_conf(), url=url)
            self.client = om.get_rpc_client(self.transport, om.Target(topic=topic), timeout=60)
        else:
            import polymsg

            self.transport = polymsg.get_transport(url)
            self.client = polymsg.RPCClient(self.transport, polymsg.Target(topic=topic),
                                            timeout=60)

    def call(self, method: str, **kwargs: Any) -> Any:
        return self.client.call({}, method, **kwargs)

    def cast(self, method: str, **kwargs: Any) -> None:
        self.client.cast({}, method, **kwargs)

    def close(self) -> None:
        self.transport.cleanup()


def rate(count: int, fn: Callable[[], None]) -> float:
    """``count`` over the seconds ``fn`` took."""
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def in_threads(threads: int, total: int, fn: Callable[[], None]) -> Callable[[], None]:
    """A function running ``fn`` ``total`` times spread over ``threads`` threads."""
    def run() -> None:
        per_thread = total // threads

        def loop() -> None:
            for _ in range(per_thread):
                fn()

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(loop) for _ in range(threads)]:
                future.result()
    return run


class Subject:
    """One library under test: its server (a child process) and a client."""

    def __init__(self, library: str, url: str) -> None:
        self.library = library
        topic = f"bench-{library}-{uuid.uuid4().hex[:8]}"
        self.server = subprocess.Popen(
            [sys.executable, __file__, "--serve", library, "--url", url, "--topic", topic],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.server.stdout is None or self.server.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the {library} server did not start")
        self.client = Client(library, url, topic)
        for i in range(50):  # warm up: connections, declarations
            self.client.call("echo", x=i)

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.server.stdin is not None:
            self.server.stdin.close()
        self.server.wait(timeout=60)


def measurements(args: argparse.Namespace) -> dict[str, Callable[[Client], float]]:
    """Each figure, as a function of a client."""
    threads = args.threads

    def sequential_calls(client: Client) -> float:
        return rate(args.calls, lambda: [client.call("echo", x=1)
                                         for _ in range(args.calls)] and None)

    def threaded_calls(client: Client) -> float:
        total = args.calls * 2
        return rate(total, in_threads(threads, total, lambda: client.call("echo", x=1)))

    return {
        "sequential calls/s": sequential_calls,
        f"{threads}-thread calls/s": threaded_calls,
        "casts/s end to end": lambda client: cast_rate(client, args.casts, 1),
        f"{threads}-thread casts/s end to end":
            lambda client: cast_rate(client, args.casts, threads),
    }


def run_rounds(subjects: list[Subject], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every figure ``--rounds`` times, the libraries taking turns; the best of each.

    Taking turns and keeping the best round cancels most of the noise other
    processes on the machine add: each library gets its quietest moment.
    """
    results: dict[str, dict[str, float]] = {s.library: {} for s in subjects}
    for name, measure in measurements(args).items():
        for _ in range(args.rounds):
            for subject in subjects:
                figure = measure(subject.client)
                best = results[subject.library].get(name, 0.0)
                results[subject.library][name] = max(best, figure)
        print(f"measured {name}", file=sys.stderr, flush=True)
    return results


def cast_rate(client: Client, count: int, threads: int) -> float:
    count -= count % threads
    client.call("reset")

    def run() -> None:
        in_threads(threads, count, lambda: client.cast("tick"))()
        executed = client.call("count", n=count, timeout=120.0)
        if executed < count:
            raise RuntimeError(f"only {executed} of {count} casts were executed")

    return rate(count, run)


def report(results: dict[str, dict[str, float]]) -> None:
    names = list(next(iter(results.values())))
    libraries = list(results)
    print(f"{'':34s}" + "".join(f"{lib:>16s}" for lib in libraries))
    for name in names:
        print(f"{name:34s}" + "".join(f"{results[lib][name]:16,.0f}" for lib in libraries))
    if "oslo" in results:
        for lib in libraries:
            if lib == "oslo":
                continue
            print(f"\n{lib} / oslo.messaging:")
            for name in names:
                print(f"  {name:32s} {results[lib][name] / results['oslo'][name]:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("POLYMSG_TEST_RABBIT_URL",
                                                        "rabbit://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--casts", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure each figure this many times per library, keep the best")
    parser.add_argument("--only", default="polymsg-kombu,oslo",
                        help=f"comma-separated, from {', '.join(LIBRARIES)}")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, library_url(args.url, args.serve), args.topic)
        return
    libraries = args.only.split(",")
    for library in libraries:
        if library not in LIBRARIES:
            parser.error(f"unknown library {library!r}")
    subjects: list[Subject] = []
    try:
        for library in libraries:
            subjects.append(Subject(library, library_url(args.url, library)))
        results = run_rounds(subjects, args)
    finally:
        for subject in subjects:
            subject.close()
    report(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
