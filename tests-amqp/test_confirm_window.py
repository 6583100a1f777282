"""The confirm window, on both RabbitMQ drivers: casts and notifications return once
published, the driver keeps them until the broker confirms them, at most
``confirm_window`` of them at once, and ``cleanup()`` waits for those confirms.

A :class:`~proxy.Proxy` in front of the broker holds a sending connection's bytes
on demand, so "published but not yet confirmed" is a state a test can hold for as
long as it likes instead of a race it has to win. Everything here is observed from
outside the driver: what returned, what blocked, what arrived, what was logged.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest
from amqptest import FAST_RETRY, LogWaiter, base_url, make_url
from proxy import Proxy

import polymsg
from polymsg import _amqp
from polymsg.testing import Recorder

WAIT = 30.0
#: How long a test watches for something that must not happen (an absence).
ABSENCE = 1.0


class Worker:
    """An RPC endpoint and a notification endpoint recording the values they get."""

    def __init__(self) -> None:
        self.values = Recorder()

    def record(self, ctxt: Any, value: int) -> None:
        self.values.add(value)

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.values.add(payload["value"])


@pytest.fixture
def url(scheme: str, vhost: str) -> str:
    return make_url(scheme, vhost, FAST_RETRY)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """A forwarder to the test broker that can hold connections' bytes."""
    broker = base_url().hosts[0]
    forwarder = Proxy((broker.hostname or "127.0.0.1", broker.port or 5672)).start()
    try:
        yield forwarder
    finally:
        forwarder.stop()


def _through(proxy: Proxy, scheme: str, vhost: str, query: str = "") -> str:
    return make_url(scheme, vhost, f"{FAST_RETRY}{query}", host="127.0.0.1", port=proxy.port)


