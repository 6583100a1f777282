"""The py-amqp adapter against core's AMQP port, with the real RabbitMQ.

Every call into the adapter runs on its I/O thread (``Harness.call``), as the
engine's do; every callback records what it got and whether it ran while a
call into the adapter was still in progress (never allowed).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombutest import rabbitmqctl
from polymsg_kombu._adapter import KombuAdapter
from polymsg_kombu._errors import Closed

import polymsg
from polymsg import amqp
from polymsg._amqp_port import Delivered, Returned
from polymsg.driver import DriverOptions

WAIT = 15.0


def spec_of(url: str, **options: Any) -> amqp.ConnectionSpec:
    return amqp.ConnectionSpec.from_url(polymsg.TransportURL.parse(url), DriverOptions(options))


class Harness:
    """One adapter, one loop, and a record of every callback."""

    def __init__(self) -> None:
        self.adapter = KombuAdapter()
        self.loop = self.adapter.loop("polymsg-test-adapter")
        self.events: list[tuple[Any, ...]] = []
        self.reentrant: list[tuple[Any, ...]] = []
        self._inside = 0
        self._cond = threading.Condition()

    def note(self, *event: Any) -> None:
        if self._inside:
            self.reentrant.append(event)
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def recorder(self, kind: str) -> Callable[..., None]:
        return lambda *args: self.note(kind, *args)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the I/O thread, as the engine calls the adapter."""
        def inside() -> Any:
            self._inside += 1
            try:
                return fn()
            finally:
                self._inside -= 1
        return self.loop.run(inside, WAIT)

    def wait(self, kind: str, count: int = 1, timeout: float = WAIT) -> list[tuple[Any, ...]]:
        """The first ``count`` events of ``kind``, waiting for them."""
        def found() -> list[tuple[Any, ...]]:
            return [e for e in self.events if e[0] == kind]
        with self._cond:
            assert self._cond.wait_for(lambda: len(found()) >= count, timeout), \
                f"no {count} {kind!r} events in {timeout}s: {self.events[-5:]}"
            return found()[:count]

    def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), f"still not so after {timeout}s"

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self._cond:
            return [e for e in self.events if e[0] == kind]

    def connection_events(self) -> Any:
        """A :class:`~polymsg._amqp_port.ConnectionEvents` recording what it hears."""
        return types.SimpleNamespace(
            connection_opened=self.recorder("open"), connection_failed=self.recorder("error"),
            connection_closed=self.recorder("closed"),
            connection_blocked=self.recorder("blocked"),
            connection_unblocked=self.recorder("unblocked"))

    def connect(self, spec: amqp.ConnectionSpec, endpoint: amqp.Endpoint | None = None) -> Any:
        return self.call(lambda: self.adapter.connect(
            self.loop, spec, endpoint or spec.endpoints[0], "polymsg-test",
            self.connection_events()))

    def open(self, spec: amqp.ConnectionSpec) -> Any:
        connection = self.connect(spec)
        assert self.wait("open")[0][1] is connection
        return connection

    def channel(self, connection: Any, confirm: bool = False) -> Any:
        before = len(self.of("channel"))
        channel = self.call(lambda: connection.channel(self.recorder("channel")))
        self.call(lambda: channel.on_close(self.recorder("channel-closed")))
        assert self.wait("channel", before + 1)[-1][1] is channel
        if confirm:
            self.call(lambda: channel.confirm(self.recorder("confirm"),
                                              self.recorder("confirming")))
            self.wait("confirming")
        return channel

    def declare_queue(self, channel: Any, name: str, **kwargs: Any) -> None:
        before = len(self.of("declared"))
        # durable: RabbitMQ 4.3 denies transient non-exclusive queues
        options = {"passive": False, "durable": True, "auto_delete": True, "arguments": {}}
        options.update(kwargs)
        self.call(lambda: channel.declare_queue(
            name, done=lambda: self.note("declared", name), **options))
        self.wait("declared", before + 1)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()
    assert not harness.reentrant, f"callbacks ran inside a call: {harness.reentrant[:3]}"


@pytest.fixture
def spec(rabbit_url: str) -> amqp.ConnectionSpec:
    return spec_of(rabbit_url)


@pytest.fixture
def queue() -> str:
    return f"adapter-{uuid.uuid4().hex[:12]}"


def confirmed(harness: Harness) -> set[int]:
    """Delivery tags acknowledged so far (multiple acks expanded)."""
    tags: set[int] = set()
    for _, tag, multiple, nack in harness.of("confirm"):
        assert not nack
        tags.update(range(1, tag + 1) if multiple else (tag,))
    return tags


