"""What arrives on the wire and what the broker refuses: garbage, mismatched
declarations, vanished queues, and what a transport leaves behind."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from rabbit import list_queues, wait_confirmed

import polymsg
from polymsg.testing import Recorder

WAIT = 20.0


@pytest.fixture
def transport(pika_url: str) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(pika_url) as transport:
        yield transport


@pytest.fixture
def topic() -> str:
    return f"wire-{uuid.uuid4().hex[:10]}"


class Echo:
    def __init__(self) -> None:
        self.seen = Recorder()

    def echo(self, ctxt: Any, value: Any) -> Any:
        self.seen.add(value)
        return value

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.add(event_type)


def test_queue_with_other_arguments_gives_a_warning_not_a_dead_channel(
        transport: polymsg.Transport, raw: Any, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    # As durable as polymsg declares it (RabbitMQ 4: always; 3: as oslo.messaging).
    durable = os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4")
    raw.queue_declare(topic, durable=durable, arguments={"x-expires": 600_000})
    endpoint = Echo()
    # Server and client ask for other arguments (none, and a 5 s queue_ttl).
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [endpoint])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT,
                               queue_ttl=5.0)
    with server:
        client.cast({}, "echo", value="cast")
        assert client.call({}, "echo", value="call") == "call"
        endpoint.seen.wait_for_count(2, WAIT)
    warnings = [r.getMessage() for r in caplog.records if "already exists" in r.getMessage()]
    assert warnings and all(topic in w and "x-expires" in w for w in warnings), warnings


def test_exchange_of_another_type_gives_a_warning_and_still_routes(
        transport: polymsg.Transport, raw: Any, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    exchange = f"direct-{topic}"
    raw.exchange_declare(exchange, "direct")
    server = polymsg.get_rpc_server(
        transport, polymsg.Target(topic=topic, server="s1", exchange=exchange), [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic, exchange=exchange),
                               timeout=WAIT)
    with server:
        assert client.call({}, "echo", value="routed") == "routed"
        assert client.prepare(server="s1").call({}, "echo", value="pinned") == "pinned"
    assert any("exchange" in r.getMessage() and exchange in r.getMessage()
               for r in caplog.records if "already exists" in r.getMessage())
    raw.exchange_delete(exchange)


def test_a_queue_deleted_behind_the_senders_back_is_declared_again(
        transport: polymsg.Transport, raw: Any, topic: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="polymsg_pika")
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    client.cast({}, "echo", value="first")  # declares the queue, remembered
    wait_confirmed(transport, WAIT)  # "first" is in the queue
    raw.queue_delete(topic)  # "first" goes with it
    client.cast({}, "echo", value="second")  # returned, declared again, sent again
    endpoint = Echo()
    with polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                [endpoint]):
        assert endpoint.seen.wait_for_count(1, WAIT) == ["second"]
    assert any("was missing" in r.getMessage() for r in caplog.records)


def test_fanout_to_nobody_is_logged_not_lost_silently(
        transport: polymsg.Transport, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="polymsg_pika")
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic, fanout=True))
    client.cast({}, "echo", value="anyone?")
    wait_confirmed(transport, WAIT)  # returned before its confirm
    assert any("reached no server" in r.getMessage() for r in caplog.records)


def test_cleanup_removes_the_reply_queue_and_stop_the_fanout_queue(
        vhost: str, pika_url: str, topic: str) -> None:
    transport = polymsg.get_transport(pika_url)
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    with server:
        assert client.call({}, "echo", value=1) == 1
        reply_queue = transport._driver._replies.queue  # type: ignore[attr-defined]
        during = list_queues(vhost)
    transport.cleanup()
    after = list_queues(vhost)
    fanout = [name for name in during if name.startswith(f"{topic}_fanout_")]
    assert reply_queue in during and len(fanout) == 1
    assert reply_queue not in after and fanout[0] not in after
    assert topic in after  # the shared topic queue stays for servers to come


class _Waiter(logging.Handler):
    """A log handler a test can wait on for a record containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def log_waiter() -> Iterator[Callable[[str], _Waiter]]:
    logger = logging.getLogger("polymsg_pika")
    level, handlers = logger.level, []

    def make(text: str) -> _Waiter:
        handler = _Waiter(text)
        handlers.append(handler)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler

    yield make
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def test_server_consumes_again_after_its_queue_was_deleted(
        transport: polymsg.Transport, raw: Any, topic: str,
        log_waiter: Callable[[str], _Waiter]) -> None:
    cancelled = log_waiter("cancelled consuming")
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    with server:
        assert client.call({}, "echo", value=1) == 1
        raw.queue_delete(topic)  # the broker cancels the server's consumer
        assert cancelled.seen.wait(WAIT), "the server was not told its queue went away"
        assert client.call({}, "echo", value=2) == 2


