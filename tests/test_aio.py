"""polymsg.aio on every transport: what the async API adds to the sync one's
contract (loops, tasks, cancellation, thread use), and the async example.

RabbitMQ runs need ``POLYMSG_TEST_RABBIT_URL`` (``scripts/services.sh env``);
zmq runs need polymsg-zmq installed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from transportkit import KINDS, transport_url

import polymsg
from polymsg import aio
from polymsg.aio._senders import MAX_THREADS as MAX_SENDER_THREADS
from polymsg.testing import AsyncConformance, DriverFixtures, Harness

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
WAIT = 10.0


def run_in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test on a fresh event loop (its fixtures are made outside it)."""
    @functools.wraps(test)
    def runner(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return runner


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with transport_url(request.param, "aio") as url:
        yield url


@pytest.fixture
def transport(url: str) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(url) as transport:
        yield transport


@pytest.fixture
def topic() -> str:
    return f"aio-{uuid.uuid4().hex[:12]}"


class Endpoint:
    """Async and plain methods; ``gate`` holds ``wait_gate`` until set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.threads: dict[str, int] = {}
        self.finished: list[str] = []
        self.arrived: list[str] = []

    async def hello(self, ctxt: Any, name: str) -> str:
        self.threads["hello"] = threading.get_ident()
        return f"hello {name}"

    async def wait_gate(self, ctxt: Any, tag: str) -> str:
        self.arrived.append(tag)
        await self.gate.wait()
        self.finished.append(tag)
        return tag

    def blocking(self, ctxt: Any) -> str:
        self.threads["blocking"] = threading.get_ident()
        self.blocked.set()
        self.release.wait(WAIT)
        return "unblocked"

    @polymsg.expected_exceptions(KeyError)
    async def missing(self, ctxt: Any, key: str) -> None:
        raise KeyError(key)


def _server(transport: polymsg.Transport, topic: str, endpoint: Any, **kw: Any) -> aio.RPCServer:
    return aio.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"), [endpoint],
                              **kw)


def _client(transport: polymsg.Transport, topic: str, **kw: Any) -> aio.RPCClient:
    return aio.RPCClient(transport, polymsg.Target(topic=topic), **{"timeout": WAIT, **kw})


def test_example_service_runs(url: str) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import async_service
    finally:
        sys.path.remove(str(EXAMPLES))
    results = asyncio.run(async_service.main(url, topic=f"aio-{uuid.uuid4().hex[:12]}"))
    assert results[:3] == [10, 9, "KeyError 'nut'"]
    assert results[4:] == [["bolt", "nut"], "timeout"]


@run_in_loop
async def test_async_methods_on_the_loop_plain_ones_off_it(transport: polymsg.Transport,
                                                           topic: str) -> None:
    endpoint = Endpoint()
    async with _server(transport, topic, endpoint):
        client = _client(transport, topic)
        blocked = asyncio.create_task(client.call({}, "blocking"))
        await asyncio.to_thread(endpoint.blocked.wait, WAIT)
        # the plain method holds a worker thread; the loop still serves async ones
        assert await client.call({}, "hello", name="loop") == "hello loop"
        endpoint.release.set()
        assert await blocked == "unblocked"
    assert endpoint.threads["hello"] == threading.get_ident()
    assert endpoint.threads["blocking"] != threading.get_ident()


@run_in_loop
async def test_timeout_raises_messaging_timeout_on_time(transport: polymsg.Transport,
                                                        topic: str) -> None:
    client = _client(transport, topic, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(polymsg.MessagingTimeout) as caught:
        await client.call({}, "hello", name="nobody")
    elapsed = time.monotonic() - started
    assert not isinstance(caught.value, asyncio.TimeoutError)
    assert 0.45 <= elapsed < 0.5 + 3.0


@run_in_loop
async def test_cancelled_call_is_abandoned_quietly(transport: polymsg.Transport, topic: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    endpoint = Endpoint()
    async with _server(transport, topic, endpoint):
        client = _client(transport, topic)
        calls = [asyncio.create_task(client.call({}, "wait_gate", tag=f"t{i}"))
                 for i in range(20)]
        await _until(lambda: len(endpoint.arrived) == 20)  # all sent and being served
        for task in calls:
            task.cancel()
        with caplog.at_level(logging.INFO):
            endpoint.gate.set()  # the server still runs them and replies to nobody
            assert await client.call({}, "wait_gate", tag="after") == "after"
            await _until(lambda: len(endpoint.finished) == 21)
            # replies sent before this one's: by now the late ones came and were dropped
            assert await client.call({}, "hello", name="again") == "hello again"
        for task in calls:
            assert task.cancelled()
    # no warning per dropped reply (what a caller that gave up would cause)
    noisy = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING and ("reply" in r.getMessage().lower()
                                                 or "call" in r.getMessage().lower())]
    assert noisy == []


@run_in_loop
async def test_timed_out_calls_drop_their_late_replies_quietly(
        transport: polymsg.Transport, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    endpoint = Endpoint()
    async with _server(transport, topic, endpoint):
        client = _client(transport, topic, timeout=0.5)
        with caplog.at_level(logging.INFO):
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.call({}, "wait_gate", tag=f"t{i}") for i in range(20)),
                return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(type(o) is polymsg.MessagingTimeout for o in outcomes), outcomes
            assert 0.45 <= elapsed < 0.5 + 3.0
            endpoint.gate.set()  # now the server replies to callers that gave up
            await _until(lambda: len(endpoint.finished) == 20)
            assert await _client(transport, topic).call({}, "hello", name="x") == "hello x"
    noisy = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING and ("reply" in r.getMessage().lower()
                                                 or "call" in r.getMessage().lower())]
    assert noisy == []


async def _until(predicate: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@run_in_loop
async def test_wait_lets_calls_in_flight_reply(transport: polymsg.Transport, topic: str) -> None:
    endpoint = Endpoint()
    server = _server(transport, topic, endpoint)
    await server.start()
    client = _client(transport, topic)
    pending = [asyncio.create_task(client.call({}, "wait_gate", tag=str(i))) for i in range(5)]
    await _until(lambda: len(endpoint.finished) == 0 and _running(server) == 5)
    await server.stop()
    endpoint.gate.set()
    await server.wait()
    assert sorted(await asyncio.gather(*pending)) == ["0", "1", "2", "3", "4"]


def _running(server: aio.RPCServer) -> int:
    return len(server._tasks)


@run_in_loop
async def test_remote_errors_and_dispatch_errors(transport: polymsg.Transport, topic: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async with _server(transport, topic, Endpoint()):
        client = _client(transport, topic)
        with caplog.at_level(logging.DEBUG, logger="polymsg"), \
                pytest.raises(KeyError, match="gone"):
            await client.call({}, "missing", key="gone")
        assert not [r for r in caplog.records if r.exc_info]  # expected: no traceback
        with pytest.raises(polymsg.NoSuchMethod):
            await client.call({}, "nope")
        with pytest.raises(polymsg.UnsupportedVersion):
            await client.prepare(version="2.0").call({}, "hello", name="x")
        with pytest.raises(polymsg.RPCVersionCapError):
            await client.prepare(version="1.5", version_cap="1.2").call({}, "hello", name="x")


@run_in_loop
async def test_sync_and_async_share_a_transport(transport: polymsg.Transport,
                                                topic: str) -> None:
    async with _server(transport, topic, Endpoint()):
        sync_client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        async_client = _client(transport, topic)
        from_thread = asyncio.to_thread(sync_client.call, {}, "hello", name="sync")
        results = await asyncio.gather(from_thread, async_client.call({}, "hello", name="async"))
        assert results == ["hello sync", "hello async"]


@run_in_loop
async def test_many_calls_in_flight_use_no_thread_each(transport: polymsg.Transport,
                                                       topic: str) -> None:
    async with _server(transport, topic, Endpoint()):
        client = _client(transport, topic)
        await client.call({}, "hello", name="warm-up")
        before = threading.active_count()
        results = await asyncio.gather(*(client.call({}, "hello", name=str(i))
                                         for i in range(300)))
        assert results == [f"hello {i}" for i in range(300)]
        # at most the sender threads of a driver whose sends may block, never one a call
        assert threading.active_count() <= before + 4 + MAX_SENDER_THREADS


class Slow:
    async def slow(self, ctxt: Any, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"


def _require_call_monitor(transport: polymsg.Transport) -> None:
    if "call_monitor" not in type(transport._driver).send_features:
        pytest.skip("the driver does not implement call_monitor")


@run_in_loop
async def test_call_monitor_keeps_a_long_async_call_alive(transport: polymsg.Transport,
                                                          topic: str) -> None:
    _require_call_monitor(transport)
    async with _server(transport, topic, Slow()):
        client = _client(transport, topic, call_monitor_timeout=0.8)
        # three times the monitor timeout: only the heartbeats keep it going (one
        # every 0.4 s; failing takes 0.8 s of silence, which a loaded machine tolerates)
        assert await client.call({}, "slow", seconds=2.4) == "done"


@run_in_loop
async def test_call_monitor_fails_a_silent_call_early(transport: polymsg.Transport,
                                                      topic: str) -> None:
    _require_call_monitor(transport)
    client = _client(transport, topic, timeout=30, call_monitor_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(polymsg.MessagingTimeout, match="heartbeat"):
        await client.call({}, "slow", seconds=0)  # nobody serves the topic
    assert 0.45 <= time.monotonic() - started < 0.5 + 3.0


class Listener:
    def __init__(self, requeue_first: bool = False) -> None:
        self.seen: list[tuple[str, Any, str]] = []
        self.requeue_first = requeue_first
        self.filter_rule = polymsg.NotificationFilter(event_type=r"^keep\.")

    async def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
                   metadata: Any) -> Any:
        self.seen.append((event_type, payload, "async"))
        if self.requeue_first:
            self.requeue_first = False
            return polymsg.NotificationResult.REQUEUE
        return None

    def error(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
              metadata: Any) -> None:
        self.seen.append((event_type, payload, threading.current_thread().name))


@run_in_loop
async def test_notifications_filters_priorities_requeue(transport: polymsg.Transport,
                                                        topic: str) -> None:
    requeue = "requeue" in transport.capabilities
    endpoint = Listener(requeue_first=requeue)
    listener = aio.get_notification_listener(transport, [polymsg.Target(topic=topic)],
                                             [endpoint], allow_requeue=requeue)
    async with listener:
        notifier = aio.Notifier(transport, "aio.test", topics=[topic])
        await notifier.info({}, "drop.me", {"n": 0})
        await notifier.info({}, "keep.info", {"n": 1})
        await notifier.error({}, "keep.error", {"n": 2})
        await _until(lambda: len(endpoint.seen) >= 2 + requeue)
    events = [(e, p) for e, p, _ in endpoint.seen]
    assert sorted(events, key=str) == sorted(
        [("keep.info", {"n": 1})] * (1 + requeue) + [("keep.error", {"n": 2})], key=str)
    [plain] = [where for e, _, where in endpoint.seen if e == "keep.error"]
    assert plain != "async" and plain != threading.current_thread().name


def test_unknown_executor_is_refused() -> None:
    with polymsg.get_transport("memory://") as transport, pytest.raises(polymsg.NotSupported):
        aio.get_rpc_server(transport, polymsg.Target(topic="t", server="s"), [],
                           executor="eventlet")


def test_aio_exports_the_api() -> None:
    assert aio.__all__ == sorted(aio.__all__)
    assert {"RPCClient", "Notifier", "get_rpc_server", "get_notification_listener"} <= set(
        aio.__all__)
    for name in aio.__all__:
        assert getattr(aio, name).__doc__, name


class TestAsyncConformanceRunner(AsyncConformance, DriverFixtures):
    """The async runner really drives the scenarios through polymsg.aio."""

    url = "memory://"

    def test_harness_makes_aio_objects_with_async_endpoints(self, harness: Harness) -> None:
        server = harness.rpc_server()
        client = harness.client()
        assert isinstance(server._runner, aio.RPCServer)
        assert isinstance(client._client, aio.RPCClient)
        assert isinstance(harness.notifier()._notifier, aio.Notifier)
        endpoint = server._runner._core._dispatcher._endpoints[0].obj
        assert inspect.iscoroutinefunction(endpoint.echo)
        assert client.call({}, "echo", value=[1, "a"]) == [1, "a"]
