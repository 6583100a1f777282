"""The confirm window: casts and notifications return once published, the driver
keeps them until the broker confirms them, and ``cleanup()`` waits for those
confirms.

A :class:`~proxy.Proxy` in front of the broker holds a sending connection's
bytes on demand, so "published but not yet confirmed" is a state a test can
hold for as long as it likes instead of a race it has to win.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest
from proxy import Proxy
from rabbit import FAST_RETRY, base_url, url, wait_confirmed

import polymsg
from polymsg import amqp
from polymsg.testing import Recorder

WAIT = 30.0


class Worker:
    """An RPC endpoint and a notification endpoint recording the values they get."""

    def __init__(self) -> None:
        self.values = Recorder()

    def record(self, ctxt: Any, value: int) -> None:
        self.values.add(value)

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.values.add(payload["value"])


class _LogWaiter(logging.Handler):
    """A handler on ``polymsg_pika`` a test can wait on for a record containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.messages.append(message)
            self.seen.set()


@pytest.fixture
def topic() -> str:
    return f"window-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """A forwarder to the test broker that can hold connections' bytes."""
    broker = base_url().hosts[0]
    forwarder = Proxy((broker.hostname or "127.0.0.1", broker.port or 5672)).start()
    try:
        yield forwarder
    finally:
        forwarder.stop()


def _through(proxy: Proxy, vhost: str, query: str = "") -> str:
    broker = base_url().hosts[0]
    return url("rabbit+pika", vhost, f"{FAST_RETRY}{query}").replace(
        f"{broker.hostname}:{broker.port}", f"127.0.0.1:{proxy.port}")


