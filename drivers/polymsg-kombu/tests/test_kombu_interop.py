"""polymsg and the real oslo.messaging on one broker: they call and notify each other."""

from __future__ import annotations

import os
import queue
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg
from oslo_context.context import RequestContext

import polymsg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # oslo.messaging imports eventlet, which warns
    import oslo_messaging as om
    from oslo_messaging import server as oslo_server
    from oslo_messaging import transport as oslo_transport
    from oslo_messaging._metrics import client as oslo_metrics
    from oslo_messaging._tracing import client as oslo_tracing
    from oslo_messaging.rpc import client as oslo_client

# oslo.messaging on its defaults declares non-durable non-exclusive queues, which
# a RabbitMQ 4 node with 4.3's denials refuses; tests/rabbit4/test_rabbit4_oslo.py
# covers both drivers with oslo.messaging on quorum queues there.
pytestmark = pytest.mark.skipif(
    os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4"),
    reason="oslo.messaging's defaults are refused by RabbitMQ 4 with 4.3's denials")

WAIT = 10.0


class Endpoint:
    """Served by both libraries: records casts, answers calls, raises on demand."""

    def __init__(self, name: str, casts: queue.Queue[Any]) -> None:
        self.name = name
        self.casts = casts

    def echo(self, ctxt: Any, value: Any) -> Any:
        return {"value": value, "server": self.name, "user": dict(ctxt).get("user")}

    def fail(self, ctxt: Any, text: str) -> None:
        raise ValueError(text)

    def note(self, ctxt: Any, value: Any) -> None:
        self.casts.put((self.name, value))


class Listener:
    """A notification endpoint for both libraries."""

    def __init__(self) -> None:
        self.seen: queue.Queue[tuple[str, str, Any, str]] = queue.Queue()

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.put((publisher_id, event_type, payload, dict(ctxt).get("user")))


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    """One ConfigOpts for both libraries, so both read the same control_exchange."""
    conf = cfg.ConfigOpts()
    conf([])
    # oslo.messaging 18 registers these on the global CONF only.
    conf.register_opts(oslo_tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(oslo_metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    # oslo.messaging refuses options of the same name registered first by
    # polymsg; polymsg reuses an existing twin (a service migrating between
    # the two has exactly this configuration).
    conf.register_opts(oslo_client._client_opts)
    conf.register_opts(oslo_server._pool_opts)
    conf.register_opts(oslo_transport._transport_opts)
    conf.set_override("control_exchange", f"interop-{uuid.uuid4().hex[:8]}")
    return conf


@pytest.fixture
def oslo_rpc(conf: cfg.ConfigOpts, oslo_url: str) -> Iterator[Any]:
    transport = om.get_rpc_transport(conf, url=oslo_url)
    yield transport
    transport.cleanup()


@pytest.fixture
def oslo_notify(conf: cfg.ConfigOpts, oslo_url: str, oslo_rpc: Any) -> Iterator[Any]:
    transport = om.get_notification_transport(conf, url=oslo_url)
    yield transport
    transport.cleanup()


@pytest.fixture
def transport(conf: cfg.ConfigOpts, rabbit_url: str, oslo_rpc: Any) -> Iterator[Any]:
    with polymsg.get_transport(rabbit_url, conf=conf) as transport:
        assert transport.default_exchange == conf.control_exchange
        yield transport


@pytest.fixture
def topic() -> str:
    return f"interop-{uuid.uuid4().hex[:12]}"


def _polymsg_servers(transport: Any, topic: str, casts: queue.Queue[Any]) -> None:
    for name in ("s1", "s2"):
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server=name),
                                        [Endpoint(name, casts)])
        server.start()  # stopped by the transport's cleanup


def _oslo_servers(transport: Any, topic: str, casts: queue.Queue[Any]) -> list[Any]:
    servers = []
    for name in ("s1", "s2"):
        server = om.get_rpc_server(transport, om.Target(topic=topic, server=name),
                                   [Endpoint(name, casts)])
        server.start()
        servers.append(server)
    return servers


