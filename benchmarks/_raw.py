"""Reference points without polymsg: raw pika, raw pyzmq and a thread ping-pong.

Each shows what the client library (or the interpreter) can do at best, with
the same payloads and the same two-process layout as the polymsg figures:

* raw pika RPC: a request to a queue, the reply over RabbitMQ's direct
  reply-to (``amq.rabbitmq.reply-to``), a ``BlockingConnection`` per side;
* raw pika publish/consume: unconfirmed publishes, an auto-ack consumer;
* raw pyzmq: DEALER to an echoing ROUTER; PUSH to a PULL;
* thread ping-pong: two threads of one process handing a token through two
  ``SimpleQueue`` s (what any in-process request/response costs), once free
  to use every core and once pinned to one.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import queue
import threading
import time
from typing import Any

import polymsg
from benchmarks._child import Child, emit, on_stdin_closed
from benchmarks._measure import BenchError, call_figures, payload, timed_loop

__all__ = ["RawPika", "RawZmq", "amqp_params", "delete_queues", "pingpong"]

#: Seconds a raw request may wait for its reply.
REPLY_TIMEOUT = 30.0
#: RabbitMQ's pseudo-queue for direct replies.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
END = b"end"


def amqp_params(url: str) -> dict[str, Any]:
    """Connection arguments for pika from a ``rabbit://`` URL (first host)."""
    parsed = polymsg.TransportURL.parse(url)
    if not parsed.hosts:
        raise polymsg.InvalidTransportURL(f"{parsed} names no RabbitMQ host")
    host = parsed.hosts[0]
    return {"host": host.hostname or "127.0.0.1", "port": host.port or 5672,
            "username": host.username or "guest", "password": host.password or "guest",
            "virtual_host": parsed.virtual_host or "/"}


def delete_queues(url: str, names: list[str]) -> None:
    """Delete the queues ``names`` (those missing included) on the RabbitMQ at ``url``."""
    conn = _pika_connect(amqp_params(url))
    try:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        conn.close()


def _pika_connect(params: dict[str, Any]) -> Any:
    pika = importlib.import_module("pika")
    credentials = pika.PlainCredentials(params["username"], params["password"])
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=params["host"], port=params["port"], virtual_host=params["virtual_host"],
        credentials=credentials, heartbeat=0))


class RawPika:
    """Raw pika client in this process; an RPC server and a consumer in children."""

    def __init__(self, url: str) -> None:
        self._params = amqp_params(url)
        tag = os.urandom(5).hex()
        self._rpc_queue, self._consume_queue = f"bench-raw-rpc-{tag}", f"bench-raw-{tag}"
        self._children: list[Child] = []
        self._pika = importlib.import_module("pika")
        self._conn = _pika_connect(self._params)
        self._channel = self._conn.channel()
        self._reply: bytes | None = None
        self._confirming: Any = None
        self._ids = itertools.count()
        self._channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)

    def _on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._reply = body

    def _child(self, role: str, queue_name: str) -> Child:
        child = Child(role, amqp=self._params, queue_name=queue_name)
        self._children.append(child)
        return child

    def calls(self, size: int, seconds: float, suffix: str = "") -> dict[str, float]:
        """Sequential direct reply-to round trips."""
        if not any(c.role == "pika-rpc-server" for c in self._children):
            self._child("pika-rpc-server", self._rpc_queue)
        body = payload(size).encode()

        def once() -> None:
            self._reply = None
            props = self._pika.BasicProperties(reply_to=DIRECT_REPLY_TO,
                                               correlation_id=str(next(self._ids)))
            self._channel.basic_publish("", self._rpc_queue, body, props)
            deadline = time.monotonic() + REPLY_TIMEOUT
            while self._reply is None:
                if time.monotonic() > deadline:
                    raise BenchError(f"no raw pika reply within {REPLY_TIMEOUT:g} s")
                self._conn.process_data_events(time_limit=1)
            if self._reply != body:
                raise BenchError("raw pika reply differs from the request")

        once()
        return call_figures(*timed_loop(seconds, once), suffix=suffix)

    def casts(self, size: int, seconds: float, max_count: int = 1 << 62,
              suffix: str = "", channel: Any = None) -> dict[str, float]:
        """Unconfirmed publishes for ``seconds``, timed until the consumer had the last."""
        channel = channel or self._channel
        consumer = next((c for c in self._children if c.role == "pika-consumer"), None)
        consumer = consumer or self._child("pika-consumer", self._consume_queue)
        body = payload(size).encode()

        def once() -> None:
            channel.basic_publish("", self._consume_queue, body)

        sent, elapsed = timed_loop(seconds, once, max_count)
        started = time.perf_counter() - elapsed
        channel.basic_publish("", self._consume_queue, END)
        got = consumer.expect("done", 180)
        if got["received"] != len(sent):
            raise BenchError(f"raw pika consumer got {got['received']} of {len(sent)}")
        return {f"casts{suffix}": len(sent) / (time.perf_counter() - started)}

    def confirmed_casts(self, size: int, seconds: float) -> dict[str, float]:
        """Publishes each waiting for the broker's confirm (on a channel of their own),
        timed until the consumer had the last: what a broker-confirmed cast from one
        thread can reach at best."""
        if self._confirming is None:
            self._confirming = self._conn.channel()
            self._confirming.confirm_delivery()
        figures = self.casts(size, seconds, channel=self._confirming)
        return {"casts_confirmed": figures["casts"]}

    def close(self) -> None:
        """Close the connection and stop the children."""
        with contextlib.suppress(Exception):  # a broken connection is closed enough
            self._conn.close()
        for child in self._children:
            child.close()