# -- connections ------------------------------------------------------------------------

def test_open_and_close(harness: Harness, spec: amqp.ConnectionSpec) -> None:
    connection = harness.open(spec)
    assert connection.is_open and not connection.is_closed
    assert connection.server_properties["product"] == "RabbitMQ"
    harness.call(connection.close)
    assert harness.wait("closed")[0][1] is None
    assert connection.is_closed
    harness.loop.close()
    assert len(harness.of("closed")) == 1 and not harness.of("error")


def test_a_port_nobody_listens_on_fails_fast(harness: Harness, spec: amqp.ConnectionSpec) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nowhere = dataclasses.replace(spec.endpoints[0], hostname="127.0.0.1", port=port)
    started = time.monotonic()
    harness.connect(spec, nowhere)
    error = harness.wait("error", timeout=5)[0][1]
    assert time.monotonic() - started < 3
    failure = harness.adapter.failure_of(error, nowhere.label)
    assert not failure.permanent and "refused" in failure.reason
    assert not harness.of("open") and not harness.of("closed")


def test_a_wrong_password_is_a_permanent_failure(harness: Harness,
                                                 spec: amqp.ConnectionSpec) -> None:
    wrong = dataclasses.replace(spec.endpoints[0], password="not-the-password-42")
    started = time.monotonic()
    harness.connect(spec, wrong)
    error = harness.wait("error")[0][1]
    assert time.monotonic() - started < 5
    failure = harness.adapter.failure_of(error, wrong.label)
    assert failure.permanent and "ACCESS_REFUSED" in failure.reason
    assert "not-the-password-42" not in harness.adapter.describe(error)
    assert harness.adapter.reply_code(error) == 403


def test_closing_while_connecting_reports_an_error_once(harness: Harness,
                                                       spec: amqp.ConnectionSpec) -> None:
    connection = harness.call(lambda: (c := harness.adapter.connect(
        harness.loop, spec, spec.endpoints[0], "polymsg-test", harness.connection_events()),
        c.close(), c)[-1])
    harness.wait("error")
    assert connection.is_closed
    assert harness.call(lambda: connection.is_closed)  # the opened connection was dropped
    assert not harness.of("open")


def test_opening_does_not_hold_up_the_loop(harness: Harness, spec: amqp.ConnectionSpec) -> None:
    # A server that accepts and never speaks, as a paused broker does.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = dataclasses.replace(spec.endpoints[0], hostname="127.0.0.1",
                                   port=silent.getsockname()[1])
        started = time.monotonic()
        harness.connect(dataclasses.replace(spec, connect_timeout=2.0), mute)
        assert harness.call(lambda: "served") == "served"
        assert time.monotonic() - started < 1.5 and not harness.of("error")
        error = harness.wait("error", timeout=10)[0][1]
    assert 1.5 < time.monotonic() - started < 8
    assert not harness.adapter.failure_of(error, mute.label).permanent


def test_the_broker_closing_the_connection_closes_channels_then_connection(
        harness: Harness, vhost: str | None, rabbit_url: str) -> None:
    if vhost is None:
        pytest.skip("needs a virtual host of the session's own")
    connection = harness.open(spec_of(rabbit_url))
    harness.channel(connection)
    rabbitmqctl("close_all_connections", "--vhost", vhost, "polymsg test: broker restart")
    error = harness.wait("closed")[0][1]
    assert harness.adapter.reply_code(error) == 320
    assert not harness.adapter.failure_of(error, "h:1").permanent
    kinds = [e[0] for e in harness.events]
    assert kinds.index("channel-closed") < kinds.index("closed")
    assert connection.is_closed and len(harness.of("closed")) == 1


def test_heartbeats_keep_an_idle_connection(harness: Harness, rabbit_url: str,
                                            queue: str) -> None:
    # The broker drops a connection that misses two 2 s heartbeats; waiting
    # is the point of this test.
    connection = harness.open(spec_of(rabbit_url, heartbeat_timeout_threshold=2))
    channel = harness.channel(connection, confirm=True)
    closed = threading.Event()
    harness.call(lambda: channel.on_close(lambda *args: closed.set()))
    assert not closed.wait(7.0), "the connection was dropped while idle"
    assert connection.is_open
    harness.declare_queue(channel, queue)
    harness.call(lambda: channel.publish("", queue, b"x", {}, False))
    harness.wait("confirm")


# -- channels ----------------------------------------------------------------------------