def _take(casts: queue.Queue[Any], count: int) -> list[Any]:
    return sorted(casts.get(timeout=WAIT) for _ in range(count))


def _exercise(client: Any, casts: queue.Queue[Any], prepare: Any) -> None:
    """The same checks through an oslo or a polymsg client (``prepare`` differs)."""
    reply = client.call({"user": "alice"}, "echo", value=[1, {"a": "b"}, None])
    assert reply["value"] == [1, {"a": "b"}, None] and reply["user"] == "alice"
    assert prepare(client, server="s2").call({}, "echo", value=1)["server"] == "s2"
    with pytest.raises(ValueError, match="refused remotely"):
        client.call({}, "fail", text="refused remotely")
    prepare(client, server="s1").cast({}, "note", value="pinned")
    assert _take(casts, 1) == [("s1", "pinned")]
    prepare(client, fanout=True).cast({}, "note", value="everyone")
    assert _take(casts, 2) == [("s1", "everyone"), ("s2", "everyone")]
    client.cast({}, "note", value="anyone")
    assert _take(casts, 1)[0][1] == "anyone"


def test_oslo_client_calls_polymsg_server(oslo_rpc: Any, transport: Any, topic: str) -> None:
    casts: queue.Queue[Any] = queue.Queue()
    _polymsg_servers(transport, topic, casts)
    client = om.get_rpc_client(oslo_rpc, om.Target(topic=topic), timeout=WAIT)
    _exercise(client, casts, lambda c, **kw: c.prepare(**kw))


def test_polymsg_client_calls_oslo_server(oslo_rpc: Any, transport: Any, topic: str) -> None:
    casts: queue.Queue[Any] = queue.Queue()
    servers = _oslo_servers(oslo_rpc, topic, casts)
    try:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        _exercise(client, casts, lambda c, **kw: c.prepare(**kw))
    finally:
        for server in servers:
            server.stop()
            server.wait()


def test_oslo_notifier_reaches_polymsg_listener(oslo_notify: Any, transport: Any,
                                                topic: str) -> None:
    endpoint = Listener()
    listener = polymsg.get_notification_listener(transport, [polymsg.Target(topic=topic)],
                                                 [endpoint])
    listener.start()
    try:
        notifier = om.Notifier(oslo_notify, "oslo.publisher", driver="messagingv2",
                               topics=[topic])
        # oslo.messaging's Notifier drops plain-dict contexts; it sends a
        # RequestContext's fields (user, project_id, request_id...).
        notifier.info(RequestContext(user_id="carol"), "thing.created", {"id": 1})
        assert endpoint.seen.get(timeout=WAIT) == ("oslo.publisher", "thing.created", {"id": 1},
                                                   "carol")
    finally:
        listener.stop()
        listener.wait()


def test_polymsg_notifier_reaches_oslo_listener(oslo_notify: Any, transport: Any,
                                                topic: str) -> None:
    endpoint = Listener()
    listener = om.get_notification_listener(oslo_notify, [om.Target(topic=topic)], [endpoint])
    listener.start()
    try:
        notifier = polymsg.Notifier(transport, "polymsg.publisher", topics=(topic,))
        notifier.info({"user": "dave"}, "thing.deleted", [1, 2])
        assert endpoint.seen.get(timeout=WAIT) == ("polymsg.publisher", "thing.deleted", [1, 2],
                                                   "dave")
    finally:
        listener.stop()
        listener.wait()


def test_notification_sent_before_oslo_listener_starts_is_stored(
        oslo_notify: Any, transport: Any, topic: str) -> None:
    polymsg.Notifier(transport, "early", topics=(topic,)).info({}, "stored", "payload")
    endpoint = Listener()
    listener = om.get_notification_listener(oslo_notify, [om.Target(topic=topic)], [endpoint])
    listener.start()
    try:
        assert endpoint.seen.get(timeout=WAIT)[:3] == ("early", "stored", "payload")
    finally:
        listener.stop()
        listener.wait()
