"""pika's fast path (polymsg_pika._fastpath): the installed pika has the private
hooks it uses, and both I/O paths carry calls and casts. (What both RabbitMQ drivers
do on the wire is tested once for both in tests-amqp/.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

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
    assert type(link.connection.pika._transport) is _fastpath._PLAIN_TRANSPORT
    assert isinstance(link.connection.pika._transport._tx_buffers, deque)


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
