"""rabbit+pika side by side with oslo.messaging, rabbit+kombu and raw pika, in one run.

    python benchmarks/bench_pika.py [--url rabbit://guest:guest@127.0.0.1:5673/]
                                    [--calls 1000] [--casts 5000] [--threads 16]
                                    [--rounds 3] [--only oslo,polymsg-kombu,polymsg-pika,raw-pika]
                                    [--json PATH]

Every library gets an RPC server in a child process (client and server do not
share an interpreter lock, as in production). Then, from this process, it
measures per library:

* sequential calls/s: one thread, call after call;
* N-thread calls/s: ``--threads`` threads sharing one client;
* casts/s end to end: one thread casts, then a call waits until the server
  has executed every cast; the rate counts from the first cast to that
  call's return (polymsg casts are broker-confirmed, oslo's are not);
* N-thread casts/s end to end: the same with ``--threads`` casting threads.

The libraries take turns within each round, in a rotating order, and the
figure reported is each one's median over ``--rounds``: on a shared machine
the load drifts, and interleaving spreads the drift over all of them.

``raw-pika`` is the floor the driver is measured against: plain pika
``BlockingConnection`` code with RabbitMQ's direct reply-to for calls, one
connection per thread, and publishes waiting for each confirm, with none of
polymsg's API, serialization, envelope or dispatch. The URL defaults to
``$POLYMSG_TEST_RABBIT_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LIBRARIES = ("oslo", "polymsg-kombu", "polymsg-pika", "raw-pika")
SCHEMES = {"polymsg-kombu": "rabbit+kombu", "polymsg-pika": "rabbit+pika"}
WAIT = 120.0


# -- servers (child processes) -------------------------------------------------------

class Endpoint:
    """Served by the oslo and polymsg servers: an echo, and a cast counter to wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def echo(self, ctxt: Any, x: Any) -> Any:
        return x

    def tick(self, ctxt: Any) -> None:
        with self._cond:
            self._count += 1
            if self._count % 100 == 0:
                self._cond.notify_all()

    def reset(self, ctxt: Any) -> int:
        with self._cond:
            self._count = 0
        return 0

    def count(self, ctxt: Any, n: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._count >= n, timeout)
            return self._count


def oslo_conf() -> Any:
    """A private ConfigOpts oslo.messaging 18 runs on (it registers its tracing and
    metrics options on the global CONF only)."""
    from oslo_config import cfg
    from oslo_messaging._metrics import client as metrics
    from oslo_messaging._tracing import client as tracing

    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    return conf


