"""oslo.messaging and polymsg on quorum queues share one RabbitMQ 4 broker.

Both sides run with ``rabbit_quorum_queue`` and
``rabbit_transient_quorum_queue`` on (oslo.messaging in its
``[oslo_messaging_rabbit]`` group, polymsg through the URL), so they declare
the same queues with the same arguments: calls, casts, fanout casts and
notifications go both ways.
"""

from __future__ import annotations

import queue
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg
from oslo_context.context import RequestContext

import polymsg

from .conftest import DRIVERS, broker_url, list_queues

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # oslo.messaging imports eventlet, which warns
    import oslo_messaging as om
    from oslo_messaging import server as oslo_server
    from oslo_messaging import transport as oslo_transport
    from oslo_messaging._drivers import impl_rabbit
    from oslo_messaging._metrics import client as oslo_metrics
    from oslo_messaging._tracing import client as oslo_tracing
    from oslo_messaging.rpc import client as oslo_client

WAIT = 20.0
QUORUM = "rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true"


class Endpoint:
    def __init__(self, name: str, casts: queue.Queue[Any]) -> None:
        self.name = name
        self.casts = casts

    def echo(self, ctxt: Any, value: Any) -> Any:
        return {"value": value, "server": self.name}

    def note(self, ctxt: Any, value: Any) -> None:
        self.casts.put((self.name, value))


class Listener:
    def __init__(self) -> None:
        self.seen: queue.Queue[tuple[str, str, Any]] = queue.Queue()

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.put((publisher_id, event_type, payload))


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(oslo_tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(oslo_metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf.register_opts(oslo_client._client_opts)
    conf.register_opts(oslo_server._pool_opts)
    conf.register_opts(oslo_transport._transport_opts)
    conf.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_transient_quorum_queue", True, group="oslo_messaging_rabbit")
    conf.set_override("control_exchange", f"interop-{uuid.uuid4().hex[:8]}")
    return conf


@pytest.fixture
def oslo_rpc(conf: cfg.ConfigOpts, vhost: str) -> Iterator[Any]:
    transport = om.get_rpc_transport(conf, url=broker_url("rabbit", vhost))
    yield transport
    transport.cleanup()


@pytest.fixture
def oslo_notify(conf: cfg.ConfigOpts, vhost: str, oslo_rpc: Any) -> Iterator[Any]:
    transport = om.get_notification_transport(conf, url=broker_url("rabbit", vhost))
    yield transport
    transport.cleanup()


@pytest.fixture(params=DRIVERS)
def transport(request: pytest.FixtureRequest, conf: cfg.ConfigOpts, vhost: str,
              oslo_rpc: Any) -> Iterator[Any]:
    url = broker_url(request.param, vhost, QUORUM)
    with polymsg.get_transport(url, conf=conf) as transport:
        yield transport


@pytest.fixture
def topic() -> str:
    return f"interop-{uuid.uuid4().hex[:12]}"


def _take(casts: queue.Queue[Any], count: int) -> list[Any]:
    return sorted(casts.get(timeout=WAIT) for _ in range(count))


def _exercise(client: Any, casts: queue.Queue[Any]) -> None:
    assert client.call({}, "echo", value=[1, None])["value"] == [1, None]
    assert client.prepare(server="s2").call({}, "echo", value=1)["server"] == "s2"
    client.prepare(server="s1").cast({}, "note", value="pinned")
    assert _take(casts, 1) == [("s1", "pinned")]
    client.prepare(fanout=True).cast({}, "note", value="everyone")
    assert _take(casts, 2) == [("s1", "everyone"), ("s2", "everyone")]
    client.cast({}, "note", value="anyone")
    assert _take(casts, 1)[0][1] == "anyone"


def _quorum_queues(vhost: str, topic: str) -> None:
    queues = {name: q for name, q in list_queues(vhost).items() if name.startswith(topic)}
    assert {f"{topic}", f"{topic}.s1", f"{topic}.s2"} <= set(queues)
    assert all(q["type"] == "quorum" and q["durable"] == "true" for q in queues.values()), queues


def test_oslo_client_calls_polymsg_servers(oslo_rpc: Any, transport: Any, topic: str,
                                           vhost: str) -> None:
    casts: queue.Queue[Any] = queue.Queue()
    for name in ("s1", "s2"):
        polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server=name),
                               [Endpoint(name, casts)]).start()
    _exercise(om.get_rpc_client(oslo_rpc, om.Target(topic=topic), timeout=WAIT), casts)
    _quorum_queues(vhost, topic)


def test_polymsg_client_calls_oslo_servers(oslo_rpc: Any, transport: Any, topic: str,
                                           vhost: str) -> None:
    casts: queue.Queue[Any] = queue.Queue()
    servers = []
    for name in ("s1", "s2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server = om.get_rpc_server(oslo_rpc, om.Target(topic=topic, server=name),
                                       [Endpoint(name, casts)], executor="threading")
        server.start()
        servers.append(server)
    try:
        _exercise(polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT),
                  casts)
        _quorum_queues(vhost, topic)
    finally:
        for server in servers:
            server.stop()
            server.wait()


def test_notifications_both_ways(oslo_notify: Any, transport: Any, topic: str) -> None:
    theirs, ours = Listener(), Listener()
    oslo_listener = om.get_notification_listener(oslo_notify, [om.Target(topic=topic)],
                                                 [theirs])
    oslo_listener.start()
    try:
        polymsg.Notifier(transport, "polymsg.pub", topics=(topic,)).info({}, "made", [1])
        assert theirs.seen.get(timeout=WAIT) == ("polymsg.pub", "made", [1])
    finally:
        oslo_listener.stop()
        oslo_listener.wait()
    listener = polymsg.get_notification_listener(transport, [polymsg.Target(topic=topic)],
                                                 [ours])
    listener.start()
    try:
        om.Notifier(oslo_notify, "oslo.pub", driver="messagingv2", topics=[topic]).info(
            RequestContext(), "gone", {"id": 2})
        assert ours.seen.get(timeout=WAIT) == ("oslo.pub", "gone", {"id": 2})
    finally:
        listener.stop()
        listener.wait()
