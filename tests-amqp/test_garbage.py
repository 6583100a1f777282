"""Garbage on the wire: dropped, logged at a bounded rate, and the server keeps serving."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from amqptest import make_url

import polymsg
from polymsg.driver import LogLimiter

WAIT = 30.0


def _envelope(message: dict[str, Any]) -> bytes:
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


GARBAGE_REQUESTS = [
    b"\x00\xffnot json at all",
    b"[1, 2, 3]",
    json.dumps({"oslo.version": "9.0", "oslo.message": "{}"}).encode(),
    json.dumps({"oslo.version": "2.0", "oslo.message": "{nope"}).encode(),
    _envelope({"args": {}}),
    _envelope({"method": "echo", "args": [1]}),
    _envelope({"method": "echo", "args": {"value": 1}, "_msg_id": "abc"}),  # no reply queue
    b"x" * (5 * 1024 * 1024),
]


class Echo:
    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.noted = threading.Event()

    def echo(self, ctxt: Any, value: Any) -> Any:
        self.seen.append(value)
        return value

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.append(event_type)
        self.noted.set()


def _limiters(scheme: str) -> tuple[LogLimiter, LogLimiter]:
    """The limiters of malformed deliveries and malformed replies (core's, for both
    drivers: ``scheme`` only says which driver's traffic they count now)."""
    from polymsg._amqp_incoming import GARBAGE as deliveries
    from polymsg._amqp_replies import GARBAGE as replies
    return deliveries, replies


@pytest.fixture
def transport(scheme: str, vhost: str) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(make_url(scheme, vhost)) as transport:
        yield transport


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]


def test_garbage_requests_are_dropped_and_the_server_keeps_serving(
        scheme: str, transport: polymsg.Transport, raw: Any, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    deliveries, _ = _limiters(scheme)
    before = deliveries.total
    endpoint = Echo()
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [endpoint])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    with server:
        for body in GARBAGE_REQUESTS:
            raw.basic_publish("", topic, body)
        raw.basic_publish("", f"{topic}.s1", b"garbage for the server's own queue")
        # The call goes into the queue behind the garbage: all of it is read by then.
        assert client.call({}, "echo", value="after the garbage") == "after the garbage"
        assert client.prepare(server="s1").call({}, "echo", value="direct") == "direct"
    assert deliveries.total - before == len(GARBAGE_REQUESTS) + 1
    assert endpoint.seen == ["after the garbage", "direct"]
    assert all(len(line) < 1000 for line in _lines(caplog))  # 5 MB bodies are cut
    assert raw.queue_declare(topic, passive=True).method.message_count == 0


def test_garbage_notifications_are_dropped_and_the_listener_keeps_listening(
        scheme: str, transport: polymsg.Transport, raw: Any, topic: str) -> None:
    deliveries, _ = _limiters(scheme)
    before = deliveries.total
    endpoint = Echo()
    listener = polymsg.get_notification_listener(transport, [polymsg.Target(topic=topic)],
                                                 [endpoint])
    with listener:
        queue = f"{topic}.info"
        raw.basic_publish("", queue, b"{not json")
        raw.basic_publish("", queue, _envelope({"publisher_id": "p", "event_type": "e",
                                                "priority": "INFO"}))  # no payload
        raw.basic_publish("", queue, _envelope({"publisher_id": "p", "event_type": "e",
                                                "payload": {}}))  # no priority
        polymsg.Notifier(transport, "garbage.test", topics=(topic,)).info({}, "valid", {})
        assert endpoint.noted.wait(WAIT)  # the garbage went first: all of it is read by then
    assert endpoint.seen == ["valid"]
    assert deliveries.total - before == 3


def test_garbage_replies_do_not_disturb_callers(scheme: str, transport: polymsg.Transport,
                                                raw: Any, topic: str) -> None:
    _, replies = _limiters(scheme)
    before = replies.total
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    with server:
        assert client.call({}, "echo", value=1) == 1
        driver = transport._driver  # type: ignore[attr-defined]
        reply_queue = driver._replies.queue
        raw.basic_publish("", reply_queue, b"not a reply")
        raw.basic_publish("", reply_queue, _envelope({"result": 1, "ending": True,
                                                      "_msg_id": "nobody-waits"}))
        assert client.call({}, "echo", value=2) == 2
    assert replies.total - before == 1


def test_a_flood_of_garbage_logs_a_bounded_number_of_lines(
        scheme: str, transport: polymsg.Transport, raw: Any, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    flood = 20_000
    deliveries, _ = _limiters(scheme)
    before = deliveries.total
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=120.0)
    started = time.monotonic()
    with server:
        for i in range(flood):
            raw.basic_publish("", topic, b"garbage %d " % i + b"x" * 300)
        assert client.call({}, "echo", value="still serving") == "still serving"
    elapsed = time.monotonic() - started
    assert deliveries.total - before == flood
    intervals = elapsed / deliveries.interval + 1
    bound = (deliveries.burst + 1) * intervals + 1
    lines = _lines(caplog)
    assert len(lines) <= bound, f"{len(lines)} lines for {flood} messages in {elapsed:.0f} s"
