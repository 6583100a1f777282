"""rabbit+pika and the real oslo.messaging on one broker: RPC both ways,
notifications both ways."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg
from rabbit import FAST_RETRY, url

import polymsg
from polymsg.testing import Recorder

om = pytest.importorskip("oslo_messaging", reason="oslo.messaging is a test dependency")

# oslo.messaging on its defaults declares non-durable non-exclusive queues, which
# a RabbitMQ 4 node with 4.3's denials refuses; tests/rabbit4/test_rabbit4_oslo.py
# covers both drivers with oslo.messaging on quorum queues there.
pytestmark = pytest.mark.skipif(
    os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4"),
    reason="oslo.messaging's defaults are refused by RabbitMQ 4 with 4.3's denials")

WAIT = 20.0


def _oslo_conf(exchange: str) -> cfg.ConfigOpts:
    """A private ConfigOpts oslo.messaging 18 runs on (it registers its tracing and
    metrics options on the global CONF only)."""
    from oslo_messaging import transport as oslo_transport
    from oslo_messaging._metrics import client as metrics
    from oslo_messaging._tracing import client as tracing

    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf.register_opts(oslo_transport._transport_opts)
    conf.set_override("control_exchange", exchange)
    return conf


class Endpoint:
    """Served by both libraries' servers; records casts and notifications."""

    def __init__(self, name: str, seen: Recorder | None = None) -> None:
        self.name = name
        self.seen = seen or Recorder()

    def echo(self, ctxt: Any, value: Any) -> Any:
        return {"value": value, "server": self.name, "ctxt_user": ctxt.get("user")}

    def note(self, ctxt: Any, value: Any) -> None:
        self.seen.add((self.name, value))

    def fail(self, ctxt: Any, message: str) -> None:
        raise ValueError(message)

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.add((publisher_id, event_type, payload))


@pytest.fixture
def exchange() -> str:
    return f"interop-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic() -> str:
    return f"oslo-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pika_transport(vhost: str, exchange: str) -> Iterator[polymsg.Transport]:
    # oslo.messaging services share one control exchange; polymsg's must be the
    # same one for its RPC names to be oslo.messaging's.
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("control_exchange", default=exchange)])
    conf([])
    transport = polymsg.get_transport(url("rabbit+pika", vhost, FAST_RETRY), conf=conf)
    yield transport
    transport.cleanup()


@pytest.fixture
def oslo_url(vhost: str) -> str:
    return url("rabbit", vhost)


@pytest.fixture
def oslo_rpc(oslo_url: str, exchange: str) -> Iterator[Any]:
    transport = om.get_rpc_transport(_oslo_conf(exchange), url=oslo_url)
    yield transport
    transport.cleanup()


@pytest.fixture
def oslo_notifications(oslo_url: str, exchange: str) -> Iterator[Any]:
    transport = om.get_notification_transport(_oslo_conf(exchange), url=oslo_url)
    yield transport
    transport.cleanup()


def _oslo_server(transport: Any, target: Any, endpoints: list[Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return om.get_rpc_server(transport, target, endpoints, executor="threading")


def test_oslo_client_calls_a_polymsg_server(pika_transport: polymsg.Transport, oslo_rpc: Any,
                                           exchange: str, topic: str) -> None:
    seen = Recorder()
    servers = {name: Endpoint(name, seen) for name in ("s1", "s2")}
    runners = [polymsg.get_rpc_server(pika_transport, polymsg.Target(topic=topic, server=name),
                                      [endpoint]) for name, endpoint in servers.items()]
    client = om.get_rpc_client(oslo_rpc, om.Target(topic=topic, exchange=exchange),
                               timeout=WAIT)
    for runner in runners:
        runner.start()
    try:
        reply = client.call({"user": "u1"}, "echo", value=[1, {"a": None}])
        assert reply["value"] == [1, {"a": None}] and reply["ctxt_user"] == "u1"
        assert client.prepare(server="s2").call({}, "echo", value=2)["server"] == "s2"
        with pytest.raises(ValueError, match="from polymsg"):
            client.call({}, "fail", message="from polymsg")
        client.cast({}, "note", value="cast")
        client.prepare(fanout=True).cast({}, "note", value="fanout")
        events = seen.wait_for_count(3, WAIT)
        assert sorted(value for _, value in events) == ["cast", "fanout", "fanout"]
        assert {name for name, value in events if value == "fanout"} == {"s1", "s2"}
    finally:
        for runner in runners:
            runner.stop()
            runner.wait()


def test_polymsg_client_calls_an_oslo_server(pika_transport: polymsg.Transport, oslo_rpc: Any,
                                            exchange: str, topic: str) -> None:
    endpoint = Endpoint("oslo")
    server = _oslo_server(oslo_rpc, om.Target(topic=topic, server="o1", exchange=exchange),
                          [endpoint])
    server.start()
    try:
        client = polymsg.RPCClient(pika_transport, polymsg.Target(topic=topic), timeout=WAIT)
        reply = client.call({"user": "u2"}, "echo", value="hello oslo")
        assert reply == {"value": "hello oslo", "server": "oslo", "ctxt_user": "u2"}
        assert client.prepare(server="o1").call({}, "echo", value=3)["value"] == 3
        with pytest.raises(ValueError, match="from oslo"):
            client.call({}, "fail", message="from oslo")
        client.cast({}, "note", value="cast")
        client.prepare(fanout=True).cast({}, "note", value="fanout")
        events = endpoint.seen.wait_for_count(2, WAIT)
        assert sorted(value for _, value in events) == ["cast", "fanout"]
    finally:
        server.stop()
        server.wait()


def test_oslo_notifier_reaches_a_polymsg_listener(
        pika_transport: polymsg.Transport, oslo_notifications: Any, topic: str) -> None:
    endpoint = Endpoint("listener")
    notifier = om.Notifier(oslo_notifications, "oslo.publisher", driver="messagingv2",
                           topics=[topic])
    notifier.info({}, "stored.before.listening", {"n": 1})
    listener = polymsg.get_notification_listener(pika_transport,
                                                 [polymsg.Target(topic=topic)], [endpoint])
    with listener:
        notifier.info({}, "live", {"n": 2})
        events = endpoint.seen.wait_for_count(2, WAIT)
    assert sorted(events, key=lambda e: e[1]) == [
        ("oslo.publisher", "live", {"n": 2}),
        ("oslo.publisher", "stored.before.listening", {"n": 1}),
    ]


def test_polymsg_notifier_reaches_an_oslo_listener(
        pika_transport: polymsg.Transport, oslo_notifications: Any, exchange: str,
        topic: str) -> None:
    endpoint = Endpoint("oslo-listener")
    polymsg.Notifier(pika_transport, "polymsg.publisher", topics=(topic,)).info(
        {"user": "u3"}, "stored.before.listening", {"n": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        listener = om.get_notification_listener(
            oslo_notifications, [om.Target(topic=topic, exchange=exchange)], [endpoint],
            executor="threading")
    listener.start()
    try:
        polymsg.Notifier(pika_transport, "polymsg.publisher", topics=(topic,)).info(
            {}, "live", {"n": 2})
        events = endpoint.seen.wait_for_count(2, WAIT)
    finally:
        listener.stop()
        listener.wait()
    assert sorted(events, key=lambda e: e[1]) == [
        ("polymsg.publisher", "live", {"n": 2}),
        ("polymsg.publisher", "stored.before.listening", {"n": 1}),
    ]