def serve(library: str, url: str, topic: str) -> None:
    """Run ``library``'s server on ``topic`` until stdin closes."""
    if library == "raw-pika":
        serve_raw(url, topic)
        return
    if library == "oslo":
        import warnings

        import oslo_messaging as om

        transport: Any = om.get_rpc_transport(oslo_conf(), url=url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server: Any = om.get_rpc_server(transport, om.Target(topic=topic, server="bench"),
                                            [Endpoint()], executor="threading")
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


def raw_parameters(url: str) -> Any:
    import pika

    rest = url.split("://", 1)[1]
    creds, _, hostpart = rest.rpartition("@")
    user, _, password = creds.partition(":")
    hostport, _, vhost = hostpart.partition("/")
    host, _, port = hostport.partition(":")
    # No heartbeats: a BlockingConnection only answers them while it is used,
    # and the raw clients of other threads sit idle while other libraries run.
    return pika.ConnectionParameters(host or "127.0.0.1", int(port or 5672), vhost or "/",
                                     pika.PlainCredentials(user or "guest", password or "guest"),
                                     heartbeat=0)


def serve_raw(url: str, topic: str) -> None:
    """The raw pika server: echo replies to ``reply_to``; ``tick`` counts and the
    message after the N-th tick of a ``reset`` is answered when N arrived."""
    import pika

    connection = pika.BlockingConnection(raw_parameters(url))
    channel = connection.channel()
    channel.queue_declare(topic, auto_delete=True)
    channel.basic_qos(prefetch_count=64)
    state: dict[str, Any] = {"count": 0, "expect": 0, "reply_to": None}

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        kind = props.type
        if kind == "echo":
            ch.basic_publish("", props.reply_to, body,
                             pika.BasicProperties(correlation_id=props.correlation_id))
        elif kind == "reset":
            state.update(count=0, expect=int(body), reply_to=props.reply_to)
            ch.basic_publish("", props.reply_to, b"0")
        elif kind == "tick":
            state["count"] += 1
            if state["count"] == state["expect"]:
                ch.basic_publish("", state["reply_to"], b"done")
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(topic, on_message)
    print("ready", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        connection.process_data_events(time_limit=0.2)
    connection.close()


# -- clients ------------------------------------------------------------------------------

class Client:
    """call/cast/wait_for_casts with one shape for oslo and polymsg."""

    def __init__(self, library: str, url: str, topic: str) -> None:
        if library == "oslo":
            import oslo_messaging as om

            self.transport: Any = om.get_rpc_transport(oslo_conf(), url=url)
            self.client: Any = om.get_rpc_client(self.transport, om.Target(topic=topic),
                                                 timeout=WAIT)
        else:
            import polymsg

            self.transport = polymsg.get_transport(url)
            self.client = polymsg.RPCClient(self.transport, polymsg.Target(topic=topic),
                                            timeout=WAIT)

    def call(self) -> None:
        self.client.call({}, "echo", x=1)

    def cast(self) -> None:
        self.client.cast({}, "tick")

    def reset(self, n: int) -> None:
        self.client.call({}, "reset")

    def wait_for_casts(self, n: int) -> None:
        executed = self.client.call({}, "count", n=n, timeout=WAIT - 20)
        if executed < n:
            raise RuntimeError(f"only {executed} of {n} casts were executed")

    def close(self) -> None:
        self.transport.cleanup()


class RawClient:
    """Plain pika: one BlockingConnection per thread (pika is not thread-safe)."""

    def __init__(self, url: str, topic: str) -> None:
        self.params = raw_parameters(url)
        self.topic = topic
        self.local = threading.local()
        self.opened: list[Any] = []
        self.lock = threading.Lock()

    def _conn(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            import pika

            conn = self.local.conn = pika.BlockingConnection(self.params)
            channel = self.local.channel = conn.channel()
            self.local.replies = []
            channel.basic_consume("amq.rabbitmq.reply-to",
                                  lambda ch, m, p, b: self.local.replies.append(b),
                                  auto_ack=True)
            self.local.confirmed = conn.channel()
            self.local.confirmed.confirm_delivery()
            with self.lock:
                self.opened.append(conn)
        return conn

    def _request(self, kind: str, body: bytes) -> bytes:
        import pika

        conn = self._conn()
        self.local.channel.basic_publish("", self.topic, body, pika.BasicProperties(
            type=kind, reply_to="amq.rabbitmq.reply-to", correlation_id="1"))
        while not self.local.replies:
            conn.process_data_events(time_limit=None)
        return bytes(self.local.replies.pop())

    def call(self) -> None:
        self._request("echo", b"1")

    def cast(self) -> None:
        import pika

        self._conn()
        self.local.confirmed.basic_publish("", self.topic, b"", pika.BasicProperties(type="tick"))

    def reset(self, n: int) -> None:
        self._request("reset", str(n).encode())

    def wait_for_casts(self, n: int) -> None:
        conn = self._conn()
        deadline = time.monotonic() + WAIT
        while not self.local.replies and time.monotonic() < deadline:
            conn.process_data_events(time_limit=1.0)
        if not self.local.replies or self.local.replies.pop() != b"done":
            raise RuntimeError(f"the raw server did not count {n} casts")

    def close(self) -> None:
        import contextlib

        import pika

        for conn in self.opened:
            with contextlib.suppress(pika.exceptions.AMQPError):
                conn.close()


# -- measuring -------------------------------------------------------------------------------

def rate(count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def in_threads(threads: int, total: int, fn: Callable[[], None]) -> None:
    def loop() -> None:
        for _ in range(total // threads):
            fn()

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(loop) for _ in range(threads)]:
            future.result()


def cast_rate(client: Any, count: int, threads: int) -> float:
    count -= count % threads
    client.reset(count)

    def run() -> None:
        in_threads(threads, count, client.cast)
        client.wait_for_casts(count)

    return rate(count, run)


def measure_once(client: Any, args: argparse.Namespace) -> dict[str, float]:
    t = args.threads
    return {
        "sequential calls/s": rate(args.calls, lambda: [client.call()
                                                        for _ in range(args.calls)] and None),
        f"{t}-thread calls/s": rate(args.calls * 2,
                                    lambda: in_threads(t, args.calls * 2, client.call)),
        "casts/s end to end": cast_rate(client, args.casts, 1),
        f"{t}-thread casts/s end to end": cast_rate(client, args.casts, t),
    }


def library_url(url: str, library: str) -> str:
    return f"{SCHEMES.get(library, 'rabbit')}://{url.split('://', 1)[1]}"


def start(library: str, url: str) -> tuple[subprocess.Popen[str], Any]:
    topic = f"bench-{library}-{uuid.uuid4().hex[:8]}"
    server = subprocess.Popen([sys.executable, __file__, "--serve", library, "--url", url,
                               "--topic", topic], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    if server.stdout is None or server.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {library} server did not start")
    client = RawClient(url, topic) if library == "raw-pika" else Client(library, url, topic)
    for _ in range(50):  # warm up: connections, declarations, reply queues
        client.call()
    return server, client


def run(libraries: list[str], url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    started = {library: start(library, library_url(url, library)) for library in libraries}
    samples: dict[str, list[dict[str, float]]] = {library: [] for library in libraries}
    try:
        for round_number in range(args.rounds):
            shift = round_number % len(libraries)
            for library in libraries[shift:] + libraries[:shift]:
                print(f"round {round_number + 1}/{args.rounds}: {library}", file=sys.stderr,
                      flush=True)
                samples[library].append(measure_once(started[library][1], args))
    finally:
        for server, client in started.values():
            client.close()
            if server.stdin is not None:
                server.stdin.close()
            server.wait(timeout=60)
    return {library: {name: statistics.median(s[name] for s in runs)
                      for name in runs[0]} for library, runs in samples.items()}


def report(results: dict[str, dict[str, float]]) -> None:
    libraries = list(results)
    names = list(next(iter(results.values())))
    print(f"{'':32s}" + "".join(f"{lib:>15s}" for lib in libraries))
    for name in names:
        print(f"{name:32s}" + "".join(f"{results[lib][name]:15,.0f}" for lib in libraries))
    pika = results.get("polymsg-pika")
    if pika is None:
        return
    for other, label in (("oslo", "polymsg-pika / oslo.messaging"),
                         ("polymsg-kombu", "polymsg-pika / polymsg-kombu"),
                         ("raw-pika", "polymsg-pika / raw pika")):
        if other in results:
            print(f"\n{label}:")
            for name in names:
                print(f"  {name:30s} {pika[name] / results[other][name]:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("POLYMSG_TEST_RABBIT_URL",
                                                        "rabbit://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--casts", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(LIBRARIES),
                        help=f"comma-separated, from {', '.join(LIBRARIES)}")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.url, args.topic)
        return
    libraries = args.only.split(",")
    unknown = sorted(set(libraries) - set(LIBRARIES))
    if unknown:
        parser.error(f"unknown library {unknown[0]!r}")
    results = run(libraries, args.url, args)
    report(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