def test_publish_with_confirms(harness: Harness, spec: amqp.ConnectionSpec, queue: str) -> None:
    connection = harness.open(spec)
    channel = harness.channel(connection, confirm=True)
    harness.declare_queue(channel, queue)
    exchange = f"{queue}-x"
    harness.call(lambda: channel.declare_exchange(
        exchange, "topic", passive=False, durable=False, auto_delete=True,
        done=harness.recorder("exchange")))
    harness.wait("exchange")
    harness.call(lambda: channel.bind(queue, exchange, "a.*", harness.recorder("bound")))
    harness.wait("bound")
    count = 2000

    def burst() -> None:
        for n in range(count):
            channel.publish(exchange, "a.b", b"%d" % n, {"delivery_mode": 2}, False)

    harness.call(burst)
    harness.until(lambda: confirmed(harness) == set(range(1, count + 1)))
    assert any(multiple for _, _, multiple, _ in harness.of("confirm")), \
        "the broker acknowledged a burst of publishes one by one"


def test_a_refused_declaration_closes_the_channel_not_the_connection(
        harness: Harness, spec: amqp.ConnectionSpec, queue: str) -> None:
    connection = harness.open(spec)
    channel = harness.channel(connection)
    harness.declare_queue(channel, queue)
    harness.call(lambda: channel.declare_queue(
        queue, passive=False, durable=True, auto_delete=False, arguments={},
        done=harness.recorder("redeclared")))  # was auto-delete
    _, closed, error = harness.wait("channel-closed")[0]
    assert closed is channel and not channel.is_open
    assert harness.adapter.reply_code(error) == 406
    assert "PRECONDITION_FAILED" in harness.adapter.describe(error)
    assert not harness.of("redeclared")
    assert connection.is_open and not harness.of("closed")
    again = harness.channel(connection)  # the connection still works
    harness.declare_queue(again, f"{queue}-2")
    with pytest.raises(Closed):
        harness.call(lambda: channel.publish("", queue, b"x", {}, False))
    assert len(harness.of("channel-closed")) == 1


def test_a_refused_declaration_on_another_channel_during_a_step(
        harness: Harness, spec: amqp.ConnectionSpec, queue: str) -> None:
    connection = harness.open(spec)
    first, second = harness.channel(connection), harness.channel(connection)
    harness.declare_queue(first, queue)

    def both() -> None:  # the refusal of the first arrives while the second waits
        first.declare_queue(queue, passive=False, durable=True, auto_delete=False,
                            arguments={}, done=harness.recorder("refused-done"))
        second.declare_queue(f"{queue}-ok", passive=False, durable=True, auto_delete=True,
                             arguments={}, done=harness.recorder("ok-done"))

    harness.call(both)
    harness.wait("ok-done")
    closed = harness.wait("channel-closed")[0]
    assert closed[1] is first and harness.adapter.reply_code(closed[2]) == 406
    assert second.is_open and not harness.of("refused-done")


def test_a_mandatory_message_nobody_takes_is_returned(
        harness: Harness, spec: amqp.ConnectionSpec, queue: str) -> None:
    connection = harness.open(spec)
    channel = harness.channel(connection, confirm=True)
    harness.call(lambda: channel.on_return(harness.recorder("returned")))
    harness.call(lambda: channel.publish("", f"{queue}-nobody", b"lost",
                                         {"headers": {"k": "v"}, "message_id": "m1"}, True))
    returned: Returned = harness.wait("returned")[0][1]
    assert (returned.reply_code, returned.routing_key, returned.body) == \
        (312, f"{queue}-nobody", b"lost")
    assert returned.properties["headers"] == {"k": "v"}
    assert returned.properties["message_id"] == "m1"
    harness.wait("confirm")
    kinds = [e[0] for e in harness.events]
    assert kinds.index("returned") < kinds.index("confirm")


