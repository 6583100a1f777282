"""``polymsg serve-echo --trace`` and ``listen --trace`` on RabbitMQ: the trace id of a
request sent by the real oslo.messaging with its OpenTelemetry tracing on, and of a
notification whose context carries a traceparent."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from typing import Any

import pytest
from amqptest import make_url, shared_conf
from click.testing import CliRunner, Result
from oslo_config import cfg

import polymsg
from polymsg import cli

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # oslo.messaging imports eventlet, which warns
    pytest.importorskip("oslo_messaging._tracing", reason="oslo.messaging < 18.3 has no tracing")
    import oslo_messaging as om
    from oslo_messaging._tracing import client as oslo_tracing

pytestmark = pytest.mark.skipif(
    os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4"),
    reason="oslo.messaging's defaults are refused by RabbitMQ 4 with 4.3's denials")

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=True)


def oslo_conf(exchange: str) -> cfg.ConfigOpts:
    conf = shared_conf(exchange, oslo_options_first=True)
    conf.set_override("tracing_enabled", True, group="oslo_messaging_tracing")
    return conf


class Nothing:
    def ping(self, ctxt: Any) -> None:
        raise AssertionError("only declares the queues")


def test_serve_echo_shows_the_trace_of_an_oslo_traced_cast(
        scheme: str, vhost: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # oslo.messaging's tracer, on a provider of this test's own (not the global one)
    monkeypatch.setattr(oslo_tracing, "_TRACER", provider.get_tracer("oslo.messaging"))
    exchange = f"trace-{uuid.uuid4().hex[:8]}"
    url = make_url(scheme, vhost)
    target = polymsg.Target(topic=topic, server="s1", exchange=exchange)
    # declare the server's queues, then go
    with polymsg.get_transport(url) as transport, \
            polymsg.get_rpc_server(transport, target, [Nothing()]):
        pass
    conf = oslo_conf(exchange)
    oslo = om.get_rpc_transport(conf, url=make_url("rabbit", vhost))
    try:
        om.get_rpc_client(oslo, om.Target(topic=topic, server="s1")).cast(
            {"user": "u1"}, "ping")
    finally:
        oslo.cleanup()
    [span] = exporter.get_finished_spans()
    trace_id = f"{span.context.trace_id:032x}"
    result = run("serve-echo", url, topic, "s1", "--exchange", exchange, "--trace",
                 "--max-requests", "1")
    assert result.exit_code == 0, result.output
    assert f"trace={trace_id} ping" in result.output


class Info:
    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        raise AssertionError("only declares the pool's queue")


def test_listen_trace_on_rabbitmq(scheme: str, vhost: str, topic: str) -> None:
    url = make_url(scheme, vhost)
    with polymsg.get_transport(url) as transport:
        # the pool's queue exists before anything is sent (store and forward)
        with polymsg.get_notification_listener(
                transport, [polymsg.Target(topic=topic)], [Info()], pool="trace-test"):
            pass
        notifier = polymsg.Notifier(transport, "tracer", topics=(topic,))
        notifier.info({"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}, "a.b", 1)
        notifier.info({"traceparent": "00-bogus"}, "a.b", 2)
    result = run("listen", url, topic, "--trace", "--json", "--count", "2",
                 "--pool", "trace-test")
    assert result.exit_code == 0, result.output
    traces = [json.loads(line)["trace"] for line in result.output.splitlines()
              if line.startswith("{")]
    assert traces == [{"trace_id": TRACE_ID, "span_id": SPAN_ID, "sampled": True},
                      {"invalid": "'00-bogus'"}]