@pytest.fixture
def unique_ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every id ``amqp.new_id`` hands out from now on (the driver names each cast and
    notification by one); the real function still makes them."""
    made: list[str] = []
    original = amqp.new_id

    def recording() -> str:
        made.append(original())
        return made[-1]

    monkeypatch.setattr(amqp, "new_id", recording)
    return made


@pytest.fixture
def warnings_about() -> Iterator[Callable[[str], _LogWaiter]]:
    logger = logging.getLogger("polymsg_pika")
    handlers: list[_LogWaiter] = []

    def make(text: str) -> _LogWaiter:
        handlers.append(_LogWaiter(text))
        logger.addHandler(handlers[-1])
        return handlers[-1]

    yield make
    for handler in handlers:
        logger.removeHandler(handler)


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


def _window(transport: polymsg.Transport) -> Any:
    return transport._driver._window  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["cast", "notification"])
def test_a_burst_then_cleanup_delivers_every_message_once(
        pika_url: str, topic: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    count = 2000
    worker = Worker()
    with polymsg.get_transport(pika_url) as receiving, _serve(receiving, topic, kind, worker):
        sending = polymsg.get_transport(pika_url)
        assert _window(sending).size == 256  # the default window
        send = _sender(sending, topic, kind)
        for value in range(count):
            send(value)
        sending.cleanup()  # waits for the last confirms
        assert _window(sending).in_flight == 0
        executed = worker.values.wait_for_count(count, WAIT)
    # No connection was lost, so nothing was published twice: exactly once each.
    assert sorted(executed) == list(range(count))
    complaints = [r.getMessage() for r in caplog.records
                  if r.name.startswith("polymsg_pika") and r.levelno >= logging.WARNING]
    assert complaints == []


def test_cast_returns_before_its_confirm_and_cleanup_waits_for_it(
        vhost: str, pika_url: str, proxy: Proxy, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    sending = polymsg.get_transport(_through(proxy, vhost))
    send = _sender(sending, topic, "cast")
    send(-1)
    wait_confirmed(sending, WAIT)  # connected, the topic's queue declared
    proxy.hold()  # from here the broker sees nothing and confirms nothing
    for value in range(100):
        send(value)  # returns: published on a live channel
    assert _window(sending).in_flight == 100
    cleaned = threading.Event()
    cleaner = threading.Thread(target=lambda: (sending.cleanup(), cleaned.set()))
    cleaner.start()
    try:
        assert not cleaned.wait(0.5), "cleanup() returned before the casts were confirmed"
    finally:
        proxy.release()
    assert cleaned.wait(WAIT)
    cleaner.join(WAIT)
    worker = Worker()
    with polymsg.get_transport(pika_url) as receiving, _serve(receiving, topic, "cast", worker):
        executed = worker.values.wait_for_count(101, WAIT)
    assert set(executed) == set(range(-1, 100))
    assert not [r for r in caplog.records if "not confirmed" in r.getMessage()]


def test_cleanup_names_what_stayed_unconfirmed_past_the_flush_timeout(
        vhost: str, proxy: Proxy, topic: str, unique_ids: list[str],
        warnings_about: Callable[[str], _LogWaiter]) -> None:
    closing = warnings_about("not confirmed by the broker, maybe lost")
    sending = polymsg.get_transport(_through(proxy, vhost, "&confirm_flush_timeout=0.2"))
    send = _sender(sending, topic, "cast")
    send(-1)
    wait_confirmed(sending, WAIT)
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
    assert "5 cast(s)" in warning
    assert len(held) == 5 and all(unique_id in warning for unique_id in held), warning


def test_window_zero_waits_for_each_confirm(vhost: str, proxy: Proxy, topic: str) -> None:
    sending = polymsg.get_transport(_through(proxy, vhost, "&confirm_window=0"))
    pool = ThreadPoolExecutor(1)
    try:
        assert _window(sending) is None
        send = _sender(sending, topic, "cast")
        send(-1)
        proxy.hold()
        pending = pool.submit(send, 0)
        # An absence: the cast cannot be confirmed while the proxy holds it.
        with pytest.raises(FutureTimeout):  # not the builtin TimeoutError before 3.11
            pending.result(0.5)
        proxy.release()
        pending.result(WAIT)
    finally:
        proxy.release()
        sending.cleanup()
        pool.shutdown()


def test_the_window_bounds_unconfirmed_messages(pika_url: str, topic: str) -> None:
    senders, each = 16, 20
    worker = Worker()
    with polymsg.get_transport(pika_url) as receiving, \
            _serve(receiving, topic, "cast", worker), \
            polymsg.get_transport(f"{pika_url}&confirm_window=1") as sending, \
            ThreadPoolExecutor(senders) as pool:
        send = _sender(sending, topic, "cast")
        futures = [pool.submit(lambda n=n: [send(n * each + i) for i in range(each)])
                   for n in range(senders)]
        for future in futures:
            future.result(WAIT)
        executed = worker.values.wait_for_count(senders * each, WAIT)
        publisher = sending._driver._publisher  # type: ignore[attr-defined]
        # Sixteen threads sent at once, yet one message at a time awaited its confirm.
        assert _window(sending).most_in_flight == 1
        assert publisher.most_in_flight == 1
    assert set(executed) == set(range(senders * each))


@pytest.mark.parametrize("kind", ["cast", "notification"])
def test_a_message_refused_for_good_is_logged_with_its_unique_id(
        pika_url: str, raw: Any, topic: str, kind: str, unique_ids: list[str],
        warnings_about: Callable[[str], _LogWaiter]) -> None:
    refused = warnings_about("was not delivered")
    # A queue that takes nothing: the broker answers every publish with basic.nack.
    queue = topic if kind == "cast" else f"{topic}.info"
    raw.queue_declare(queue, durable=True,
                      arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    try:
        with polymsg.get_transport(pika_url) as sending:
            _sender(sending, topic, kind)(1)  # returns: the refusal comes later
            unique_id = unique_ids[-1]
            wait_confirmed(sending, WAIT)  # refused three times, then given up
        [warning] = refused.messages
        assert unique_id in warning and "basic.nack" in warning
        assert ("cast 'record'" if kind == "cast" else "notification 'window.value'") in warning
    finally:
        raw.queue_delete(queue)


def test_window_zero_raises_the_refusal(pika_url: str, raw: Any, topic: str) -> None:
    raw.queue_declare(topic, durable=True,
                      arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    try:
        with polymsg.get_transport(f"{pika_url}&confirm_window=0") as sending, \
                pytest.raises(polymsg.MessageDeliveryFailure, match=r"basic\.nack"):
            _sender(sending, topic, "cast")(1)
    finally:
        raw.queue_delete(topic)