def test_consume_ack_and_reject(harness: Harness, spec: amqp.ConnectionSpec, queue: str) -> None:
    connection = harness.open(spec)
    channel = harness.channel(connection)
    harness.declare_queue(channel, queue, auto_delete=False)  # outlives its consumer
    harness.call(lambda: channel.qos(10, harness.recorder("qos")))
    harness.wait("qos")
    tag = harness.call(lambda: channel.consume(
        queue, lambda ch, message: harness.note("message", message), auto_ack=False,
        arguments=None, done=harness.recorder("consuming")))
    assert harness.wait("consuming")[0][1] == tag
    properties = {"headers": {"n": 1, "s": "é"}, "content_type": "application/json",
                  "correlation_id": "c1", "delivery_mode": 2}
    harness.call(lambda: channel.publish("", queue, b"\x00body", properties, False))
    first: Delivered = harness.wait("message")[0][1]
    assert (first.consumer_tag, first.body, first.redelivered) == (tag, b"\x00body", False)
    assert first.properties["headers"] == {"n": 1, "s": "é"}
    assert first.properties["correlation_id"] == "c1"
    assert first.routing_key == queue
    harness.call(lambda: channel.reject(first.delivery_tag, True))
    again: Delivered = harness.wait("message", 2)[1][1]
    assert again.redelivered and again.body == b"\x00body"
    harness.call(lambda: channel.ack(again.delivery_tag))
    harness.call(lambda: channel.cancel(tag))
    harness.call(lambda: channel.publish("", queue, b"after", {}, False))
    harness.call(lambda: channel.declare_queue(
        queue, passive=True, durable=True, auto_delete=False, arguments={},
        done=harness.recorder("still-there")))
    harness.wait("still-there")
    harness.call(lambda: channel.delete_queue(queue, harness.recorder("deleted")))
    harness.wait("deleted")
    assert len(harness.of("message")) == 2  # nothing delivered after the cancel


def test_deliveries_during_steps_wait_for_the_step_and_keep_their_order(
        harness: Harness, spec: amqp.ConnectionSpec, queue: str) -> None:
    connection = harness.open(spec)
    consumer, publisher = harness.channel(connection), harness.channel(connection)
    harness.declare_queue(consumer, queue)
    harness.call(lambda: consumer.consume(
        queue, lambda ch, message: harness.note("message", message), auto_ack=True,
        arguments=None, done=harness.recorder("consuming")))
    harness.wait("consuming")
    count = 300

    def publish_and_declare() -> None:
        for n in range(count):
            publisher.publish("", queue, b"%d" % n, {}, False)
            if n % 30 == 0:  # steps that wait while deliveries arrive
                publisher.declare_queue(f"{queue}-{n}", passive=False, durable=True,
                                        auto_delete=True, arguments={}, done=lambda: None)

    harness.call(publish_and_declare)
    bodies = [int(e[1].body) for e in harness.wait("message", count)]
    assert bodies == list(range(count))
    for n in range(0, count, 30):
        harness.call(lambda n=n: publisher.delete_queue(f"{queue}-{n}", lambda: None))


def test_a_channel_closed_by_polymsg_reports_once(harness: Harness,
                                                  spec: amqp.ConnectionSpec) -> None:
    connection = harness.open(spec)
    channel = harness.channel(connection)
    harness.call(channel.close)
    harness.call(channel.close)
    _, closed, error = harness.wait("channel-closed")[0]
    assert closed is channel and harness.adapter.reply_code(error) == 200
    harness.call(connection.close)
    harness.wait("closed")
    assert len(harness.of("channel-closed")) == 1


def test_tls_settings_reach_py_amqp(spec: amqp.ConnectionSpec) -> None:
    from polymsg_kombu._options import py_amqp_kwargs
    tls = dataclasses.replace(spec, tls=amqp.TLSSpec(ca_file="/ca.pem"))
    kwargs = py_amqp_kwargs(tls, dataclasses.replace(spec.endpoints[0], hostname="::1"), "n")
    assert kwargs["host"].startswith("[::1]:")
    assert kwargs["ssl"]["ca_certs"] == "/ca.pem"
    assert kwargs["ssl"]["server_hostname"] == "::1"
    assert kwargs["client_properties"]["connection_name"] == "n"


def test_the_loop_runs_timers_in_order_and_refuses_work_once_closed() -> None:
    from polymsg._amqp_selector import SelectorLoop
    loop, ran = SelectorLoop("polymsg-test-loop"), []
    done = threading.Event()

    def schedule() -> None:
        loop.call_later(0.2, lambda: (ran.append("late"), done.set()))
        loop.cancel(loop.call_later(0.05, lambda: ran.append("cancelled")))
        loop.call_later(0.0, lambda: ran.append("soon"))
        loop.post(lambda: ran.append("posted"))

    loop.run(schedule, WAIT)
    assert done.wait(WAIT) and ran == ["posted", "soon", "late"]
    assert loop.run(lambda: loop.in_loop(), WAIT) and not loop.in_loop()
    loop.close()
    loop.close()
    with pytest.raises(polymsg.MessageDeliveryFailure):
        loop.submit(lambda: None)
