"""rabbit+kombu and rabbit+pika are one wire: either driver's client reaches
either driver's server, and notifications cross in both directions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from amqptest import DRIVERS, FAST_RETRY, make_url

import polymsg
from polymsg.testing import Recorder

WAIT = 20.0
PAIRS = [("rabbit+kombu", "rabbit+pika"), ("rabbit+pika", "rabbit+kombu")]
assert set(DRIVERS) == {scheme for pair in PAIRS for scheme in pair}


class Endpoint:
    def __init__(self, name: str, seen: Recorder) -> None:
        self.name, self.seen = name, seen

    def echo(self, ctxt: Any, value: Any) -> Any:
        return {"value": value, "ctxt": ctxt, "server": self.name}

    def note(self, ctxt: Any, value: Any) -> None:
        self.seen.add((self.name, value))

    def fail(self, ctxt: Any, message: str) -> None:
        raise ValueError(message)

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.add((publisher_id, event_type, payload, ctxt))


@pytest.fixture
def transports(vhost: str) -> Iterator[dict[str, polymsg.Transport]]:
    opened = {scheme: polymsg.get_transport(make_url(scheme, vhost, FAST_RETRY))
              for scheme in DRIVERS}
    try:
        yield opened
    finally:
        for transport in opened.values():
            transport.cleanup()


@pytest.mark.parametrize(("client_scheme", "server_scheme"), PAIRS)
def test_call_cast_and_fanout_across_drivers(
        transports: dict[str, polymsg.Transport], client_scheme: str,
        server_scheme: str) -> None:
    topic = f"interop-{uuid.uuid4().hex[:8]}"
    seen = Recorder()
    servers = [polymsg.get_rpc_server(transports[server_scheme],
                                      polymsg.Target(topic=topic, server=name),
                                      [Endpoint(name, seen)])
               for name in ("s1", "s2")]
    client = polymsg.RPCClient(transports[client_scheme], polymsg.Target(topic=topic),
                               timeout=WAIT)
    for server in servers:
        server.start()
    try:
        reply = client.call({"request_id": "req-1"}, "echo", value=[1, "two", None])
        assert reply["value"] == [1, "two", None] and reply["ctxt"] == {"request_id": "req-1"}
        assert client.prepare(server="s2").call({}, "echo", value=0)["server"] == "s2"
        with pytest.raises(ValueError, match="across drivers"):
            client.call({}, "fail", message="across drivers")
        client.cast({}, "note", value="cast")
        client.prepare(fanout=True).cast({}, "note", value="fanout")
        events = seen.wait_for(lambda e: len(e) >= 3, WAIT)
        assert sorted(value for _, value in events) == ["cast", "fanout", "fanout"]
        assert {name for name, value in events if value == "fanout"} == {"s1", "s2"}
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            server.wait()


@pytest.mark.parametrize(("notifier_scheme", "listener_scheme"), PAIRS)
def test_notifications_across_drivers(
        transports: dict[str, polymsg.Transport], notifier_scheme: str,
        listener_scheme: str) -> None:
    topic = f"interop-notes-{uuid.uuid4().hex[:8]}"
    seen = Recorder()
    notifier = polymsg.Notifier(transports[notifier_scheme], "interop.publisher",
                                topics=(topic,))
    notifier.info({"user": "u1"}, "interop.stored", {"n": 1})  # before any listener
    listener = polymsg.get_notification_listener(
        transports[listener_scheme], [polymsg.Target(topic=topic)], [Endpoint("l", seen)])
    with listener:
        notifier.info({"user": "u2"}, "interop.live", {"n": 2})
        events = seen.wait_for_count(2, WAIT)
    assert sorted(events, key=lambda e: e[1]) == [
        ("interop.publisher", "interop.live", {"n": 2}, {"user": "u2"}),
        ("interop.publisher", "interop.stored", {"n": 1}, {"user": "u1"}),
    ]
