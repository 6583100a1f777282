"""OpenTelemetry tracing and RPC metrics, with the SDK's in-memory exporter and
reader, on every transport."""
# ruff: noqa: F811 - the fixtures imported from observekit are test arguments

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from observekit import (  # noqa: F401
    SYSTEMS,
    Waiter,
    kind,
    observability_conf,
    sdk,
    topic,
    url,
)
from opentelemetry.trace import SpanKind, StatusCode

import polymsg
from polymsg import _observability, _observe

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@pytest.fixture
def exporter() -> Iterator[Any]:
    exporter, _ = sdk()
    exporter.clear()
    yield exporter
    _observability.reset()
    exporter.clear()


@pytest.fixture
def traced(tmp_path: Any, url: str, exporter: Any) -> Iterator[polymsg.Transport]:
    """A transport whose configuration turns tracing and metrics on."""
    conf = observability_conf(tmp_path, "[polymsg_observability]\ntracing = true\n"
                                        "metrics = true\n")
    with polymsg.get_transport(url, conf=conf) as transport:
        yield transport


def spans_of(exporter: Any, topic: str, count: int) -> list[Any]:
    """The finished spans about ``topic`` (waits for ``count`` of them)."""
    def about(spans: Any) -> list[Any]:
        return [s for s in spans
                if s.attributes.get("messaging.destination.name", "").startswith(topic)]

    found = about(exporter.wait(lambda spans: len(about(spans)) >= count))
    assert len(found) >= count, [s.name for s in found]
    return found


def one(spans: list[Any], name: str, **attributes: Any) -> Any:
    matching = [s for s in spans if s.name == name
                and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(matching) == 1, f"{name} {attributes}: {[(s.name, s.attributes) for s in spans]}"
    return matching[0]


class Front:
    """Serves ``front.hello`` by calling ``back.work``: a nested call."""

    def __init__(self, transport: polymsg.Transport, topic: str) -> None:
        self.back = polymsg.RPCClient(transport, polymsg.Target(topic=f"{topic}-back"),
                                      timeout=15)

    def hello(self, ctxt: dict[str, Any], name: str) -> Any:
        return self.back.call({}, "work", name=name)


class Back:
    def __init__(self) -> None:
        self.contexts = Waiter()

    def work(self, ctxt: dict[str, Any], name: str) -> str:
        self.contexts.add(ctxt)
        return f"hello {name}"

    @polymsg.expected_exceptions(KeyError)
    def expected(self, ctxt: dict[str, Any]) -> None:
        raise KeyError("no such thing")

    def boom(self, ctxt: dict[str, Any]) -> None:
        raise ValueError("boom")

    def slow(self, ctxt: dict[str, Any]) -> None:
        time.sleep(1.5)


def servers(transport: polymsg.Transport, topic: str, back: Back) -> tuple[Any, Any]:
    return (polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="a"),
                                   [Front(transport, topic)]),
            polymsg.get_rpc_server(transport, polymsg.Target(topic=f"{topic}-back",
                                                             server="b"), [back]))


