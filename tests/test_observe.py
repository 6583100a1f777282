"""The observer hook: what the facade tells observers, on every transport."""
# ruff: noqa: F811 - the fixtures imported from observekit are test arguments

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from observekit import SYSTEMS, Waiter, kind, topic, transport, url  # noqa: F401

import polymsg
from polymsg import _observe, aio
from polymsg._observe import Operation


class Recorder:
    """Records each scope: (side, operation, context seen, exception, expected)."""

    def __init__(self) -> None:
        self.done = Waiter()

    def sending(self, op: Operation, ctxt: dict[str, Any]) -> Any:
        ctxt["x-observed"] = f"{op.kind}:{op.topic}"
        return self._scope("send", op, dict(ctxt))

    def receiving(self, op: Operation, ctxt: Mapping[str, Any]) -> Any:
        return self._scope("receive", op, dict(ctxt))

    @contextmanager
    def _scope(self, side: str, op: Operation, ctxt: dict[str, Any]) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            self.done.add((side, op, ctxt, exc, _observe.is_expected(exc)))
            raise
        self.done.add((side, op, ctxt, None, False))

    def of(self, side: str, kind: str, count: int = 1) -> list[tuple[Any, ...]]:
        """Wait for ``count`` finished scopes of ``side`` and ``kind``."""
        deadline = time.monotonic() + 15
        while True:
            found = [e for e in self.done.items if e[0] == side and e[1].kind == kind]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"{side} {kind}: {self.done.items}"
                return found
            with suppress(AssertionError):
                self.done.wait(len(self.done.items) + 1, timeout=0.5)


class Broken:
    """An observer failing everywhere it can."""

    def sending(self, op: Operation, ctxt: dict[str, Any]) -> Any:
        raise RuntimeError("broken observer")

    def receiving(self, op: Operation, ctxt: Mapping[str, Any]) -> Any:
        return self._fail_on_exit()

    @contextmanager
    def _fail_on_exit(self) -> Iterator[None]:
        yield
        raise RuntimeError("broken observer")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    observer = Recorder()
    _observe.add_observer(observer)
    try:
        yield observer
    finally:
        _observe.remove_observer(observer)


class Endpoint:
    target = polymsg.Target(version="1.5")

    def __init__(self) -> None:
        self.casts = Waiter()

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return {"value": value, "seen": ctxt.get("x-observed")}

    def note(self, ctxt: dict[str, Any], value: Any) -> None:
        self.casts.add(value)

    @polymsg.expected_exceptions(KeyError)
    def expected(self, ctxt: dict[str, Any]) -> None:
        raise KeyError("part of the contract")

    def boom(self, ctxt: dict[str, Any]) -> None:
        raise ValueError("boom")

    def slow(self, ctxt: dict[str, Any]) -> None:
        time.sleep(1.5)


def _server(transport: polymsg.Transport, topic: str, endpoint: Any) -> polymsg.RPCServer:
    return polymsg.get_rpc_server(
        transport, polymsg.Target(topic=topic, server="s1"), [endpoint])


def test_call_is_observed_on_both_sides(kind: str, transport: polymsg.Transport, topic: str,
                                        recorder: Recorder) -> None:
    with _server(transport, topic, Endpoint()):
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic, version="1.2"),
                                   timeout=15)
        reply = client.call({"user": "u"}, "echo", value=3)
    assert reply == {"value": 3, "seen": f"call:{topic}"}  # the observer's key went on the wire
    (_, sent, _, failure, _), = recorder.of("send", "call")
    (_, received, ctxt, _, _), = recorder.of("receive", "rpc")
    system, exchange = SYSTEMS[kind], transport.default_exchange
    assert sent == Operation("call", system, exchange, topic, None, None, "1.2", "echo")
    assert failure is None
    assert received == Operation("rpc", system, exchange, topic, "s1", None, "1.2", "echo")
    assert ctxt["user"] == "u" and ctxt["x-observed"] == f"call:{topic}"


def test_casts_and_fanout_are_observed(kind: str, transport: polymsg.Transport, topic: str,
                                       recorder: Recorder) -> None:
    endpoint = Endpoint()
    with _server(transport, topic, endpoint):
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic))
        client.cast({}, "note", value=1)
        client.prepare(fanout=True).cast({}, "note", value=2)
        assert sorted(endpoint.casts.wait(2)) == [1, 2]
    assert recorder.of("send", "cast")[0][1].method == "note"
    assert recorder.of("send", "fanout")[0][3] is None
    received = recorder.of("receive", "rpc", 2)
    assert {r[2]["x-observed"] for r in received} == {f"cast:{topic}", f"fanout:{topic}"}


def test_failures_reach_the_observers(transport: polymsg.Transport, topic: str,
                                      recorder: Recorder) -> None:
    with _server(transport, topic, Endpoint()):
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=15)
        with pytest.raises(Exception) as raised:
            client.call({}, "boom")
        with pytest.raises(KeyError):
            client.call({}, "expected")
        started = time.monotonic()
        with pytest.raises(polymsg.MessagingTimeout):
            client.prepare(timeout=0.5).call({}, "slow")
        assert time.monotonic() - started < 5
    sent = {e[1].method: e for e in recorder.of("send", "call", 3)}
    received = {e[1].method: e for e in recorder.of("receive", "rpc", 3)}
    assert sent["boom"][3] is raised.value  # the remote error as the caller saw it
    assert isinstance(sent["slow"][3], polymsg.MessagingTimeout)
    assert isinstance(received["boom"][3], ValueError) and received["boom"][4] is False
    assert isinstance(received["expected"][3], KeyError) and received["expected"][4] is True
    assert received["slow"][3] is None