def test_reply_to_a_caller_that_is_gone_is_logged(
        pika_url: str, transport: polymsg.Transport, topic: str,
        log_waiter: Callable[[str], _Waiter]) -> None:
    dropped = log_waiter("reply queue '")
    release = threading.Event()

    class Slow:
        def wait(self, ctxt: Any) -> str:
            release.wait(WAIT)
            return "too late"

    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Slow()])
    with server:
        caller = polymsg.get_transport(pika_url)
        try:
            with pytest.raises(polymsg.MessagingTimeout):
                polymsg.RPCClient(caller, polymsg.Target(topic=topic), timeout=0.5).call(
                    {}, "wait")
        finally:
            caller.cleanup()  # deletes the caller's reply queue
        release.set()
        assert dropped.seen.wait(WAIT), "the undeliverable reply was not logged"


def test_confirms_are_pipelined_across_threads(transport: polymsg.Transport,
                                               topic: str) -> None:
    endpoint = Echo()
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic))
    senders, each = 16, 25
    with polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                [endpoint]), ThreadPoolExecutor(senders) as pool:
        for future in [pool.submit(lambda n=n: [client.cast({}, "echo", value=(n, i))
                                                for i in range(each)])
                       for n in range(senders)]:
            future.result(WAIT)
        assert len(endpoint.seen.wait_for_count(senders * each, WAIT)) == senders * each
    publisher = transport._driver._publisher  # type: ignore[attr-defined]
    # Casts of different threads waited for their confirms together, not in turn.
    assert publisher.most_in_flight > 1


def test_the_installed_pika_has_what_the_fastpath_uses(transport: polymsg.Transport,
                                                      topic: str) -> None:
    from collections import deque

    from polymsg_pika import _fastpath

    polymsg.RPCClient(transport, polymsg.Target(topic=topic)).cast({}, "echo", value=1)
    link = transport._driver._send  # type: ignore[attr-defined]
    # Without these the driver still works, one send() per frame: a pika
    # upgrade that removes them should be noticed, not silently slower.
    assert _fastpath.enabled(), "the installed pika is not one the fast path was tested with"
    assert _fastpath._PLAIN_TRANSPORT is not None
    assert type(link.connection._transport) is _fastpath._PLAIN_TRANSPORT
    assert isinstance(link.connection._transport._tx_buffers, deque)


@pytest.mark.parametrize("fast", [True, False], ids=["private-hooks", "public-path"])
def test_both_io_paths_carry_calls_and_casts(pika_url: str, topic: str, fast: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from polymsg_pika import _fastpath

    monkeypatch.setattr(_fastpath, "_ENABLED", fast)
    flushed = []
    real = _fastpath.flush
    monkeypatch.setattr(_fastpath, "flush", lambda c: flushed.append(real(c)) or flushed[-1])
    with polymsg.get_transport(pika_url) as transport:
        endpoint = Echo()
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                        [endpoint])
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        with server:
            for i in range(200):
                client.cast({}, "echo", value=i)
            assert client.call({}, "echo", value="done") == "done"
            assert sorted(endpoint.seen.wait_for_count(201, WAIT), key=str) == \
                sorted([*range(200), "done"], key=str)
    assert any(flushed) is fast