def test_a_nested_call_is_one_trace(kind: str, traced: polymsg.Transport, topic: str,
                                    exporter: Any) -> None:
    back = Back()
    front_server, back_server = servers(traced, topic, back)
    with front_server, back_server:
        client = polymsg.RPCClient(traced, polymsg.Target(topic=topic), timeout=15)
        assert client.call({"request_id": "req-1"}, "hello", name="x") == "hello x"
    spans = spans_of(exporter, topic, 4)
    call = one(spans, f"call {topic}")
    process = one(spans, f"process {topic}")
    nested = one(spans, f"call {topic}-back")
    processed = one(spans, f"process {topic}-back")
    assert (call.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert len({s.context.trace_id for s in (call, process, nested, processed)}) == 1
    assert process.parent.span_id == call.context.span_id
    assert nested.parent.span_id == process.context.span_id
    assert processed.parent.span_id == nested.context.span_id
    assert dict(call.attributes) == {
        "messaging.system": SYSTEMS[kind], "messaging.operation.type": "send",
        "messaging.operation.name": "call", "messaging.destination.name": topic,
        "polymsg.target.exchange": traced.default_exchange, "rpc.method": "hello",
        "openstack.request_id": "req-1"}
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["polymsg.target.server"] == "a"
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    (ctxt,) = back.contexts.wait(1)
    assert TRACEPARENT.match(ctxt["traceparent"])  # the W3C header, as oslo.messaging sends it
    assert ctxt["traceparent"].split("-")[2] == f"{nested.context.span_id:016x}"


def test_failures_are_recorded_on_spans(traced: polymsg.Transport, topic: str,
                                        exporter: Any) -> None:
    back = Back()
    with polymsg.get_rpc_server(traced, polymsg.Target(topic=topic, server="b"), [back]):
        client = polymsg.RPCClient(traced, polymsg.Target(topic=topic), timeout=15)
        with pytest.raises(Exception) as raised:
            client.call({}, "boom")
        with pytest.raises(KeyError):
            client.call({}, "expected")
        started = time.monotonic()
        with pytest.raises(polymsg.MessagingTimeout):
            client.prepare(timeout=0.5).call({}, "slow")
        assert time.monotonic() - started < 5
    spans = spans_of(exporter, topic, 6)
    boom = one(spans, f"call {topic}", **{"rpc.method": "boom"})
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.attributes["error.type"] == type(raised.value).__name__ == "ValueError"
    served = one(spans, f"process {topic}", **{"rpc.method": "boom"})
    assert served.status.status_code is StatusCode.ERROR
    assert served.events[0].attributes["exception.type"] == "ValueError"
    expected = one(spans, f"process {topic}", **{"rpc.method": "expected"})
    assert expected.status.status_code is StatusCode.UNSET  # part of the contract
    assert expected.attributes["polymsg.expected_exception"] == "KeyError"
    slow = one(spans, f"call {topic}", **{"rpc.method": "slow"})
    assert slow.attributes["error.type"] == "MessagingTimeout"
    assert slow.status.status_code is StatusCode.ERROR


def test_casts_fanout_and_notifications_are_traced(kind: str, traced: polymsg.Transport,
                                                   topic: str, exporter: Any) -> None:
    back, got = Back(), Waiter()

    class Listener:
        def info(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any,
                 metadata: Any) -> None:
            got.add(ctxt)

    with polymsg.get_rpc_server(traced, polymsg.Target(topic=topic, server="b"), [back]), \
            polymsg.get_notification_listener(traced, [polymsg.Target(topic=f"{topic}-n")],
                                              [Listener()]):
        client = polymsg.RPCClient(traced, polymsg.Target(topic=topic))
        client.cast({}, "work", name="1")
        client.prepare(fanout=True).cast({}, "work", name="2")
        polymsg.Notifier(traced, "pub", topics=[f"{topic}-n"]).info({}, "thing.done", {})
        back.contexts.wait(2)
        got.wait(1)
    spans = spans_of(exporter, topic, 6)
    cast = one(spans, f"cast {topic}")
    fanout = one(spans, f"fanout {topic}")
    notify = one(spans, f"notify {topic}-n")
    assert {s.kind for s in (cast, fanout, notify)} == {SpanKind.PRODUCER}
    assert notify.attributes["polymsg.notification.event_type"] == "thing.done"
    assert notify.attributes["polymsg.notification.priority"] == "INFO"
    assert notify.attributes["messaging.system"] == SYSTEMS[kind]
    consumed = [s for s in spans if s.name == f"process {topic}"]
    assert {s.parent.span_id for s in consumed} == {cast.context.span_id,
                                                   fanout.context.span_id}
    listened = one(spans, f"process {topic}-n")
    assert listened.parent.span_id == notify.context.span_id
    assert listened.attributes["messaging.system"] == SYSTEMS[kind]


def test_off_unless_configured(url: str, exporter: Any, topic: str) -> None:
    with polymsg.get_transport(url) as transport:
        assert _observe.OBSERVERS == ()
        back = Back()
        with polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="b"), [back]):
            polymsg.RPCClient(transport, polymsg.Target(topic=topic),
                              timeout=15).call({}, "work", name="x")
        (ctxt,) = back.contexts.wait(1)
    assert "traceparent" not in ctxt
    assert exporter.get_finished_spans() == ()


