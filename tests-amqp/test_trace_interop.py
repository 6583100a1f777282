"""Traces cross oslo.messaging and polymsg services on RabbitMQ, both ways.

An oslo.messaging client (its tracing on) calls a polymsg server, whose
endpoint calls an oslo.messaging server: one trace, each span the child of
the one before, through ``_context_traceparent`` on the wire.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from amqptest import FAST_RETRY, make_url, shared_conf
from oslo_config import cfg

import polymsg
from polymsg import _observability
from polymsg._observe import GROUP
from polymsg.testing._spans import span_exporter

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is a test dependency")

_OSLO_CLASSIC = pytest.mark.skipif(
    os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4"),
    reason="oslo.messaging's classic reply queues are refused by RabbitMQ 4 with 4.3's denials")

@pytest.fixture
def exporter() -> Iterator[Any]:
    """The in-memory exporter of the process's global tracer provider (set once);
    oslo.messaging reuses a configured provider, as polymsg does."""
    exported = span_exporter()
    exported.clear()
    yield exported
    _observability.reset()


@pytest.fixture
def conf(vhost: str, exporter: Any) -> cfg.ConfigOpts:
    """One ConfigOpts for both libraries, tracing on in both."""
    om = pytest.importorskip("oslo_messaging", reason="oslo.messaging is a test dependency")
    conf = shared_conf(f"trace-{uuid.uuid4().hex[:8]}")
    conf.register_opts(_observability.OPTS, group=GROUP)
    conf.set_override("tracing_enabled", True, group="oslo_messaging_tracing")
    conf.set_override("tracing", True, group=GROUP)
    om.get_rpc_transport(conf, url=make_url("rabbit", vhost)).cleanup()  # registers its options
    return conf


class Leaf:
    """The oslo.messaging service's endpoint."""

    def leaf(self, ctxt: Any, name: str) -> dict[str, Any]:
        return {"name": name, "traceparent": ctxt.get("traceparent")}


class Relay:
    """The polymsg service's endpoint: calls the oslo.messaging service."""

    def __init__(self, client: polymsg.RPCClient) -> None:
        self.client = client

    def relay(self, ctxt: dict[str, Any], name: str) -> Any:
        return self.client.call({}, "leaf", name=name)


def _spans(exporter: Any, count: int) -> dict[tuple[str, str], Any]:
    """``(instrumentation scope, span name) -> span``, once ``count`` ended."""
    spans = exporter.wait(lambda spans: len(spans) >= count)
    return {(s.instrumentation_scope.name, s.name): s for s in spans}


@_OSLO_CLASSIC
def test_a_trace_continues_from_oslo_to_polymsg_and_back(conf: cfg.ConfigOpts, scheme: str,
                                                          vhost: str, topic: str,
                                                          exporter: Any) -> None:
    import oslo_messaging as om

    oslo_transport = om.get_rpc_transport(conf, url=make_url("rabbit", vhost))
    transport = polymsg.get_transport(make_url(scheme, vhost, FAST_RETRY), conf=conf)
    leaf_topic = f"{topic}-leaf"
    oslo_server = om.get_rpc_server(oslo_transport, om.Target(topic=leaf_topic, server="o1"),
                                    [Leaf()])
    relay = Relay(polymsg.RPCClient(transport, polymsg.Target(topic=leaf_topic), timeout=30))
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="p1"),
                                    [relay])
    oslo_server.start()
    server.start()
    try:
        client = om.get_rpc_client(oslo_transport, om.Target(topic=topic), timeout=30)
        reply = client.call({}, "relay", name="x")
    finally:
        server.stop()
        server.wait()
        oslo_server.stop()
        oslo_server.wait()
        transport.cleanup()
        oslo_transport.cleanup()
    assert reply["name"] == "x"
    spans = _spans(exporter, 4)
    oslo_call = spans["oslo.messaging", f"{topic}.relay"]
    served = spans["polymsg", f"process {topic}"]
    nested = spans["polymsg", f"call {leaf_topic}"]
    oslo_served = spans["oslo.messaging", "leaf receive"]
    trace_ids = {s.context.trace_id for s in (oslo_call, served, nested, oslo_served)}
    assert len(trace_ids) == 1, "one trace from the oslo client to the oslo server"
    assert served.parent.span_id == oslo_call.context.span_id  # oslo -> polymsg
    assert nested.parent.span_id == served.context.span_id
    assert oslo_served.parent.span_id == nested.context.span_id  # polymsg -> oslo
    assert reply["traceparent"].split("-")[1:3] == [f"{nested.context.trace_id:032x}",
                                                    f"{nested.context.span_id:016x}"]
    assert served.attributes["messaging.system"] == "rabbitmq"
