"""polymsg and the real oslo.messaging on one broker, on both RabbitMQ drivers: calls,
casts, fanout and notifications in both directions, and notifications stored for a
listener that starts later."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from amqptest import FAST_RETRY, make_url, shared_conf
from oslo_config import cfg
from oslo_context.context import RequestContext

import polymsg
from polymsg.testing import Recorder

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # oslo.messaging imports eventlet, which warns
    import oslo_messaging as om

# oslo.messaging on its defaults declares non-durable non-exclusive queues, which
# a RabbitMQ 4 node with 4.3's denials refuses; tests/rabbit4/test_rabbit4_oslo.py
# covers both drivers with oslo.messaging on quorum queues there.
pytestmark = pytest.mark.skipif(
    os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4"),
    reason="oslo.messaging's defaults are refused by RabbitMQ 4 with 4.3's denials")

WAIT = 20.0


class Endpoint:
    """Served by both libraries: records casts, answers calls, raises on demand."""

    def __init__(self, name: str, seen: Recorder) -> None:
        self.name = name
        self.seen = seen

    def echo(self, ctxt: Any, value: Any) -> Any:
        return {"value": value, "server": self.name, "user": dict(ctxt).get("user")}

    def fail(self, ctxt: Any, text: str) -> None:
        raise ValueError(text)

    def note(self, ctxt: Any, value: Any) -> None:
        self.seen.add((self.name, value))


class Listener:
    """A notification endpoint for both libraries."""

    def __init__(self) -> None:
        self.seen = Recorder()

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.add((publisher_id, event_type, payload, dict(ctxt).get("user")))


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    """One ConfigOpts for both libraries, so both read the same control_exchange."""
    conf = shared_conf(f"interop-{uuid.uuid4().hex[:8]}", oslo_options_first=True)
    return conf


@pytest.fixture
def oslo_rpc(conf: cfg.ConfigOpts, vhost: str) -> Iterator[Any]:
    transport = om.get_rpc_transport(conf, url=make_url("rabbit", vhost))
    yield transport
    transport.cleanup()


@pytest.fixture
def oslo_notify(conf: cfg.ConfigOpts, vhost: str, oslo_rpc: Any) -> Iterator[Any]:
    transport = om.get_notification_transport(conf, url=make_url("rabbit", vhost))
    yield transport
    transport.cleanup()


@pytest.fixture
def transport(conf: cfg.ConfigOpts, scheme: str, vhost: str,
              oslo_rpc: Any) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(make_url(scheme, vhost, FAST_RETRY), conf=conf) as transport:
        assert transport.default_exchange == conf.control_exchange
        yield transport


def _exercise(client: Any, seen: Recorder) -> None:
    """The same checks through an oslo or a polymsg client (both have ``prepare``)."""
    taken = 0

    def take(count: int) -> list[Any]:  # the next ``count`` events, sorted
        nonlocal taken
        events = seen.wait_for_count(taken + count, WAIT)[taken:taken + count]
        taken += count
        return sorted(events)

    reply = client.call({"user": "alice"}, "echo", value=[1, {"a": "b"}, None])
    assert reply["value"] == [1, {"a": "b"}, None] and reply["user"] == "alice"
    assert client.prepare(server="s2").call({}, "echo", value=1)["server"] == "s2"
    with pytest.raises(ValueError, match="refused remotely"):
        client.call({}, "fail", text="refused remotely")
    client.prepare(server="s1").cast({}, "note", value="pinned")
    assert take(1) == [("s1", "pinned")]
    client.prepare(fanout=True).cast({}, "note", value="everyone")
    assert take(2) == [("s1", "everyone"), ("s2", "everyone")]
    client.cast({}, "note", value="anyone")
    assert take(1)[0][1] == "anyone"
    assert len(seen.events) == 4  # nothing twice


def test_oslo_client_calls_polymsg_servers(oslo_rpc: Any, transport: polymsg.Transport,
                                           topic: str) -> None:
    seen = Recorder()
    for name in ("s1", "s2"):
        polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server=name),
                               [Endpoint(name, seen)]).start()  # stopped by the cleanup
    _exercise(om.get_rpc_client(oslo_rpc, om.Target(topic=topic), timeout=WAIT), seen)


def test_polymsg_client_calls_oslo_servers(oslo_rpc: Any, transport: polymsg.Transport,
                                           topic: str) -> None:
    seen = Recorder()
    servers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in ("s1", "s2"):
            servers.append(om.get_rpc_server(oslo_rpc, om.Target(topic=topic, server=name),
                                             [Endpoint(name, seen)], executor="threading"))
    for server in servers:
        server.start()
    try:
        _exercise(polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT), seen)
    finally:
        for server in servers:
            server.stop()
            server.wait()


def test_oslo_notifier_reaches_polymsg_listener(oslo_notify: Any,
                                                transport: polymsg.Transport,
                                                topic: str) -> None:
    endpoint = Listener()
    notifier = om.Notifier(oslo_notify, "oslo.publisher", driver="messagingv2",
                           topics=[topic])
    # oslo.messaging's Notifier drops plain-dict contexts; it sends a
    # RequestContext's fields (user, project_id, request_id...).
    notifier.info(RequestContext(user_id="bob"), "stored.before.listening", {"n": 1})
    listener = polymsg.get_notification_listener(transport, [polymsg.Target(topic=topic)],
                                                 [endpoint])
    with listener:
        notifier.info(RequestContext(user_id="carol"), "live", {"n": 2})
        events = endpoint.seen.wait_for_count(2, WAIT)
    assert sorted(events, key=lambda e: e[1]) == [
        ("oslo.publisher", "live", {"n": 2}, "carol"),
        ("oslo.publisher", "stored.before.listening", {"n": 1}, "bob"),
    ]


def test_polymsg_notifier_reaches_oslo_listener(oslo_notify: Any,
                                                transport: polymsg.Transport,
                                                topic: str) -> None:
    endpoint = Listener()
    notifier = polymsg.Notifier(transport, "polymsg.publisher", topics=(topic,))
    notifier.info({"user": "erin"}, "stored.before.listening", [0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        listener = om.get_notification_listener(oslo_notify, [om.Target(topic=topic)],
                                                [endpoint], executor="threading")
    listener.start()
    try:
        notifier.info({"user": "dave"}, "live", [1, 2])
        events = endpoint.seen.wait_for_count(2, WAIT)
    finally:
        listener.stop()
        listener.wait()
    assert sorted(events, key=lambda e: e[1]) == [
        ("polymsg.publisher", "live", [1, 2], "dave"),
        ("polymsg.publisher", "stored.before.listening", [0], "erin"),
    ]