def _points(reader: Any, name: str, topic: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [p for p in metric.data.data_points
                              if p.attributes.get("topic") == topic]
    return found


def test_rpc_metrics_have_oslo_metrics_names(traced: polymsg.Transport, topic: str) -> None:
    _, reader = sdk()
    back = Back()
    with polymsg.get_rpc_server(traced, polymsg.Target(topic=topic, server="b"), [back]):
        client = polymsg.RPCClient(traced, polymsg.Target(topic=topic, version="1.0"),
                                   timeout=15)
        client.call({}, "work", name="x")
        client.cast({}, "work", name="y")
        with pytest.raises(ValueError):
            client.call({}, "boom")
        with pytest.raises(KeyError):
            client.call({}, "expected")
        back.contexts.wait(2)
    prefix = "oslo_messaging_rpc_client_"
    starts = {(p.attributes["method"], p.attributes["call_type"]): p.value
              for p in _points(reader, prefix + "invocation_start_total", topic)}
    assert starts == {("work", "call"): 1, ("work", "cast"): 1, ("boom", "call"): 1,
                      ("expected", "call"): 1}
    (ended,) = [p for p in _points(reader, prefix + "invocation_end_total", topic)
                if p.attributes["call_type"] == "call"]
    assert dict(ended.attributes) == {
        "call_type": "call", "exchange": traced.default_exchange, "topic": topic,
        "namespace": "None", "version": "1.0", "server": "None", "fanout": "False",
        "method": "work"}
    failed = {p.attributes["exception"]: p.value
              for p in _points(reader, prefix + "exception_total", topic)}
    assert failed == {"ValueError": 1, "KeyError": 1}  # the client cannot tell expected ones
    (seconds,) = [p for p in _points(reader, prefix + "processing_seconds", topic)
                  if p.attributes["call_type"] == "call"]
    assert seconds.count == 1 and seconds.explicit_bounds[0] == 0.01
    server = {p.attributes["method"]: p.value
              for p in _points(reader, "oslo_messaging_rpc_server_invocation_start_total",
                               topic)}
    assert server == {"work": 2, "boom": 1, "expected": 1}
    (failed,) = _points(reader, "oslo_messaging_rpc_server_exception_total", topic)
    assert failed.attributes["server"] == "b" and failed.attributes["exception"] == "ValueError"
    ended = {p.attributes["method"]: p.value
             for p in _points(reader, "oslo_messaging_rpc_server_invocation_end_total", topic)}
    assert ended == {"work": 2, "expected": 1}  # an expected exception ends it normally


def test_oslo_messagings_option_names_turn_it_on(tmp_path: Any, exporter: Any) -> None:
    from polymsg.compat import oslo_messaging as messaging

    conf = observability_conf(tmp_path, "[oslo_messaging_tracing]\ntracing_enabled = true\n"
                                        "[oslo_messaging_metrics]\nmetrics_enabled = true\n")
    transport = messaging.get_rpc_transport(conf, url="memory://compat-otel")
    try:
        assert {type(o).__name__ for o in _observe.OBSERVERS} == {
            "TracingObserver", "RPCMetricsObserver"}
    finally:
        transport.cleanup()


def test_each_notification_of_a_batch_has_its_span(kind: str, traced: polymsg.Transport,
                                                   topic: str, exporter: Any) -> None:
    got = Waiter()

    class BatchEndpoint:
        def info(self, messages: list[dict[str, Any]]) -> None:
            got.add(len(messages))
            raise ValueError("batch failed")

    listener = polymsg.get_batch_notification_listener(
        traced, [polymsg.Target(topic=topic)], [BatchEndpoint()], batch_size=2,
        batch_timeout=5)
    with listener:
        notifier = polymsg.Notifier(traced, "pub", topics=[topic])
        notifier.info({}, "one", {})
        notifier.info({}, "two", {})
        assert sum(got.wait(1)) >= 1
        spans = spans_of(exporter, topic, 4)
    sent = {s.attributes["polymsg.notification.event_type"]: s
            for s in spans if s.kind is SpanKind.PRODUCER}
    processed = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert {s.parent.span_id for s in processed} == {sent["one"].context.span_id,
                                                    sent["two"].context.span_id}
    assert {s.attributes["messaging.system"] for s in processed} == {SYSTEMS[kind]}
    assert all(s.attributes["error.type"] == "ValueError" for s in processed)