class RawZmq:
    """Raw pyzmq sockets here; an echoing ROUTER and a counting PULL in children."""

    def __init__(self) -> None:
        self._zmq = importlib.import_module("zmq")
        self._ctx = self._zmq.Context()
        self._children: list[Child] = []
        self._sockets: dict[str, Any] = {}

    def _socket(self, role: str, kind: int) -> tuple[Child, Any]:
        if role not in self._sockets:
            child = Child(role)
            self._children.append(child)
            sock = self._ctx.socket(kind)
            sock.linger = 0
            sock.connect(f"tcp://127.0.0.1:{child.ready['port']}")
            self._sockets[role] = (child, sock)
        result: tuple[Child, Any] = self._sockets[role]
        return result

    def calls(self, size: int, seconds: float, suffix: str = "") -> dict[str, float]:
        """Sequential DEALER -> ROUTER -> DEALER round trips."""
        _, sock = self._socket("zmq-router", self._zmq.DEALER)
        sock.rcvtimeo = int(REPLY_TIMEOUT * 1000)
        body = payload(size).encode()

        def once() -> None:
            sock.send(body, copy=False)
            if sock.recv(copy=False).bytes != body:
                raise BenchError("raw pyzmq reply differs from the request")

        once()
        return call_figures(*timed_loop(seconds, once), suffix=suffix)

    def casts(self, size: int, seconds: float, max_count: int = 1 << 62,
              suffix: str = "") -> dict[str, float]:
        """PUSH for ``seconds``, timed until the PULL side had the last message."""
        child, sock = self._socket("zmq-pull", self._zmq.PUSH)
        body = payload(size).encode()
        sent, elapsed = timed_loop(seconds, lambda: sock.send(body, copy=False), max_count)
        started = time.perf_counter() - elapsed
        sock.send(END)
        got = child.expect("done", 180)
        if got["received"] != len(sent):
            raise BenchError(f"raw pyzmq PULL got {got['received']} of {len(sent)}")
        return {f"casts{suffix}": len(sent) / (time.perf_counter() - started)}

    def close(self) -> None:
        """Close the sockets and stop the children."""
        for _, sock in self._sockets.values():
            sock.close()
        self._ctx.term()
        for child in self._children:
            child.close()


def pingpong(seconds: float, pin: bool) -> dict[str, float]:
    """Thread ping-pong round trips in a child (pinned to one core when ``pin``)."""
    with Child("pingpong", seconds=seconds, pin=pin) as child:
        figures: dict[str, float] = child.expect("result", seconds + 60)["figures"]
        return figures


# -- the child side ------------------------------------------------------------------------

def pingpong_child(seconds: float, pin: bool) -> None:
    """Child role: two threads handing a token back and forth for ``seconds``."""
    if pin:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    ping: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    pong: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def echo() -> None:
        while (token := ping.get()) is not None:
            pong.put(token)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    emit("ready")

    def once() -> None:
        ping.put(1)
        pong.get()

    timed_loop(min(0.2, seconds), once)  # warm up
    latencies, elapsed = timed_loop(seconds, once)
    ping.put(None)
    thread.join()
    emit("result", figures=call_figures(latencies, elapsed))


def _consume(amqp: dict[str, Any], queue_name: str, on_body: Any, auto_ack: bool) -> None:
    conn = _pika_connect(amqp)
    channel = conn.channel()
    channel.queue_declare(queue_name, auto_delete=True)
    channel.basic_qos(prefetch_count=64)
    channel.basic_consume(queue_name, on_body, auto_ack=auto_ack)
    emit("ready")
    on_stdin_closed(lambda: conn.add_callback_threadsafe(channel.stop_consuming))
    channel.start_consuming()
    conn.close()


def pika_rpc_server(amqp: dict[str, Any], queue_name: str) -> None:
    """Child role: answer each request on ``queue`` to its reply-to with the same body."""
    pika = importlib.import_module("pika")

    def on_body(channel: Any, method: Any, props: Any, body: bytes) -> None:
        channel.basic_publish("", props.reply_to, body,
                              pika.BasicProperties(correlation_id=props.correlation_id))
        channel.basic_ack(method.delivery_tag)

    _consume(amqp, queue_name, on_body, auto_ack=False)


def pika_consumer(amqp: dict[str, Any], queue_name: str) -> None:
    """Child role: count messages on ``queue``; on ``end`` report the count and restart."""
    count = 0

    def on_body(channel: Any, method: Any, props: Any, body: bytes) -> None:
        nonlocal count
        if body == END:
            emit("done", received=count)
            count = 0
        else:
            count += 1

    _consume(amqp, queue_name, on_body, auto_ack=True)


def _zmq_loop(kind: str, handle: Any) -> None:
    zmq = importlib.import_module("zmq")
    ctx = zmq.Context()
    sock = ctx.socket(getattr(zmq, kind))
    sock.linger = 0
    sock.rcvtimeo = 200  # wakes the loop to notice the parent closing stdin
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    on_stdin_closed(stop.set)
    emit("ready", port=port)
    while not stop.is_set():
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.Again:
            continue
        handle(sock, frames)
    sock.close()
    ctx.term()


def zmq_router() -> None:
    """Child role: a ROUTER sending every message back to its sender."""
    _zmq_loop("ROUTER", lambda sock, frames: sock.send_multipart(frames, copy=False))


def zmq_pull() -> None:
    """Child role: a PULL counting messages; on ``end`` it reports the count and restarts."""
    count = 0

    def handle(sock: Any, frames: list[Any]) -> None:
        nonlocal count
        if frames[-1].bytes == END:
            emit("done", received=count)
            count = 0
        else:
            count += 1

    _zmq_loop("PULL", handle)