@pytest.fixture
def unique_ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every message id polymsg makes from now on: each cast and notification carries
    one as its unique id, a notification a uuid4 as its ``message_id`` too. The real
    generators still make them."""
    made: list[str] = []
    new_id, uuid4 = _amqp._new_id, uuid.uuid4

    def recording_new_id() -> str:
        made.append(new_id())
        return made[-1]

    def recording_uuid4() -> uuid.UUID:
        made.append(str(uuid4()))
        return uuid.UUID(made[-1])

    monkeypatch.setattr(_amqp, "_new_id", recording_new_id)
    monkeypatch.setattr(uuid, "uuid4", recording_uuid4)
    return made


def _sender(transport: polymsg.Transport, topic: str, kind: str) -> Callable[[int], None]:
    """Sends ``value`` as a cast or as a notification on ``topic``."""
    if kind == "cast":
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic))
        return lambda value: client.cast({}, "record", value=value)
    notifier = polymsg.Notifier(transport, "window.test", topics=(topic,))
    return lambda value: notifier.info({}, "window.value", {"value": value})


def _serve(transport: polymsg.Transport, topic: str, kind: str, worker: Worker) -> Any:
    if kind == "cast":
        return polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                      [worker])
    return polymsg.get_notification_listener(transport, [polymsg.Target(topic=topic)],
                                             [worker])


def _refusing_queue(raw: Any, name: str, room: int = 0) -> None:
    """A queue that takes ``room`` messages, then nothing: the broker answers every
    further publish with basic.nack. (polymsg, finding it declared with other
    arguments, warns and uses it as it is.)"""
    raw.queue_declare(name, durable=True,
                      arguments={"x-max-length": room, "x-overflow": "reject-publish"})


@pytest.mark.parametrize("kind", ["cast", "notification"])
def test_a_burst_then_cleanup_delivers_every_message_once(
        url: str, topic: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    count = 2000
    worker = Worker()
    with polymsg.get_transport(url) as receiving, _serve(receiving, topic, kind, worker):
        sending = polymsg.get_transport(url)
        send = _sender(sending, topic, kind)
        for value in range(count):
            send(value)
        sending.cleanup()  # waits for the last confirms
        executed = worker.values.wait_for_count(count, WAIT)
    # No connection was lost, so nothing was published twice: exactly once each.
    assert sorted(executed) == list(range(count))
    complaints = [r.getMessage() for r in caplog.records
                  if r.name.startswith("polymsg") and r.levelno >= logging.WARNING]
    assert complaints == []


def test_cast_returns_before_its_confirm_and_cleanup_waits_for_it(
        scheme: str, vhost: str, url: str, proxy: Proxy, topic: str,
        logged: Callable[[str], LogWaiter]) -> None:
    unconfirmed = logged("(?i)unconfirmed|not confirmed")
    sending = polymsg.get_transport(_through(proxy, scheme, vhost))
    send = _sender(sending, topic, "cast")
    send(-1)  # connected, the topic's queue declared
    proxy.hold()  # from here the broker sees nothing and confirms nothing
    sent = ThreadPoolExecutor(1).submit(lambda: [send(value) for value in range(100)])
    try:
        sent.result(WAIT)  # returned: published on a live channel, confirms pending
    finally:
        if not sent.done():
            proxy.release()
    cleaned = threading.Event()
    cleaner = threading.Thread(target=lambda: (sending.cleanup(), cleaned.set()))
    cleaner.start()
    try:
        assert not cleaned.wait(ABSENCE), "cleanup() returned before the casts were confirmed"
    finally:
        proxy.release()
    assert cleaned.wait(WAIT)
    cleaner.join(WAIT)
    worker = Worker()
    with polymsg.get_transport(url) as receiving, _serve(receiving, topic, "cast", worker):
        executed = worker.values.wait_for_count(101, WAIT)
    assert set(executed) == set(range(-1, 100))
    assert unconfirmed.messages == []


def test_cleanup_names_what_stayed_unconfirmed_past_the_flush_timeout(
        scheme: str, vhost: str, url: str, proxy: Proxy, topic: str, unique_ids: list[str],
        logged: Callable[[str], LogWaiter]) -> None:
    closing = logged("(?i)unconfirmed|not confirmed")
    sending = polymsg.get_transport(_through(proxy, scheme, vhost, "&confirm_flush_timeout=0.2"))
    send = _sender(sending, topic, "cast")
    worker = Worker()
    with polymsg.get_transport(url) as receiving, _serve(receiving, topic, "cast", worker):
        send(-1)
        worker.values.wait_for_count(1, WAIT)  # routed: its confirm is on its way
    proxy.hold()
    first = len(unique_ids)
    for value in range(5):
        send(value)
    held = unique_ids[first:]
    cleaner = threading.Thread(target=sending.cleanup)
    cleaner.start()
    try:
        assert closing.seen.wait(WAIT), "cleanup() did not name the unconfirmed casts"
    finally:
        proxy.release()  # lets the connection close
    cleaner.join(WAIT)
    assert not cleaner.is_alive()
    [warning] = closing.messages
    # Five casts (six if the proxy caught -1's confirm on its way).
    assert re.search(r"\b[56] cast", warning), warning
    assert len(held) == 5 and all(unique_id in warning for unique_id in held), warning


def test_window_zero_waits_for_each_confirm(scheme: str, vhost: str, proxy: Proxy,
                                            topic: str) -> None:
    sending = polymsg.get_transport(_through(proxy, scheme, vhost, "&confirm_window=0"))
    pool = ThreadPoolExecutor(1)
    try:
        send = _sender(sending, topic, "cast")
        send(-1)
        proxy.hold()
        pending = pool.submit(send, 0)
        # An absence: the cast cannot be confirmed while the proxy holds it.
        with pytest.raises(FutureTimeout):  # not the builtin TimeoutError before 3.11
            pending.result(ABSENCE)
        proxy.release()
        pending.result(WAIT)
    finally:
        proxy.release()
        sending.cleanup()
        pool.shutdown()


@pytest.mark.parametrize(("query", "size", "senders"), [
    ("", 256, 2),                      # the default window
    ("&confirm_window=3", 3, 8),       # many threads, few places
    ("&confirm_window=1", 1, 16),      # one message at a time, whoever sends it
], ids=["default-256", "3-places-8-threads", "1-place-16-threads"])
def test_the_window_bounds_unconfirmed_messages(
        scheme: str, vhost: str, url: str, proxy: Proxy, topic: str, query: str, size: int,
        senders: int) -> None:
    worker = Worker()
    returned = Recorder()  # the values whose cast() returned
    stop = threading.Event()

    def send_until_stopped(first: int, send: Callable[[int], None]) -> None:
        value = first
        while not stop.is_set():
            send(value)
            returned.add(value)
            value += 1

    with polymsg.get_transport(url) as receiving, _serve(receiving, topic, "cast", worker), \
            polymsg.get_transport(_through(proxy, scheme, vhost, query)) as sending, \
            ThreadPoolExecutor(senders) as pool:
        send = _sender(sending, topic, "cast")
        send(-1)
        worker.values.wait_for_count(1, WAIT)  # routed: its confirm is on its way
        proxy.hold()
        futures = [pool.submit(send_until_stopped, n * 100_000, send) for n in range(senders)]
        try:
            # The window fills, then every sender waits for a place. (Its first
            # place may still be taken by -1, if the proxy caught that confirm.)
            returned.wait_for_count(size - 1, WAIT)
            with pytest.raises(AssertionError):  # an absence: no more than `size` return
                returned.wait_for_count(size + 1, ABSENCE)
            assert size - 1 <= len(returned.events) <= size
        finally:
            stop.set()
            proxy.release()
        for future in futures:
            future.result(WAIT)
        every = [-1, *returned.events]
        executed = worker.values.wait_for_count(len(every), WAIT)
    assert sorted(executed) == sorted(every)


@pytest.mark.parametrize("kind", ["cast", "notification"])
def test_a_message_refused_for_good_is_logged_with_its_unique_id(
        url: str, raw: Any, topic: str, kind: str, unique_ids: list[str],
        logged: Callable[[str], LogWaiter]) -> None:
    refused = logged("was not delivered")
    queue = topic if kind == "cast" else f"{topic}.info"
    _refusing_queue(raw, queue, room=1)
    try:
        with polymsg.get_transport(url) as sending:
            send = _sender(sending, topic, kind)
            send(0)  # fills the queue (a driver may send the first one to a topic the
            # careful way, waiting for its confirm)
            first = len(unique_ids)
            send(1)  # returns: the refusal comes later
            made = unique_ids[first:]  # its ids are among them
        # Leaving the transport flushed the window: the refused message was tried
        # again, then reported once, with the id it carried.
        [warning] = refused.messages
        assert "basic.nack" in warning and any(i in warning for i in made), (made, warning)
    finally:
        raw.queue_delete(queue)


def test_window_zero_raises_the_refusal(url: str, raw: Any, topic: str) -> None:
    _refusing_queue(raw, topic)
    try:
        with polymsg.get_transport(f"{url}&confirm_window=0") as sending, \
                pytest.raises(polymsg.MessageDeliveryFailure, match=r"basic\.nack"):
            _sender(sending, topic, "cast")(1)
    finally:
        raw.queue_delete(topic)