def test_notifications_are_observed(kind: str, transport: polymsg.Transport, topic: str,
                                    recorder: Recorder) -> None:
    got = Waiter()

    class Listener:
        def info(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any,
                 metadata: Any) -> None:
            got.add(ctxt.get("x-observed"))

        def error(self, *args: Any) -> None:
            raise ValueError("listener failed")

    target = polymsg.Target(topic=topic)
    with polymsg.get_notification_listener(transport, [target], [Listener()]):
        notifier = polymsg.Notifier(transport, "pub", topics=[topic])
        notifier.info({}, "thing.created", {"id": 1})
        notifier.error({}, "thing.failed", {"id": 2})
        assert got.wait(1) == [f"notify:{topic}"]
        failed = [e for e in recorder.of("receive", "notification", 2) if e[3] is not None]
    (_, sent, _, failure, _), _ = recorder.of("send", "notify", 2)
    assert sent == Operation("notify", SYSTEMS[kind], transport.default_exchange, topic, None,
                             None, None, "thing.created", "INFO")
    assert failure is None
    (_, received, _, exc, _), = failed
    assert received.method == "thing.failed" and received.priority == "ERROR"
    assert received.topic == topic and isinstance(exc, ValueError)


def test_a_failing_observer_never_breaks_messaging(transport: polymsg.Transport, topic: str,
                                                   recorder: Recorder) -> None:
    broken = Broken()
    _observe.add_observer(broken)
    try:
        with _server(transport, topic, Endpoint()):
            client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=15)
            assert client.call({}, "echo", value=1)["value"] == 1
    finally:
        _observe.remove_observer(broken)
    assert recorder.of("receive", "rpc")[0][3] is None  # the other observer still saw it


def test_asyncio_paths_are_observed(transport: polymsg.Transport, topic: str,
                                    recorder: Recorder) -> None:
    casts = Waiter()

    class AsyncEndpoint:
        async def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
            return ctxt.get("x-observed")

        async def note(self, ctxt: dict[str, Any], value: Any) -> None:
            casts.add(value)

        async def boom(self, ctxt: dict[str, Any]) -> None:
            raise ValueError("async boom")

    class AsyncListener:
        async def info(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any,
                       metadata: Any) -> None:
            casts.add(ctxt.get("x-observed"))

        async def error(self, *args: Any) -> None:
            raise ValueError("async listener failed")

    async def scenario() -> None:
        server = aio.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [AsyncEndpoint()])
        listener = aio.get_notification_listener(
            transport, [polymsg.Target(topic=f"{topic}-n")], [AsyncListener()])
        async with server, listener:
            client = aio.RPCClient(transport, polymsg.Target(topic=topic), timeout=15)
            assert await client.call({}, "echo", value=1) == f"call:{topic}"
            with pytest.raises(Exception):  # noqa: B017 - the class depends on exmods
                await client.call({}, "boom")
            await client.cast({}, "note", value=2)
            notifier = aio.Notifier(transport, "pub", topics=[f"{topic}-n"])
            await notifier.info({}, "e.ok", {})
            await notifier.error({}, "e.failed", {})
            assert sorted(await asyncio.to_thread(casts.wait, 2), key=str) == [
                2, f"notify:{topic}-n"]
            await asyncio.to_thread(recorder.of, "receive", "notification", 2)

    asyncio.run(scenario())
    received = {e[1].method: e for e in recorder.of("receive", "rpc", 3)}
    assert isinstance(received["boom"][3], ValueError)
    assert recorder.of("send", "cast")[0][3] is None
    notified = {e[1].method: e[3] for e in recorder.of("receive", "notification", 2)}
    assert notified["e.ok"] is None and isinstance(notified["e.failed"], ValueError)


def test_nothing_is_built_without_observers(monkeypatch: pytest.MonkeyPatch,
                                            transport: polymsg.Transport, topic: str) -> None:
    """The micro-check behind "no cost when off": with no observer, the facade
    builds no Operation and enters no scope on any path."""
    assert _observe.OBSERVERS == ()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("observed without observers")

    for name in ("Operation", "sending", "receiving", "system_of"):
        monkeypatch.setattr(_observe, name, refuse)
    got = Waiter()

    class Listener:
        def info(self, *args: Any) -> None:
            got.add(args[2])

    endpoint = Endpoint()
    with _server(transport, topic, endpoint), polymsg.get_notification_listener(
            transport, [polymsg.Target(topic=topic)], [Listener()]):
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=15)
        assert client.call({}, "echo", value=1) == {"value": 1, "seen": None}
        client.cast({}, "note", value=2)
        polymsg.Notifier(transport, "pub", topics=[topic]).info({}, "e.t", {})
        assert endpoint.casts.wait(1) == [2]
        assert got.wait(1) == ["e.t"]
