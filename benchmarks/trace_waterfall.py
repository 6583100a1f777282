"""Record a real trace across oslo.messaging and polymsg, draw it as a waterfall.

    python benchmarks/trace_waterfall.py [--url-rabbit URL] [--out docs/_static/trace.png]

On RabbitMQ: an oslo.messaging client (its tracing on) calls
``compute.build_instance`` on a polymsg server (``rabbit+kombu``); that
endpoint calls ``conductor.instance_update`` on an oslo.messaging server,
casts ``scheduler.select`` to a polymsg server on ``rabbit+pika``, and sends
a ``compute.instance.create.end`` notification to a polymsg listener. Every
span goes to the OpenTelemetry SDK's in-memory exporter; the picture is
drawn from the exported spans (one bar per span, indented by depth). The
RabbitMQ URL defaults to ``$POLYMSG_TEST_RABBIT_URL``. Needs oslo.messaging,
opentelemetry-sdk and matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Conductor:
    """The oslo.messaging service."""

    def instance_update(self, ctxt: Any, uuid: str) -> dict[str, str]:
        time.sleep(0.004)  # the work a real service does: a database write, say
        return {"uuid": uuid, "state": "building"}


class Scheduler:
    def __init__(self) -> None:
        self.done = threading.Event()

    def select(self, ctxt: Any, uuid: str) -> None:
        time.sleep(0.002)
        self.done.set()


class Audit:
    def __init__(self) -> None:
        self.done = threading.Event()

    def info(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any,
             metadata: Any) -> None:
        self.done.set()


class Compute:
    """The polymsg service: calls, casts and notifies while serving a call."""

    def __init__(self, conductor: Any, scheduler: Any, notifier: Any) -> None:
        self.conductor, self.scheduler, self.notifier = conductor, scheduler, notifier

    def build_instance(self, ctxt: dict[str, Any], uuid: str) -> Any:
        state = self.conductor.call({}, "instance_update", uuid=uuid)
        self.scheduler.cast({}, "select", uuid=uuid)
        self.notifier.info({}, "compute.instance.create.end", {"uuid": uuid})
        return state


def record(rabbit: str) -> list[Any]:
    """Run the scenario; the finished spans."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from oslo_config import cfg

    import polymsg
    from polymsg import _observability
    from polymsg._observe import GROUP

    om: Any = importlib.import_module("oslo_messaging")  # untyped: imported by name
    om_metrics = importlib.import_module("oslo_messaging._metrics.client")
    om_tracing = importlib.import_module("oslo_messaging._tracing.client")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "demo"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(om_tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(om_metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf.register_opts(_observability.OPTS, group=GROUP)
    conf.set_override("tracing_enabled", True, group="oslo_messaging_tracing")
    conf.set_override("tracing", True, group=GROUP)
    om.set_transport_defaults(f"trace-demo-{uuid.uuid4().hex[:6]}")

    oslo = om.get_rpc_transport(conf, url=rabbit)
    kombu = polymsg.get_transport(rabbit.replace("rabbit://", "rabbit+kombu://", 1), conf=conf)
    pika = polymsg.get_transport(rabbit.replace("rabbit://", "rabbit+pika://", 1), conf=conf)
    scheduler, audit = Scheduler(), Audit()
    compute = Compute(polymsg.RPCClient(kombu, polymsg.Target(topic="conductor"), timeout=30),
                      polymsg.RPCClient(kombu, polymsg.Target(topic="scheduler")),
                      polymsg.Notifier(kombu, "compute.host1", topics=["audit"]))
    servers = [
        om.get_rpc_server(oslo, om.Target(topic="conductor", server="host1"), [Conductor()]),
        polymsg.get_rpc_server(kombu, polymsg.Target(topic="compute", server="host1"),
                               [compute]),
        polymsg.get_rpc_server(pika, polymsg.Target(topic="scheduler", server="host1"),
                               [scheduler]),
        polymsg.get_notification_listener(pika, [polymsg.Target(topic="audit")], [audit]),
    ]
    for server in servers:
        server.start()
    try:
        client = om.get_rpc_client(oslo, om.Target(topic="compute"), timeout=30)
        client.call({}, "build_instance", uuid="0b3f")  # warm-up: connections, queues
        scheduler.done.wait(10)
        audit.done.wait(10)
        scheduler.done.clear()
        audit.done.clear()
        exporter.clear()
        client.call({}, "build_instance", uuid="9c1d")
        scheduler.done.wait(10)
        audit.done.wait(10)
        time.sleep(0.1)  # the consumer spans end just after the endpoints return
    finally:
        for server in servers:
            server.stop()
            server.wait()
        for transport in (kombu, pika, oslo):
            transport.cleanup()
    return list(exporter.get_finished_spans())


def draw(spans: list[Any], out: Path) -> None:
    """A waterfall of ``spans`` (one trace) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {s.context.span_id: s for s in spans}

    def depth(span: Any) -> int:
        parent = span.parent.span_id if span.parent else None
        return 0 if parent not in by_id else 1 + depth(by_id[parent])

    children: dict[int | None, list[Any]] = {}
    for span in sorted(spans, key=lambda s: s.start_time):
        parent = span.parent.span_id if span.parent else None
        children.setdefault(parent if parent in by_id else None, []).append(span)

    def tree(parent: int | None) -> list[Any]:  # depth first: each span above its children
        return [s for child in children.get(parent, [])
                for s in (child, *tree(child.context.span_id))]

    spans = tree(None)
    start = min(s.start_time for s in spans)
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(spans) + 1.1))
    colours = {"oslo.messaging": "#c0504d", "polymsg": "#4f81bd"}
    for row, span in enumerate(spans):
        begin, width = (span.start_time - start) / 1e6, (span.end_time - span.start_time) / 1e6
        ax.barh(row, max(width, 0.05), left=begin, height=0.6,
                color=colours.get(span.instrumentation_scope.name, "#999999"))
        system = span.attributes.get("messaging.system", "")
        label = f"{'   ' * depth(span)}{span.name}  [{span.kind.name.lower()}, {system}]"
        ax.text(-0.5, row, label, ha="left", va="center", fontsize=8, family="monospace",
                transform=ax.get_yaxis_transform())
        ax.text(begin + max(width, 0.05) + 0.1, row, f"{width:.2f} ms", va="center",
                fontsize=7)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the first span")
    trace_id = f"{spans[0].context.trace_id:032x}"
    ax.set_title(f"one trace ({trace_id}): red spans by oslo.messaging 18.3, blue by polymsg",
                 fontsize=9)
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url-rabbit", default=os.environ.get("POLYMSG_TEST_RABBIT_URL"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "_static" / "trace.png")
    args = parser.parse_args()
    if not args.url_rabbit:
        raise SystemExit("needs --url-rabbit or $POLYMSG_TEST_RABBIT_URL")
    spans = record(args.url_rabbit)
    traces = {s.context.trace_id for s in spans}
    if len(traces) != 1:
        raise SystemExit(f"expected one trace, got {len(traces)}")
    for span in sorted(spans, key=lambda s: s.start_time):
        parent = f"{span.parent.span_id:016x}" if span.parent else "-"
        print(f"{span.instrumentation_scope.name:<15} {span.name:<32} "
              f"span {span.context.span_id:016x} parent {parent}")
    draw(spans, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
