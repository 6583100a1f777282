"""What tracing and RPC metrics cost per call: off, on, side by side in one run.

    python benchmarks/bench_observe.py [--only memory,kombu] [--calls 4000] [--rounds 5]
                                       [--baseline-rev 5652bda] [--url-rabbit URL]
                                       [--rst docs/observability_bench.inc]

For each transport, sequential calls from one client to a server in the
same process (both sides' observers are paid for), in these modes, each in
a fresh child process, the modes taking turns round after round:

* ``baseline``: the code of ``--baseline-rev`` (before the observer hook
  existed), exported with ``git archive``; skipped without the option;
* ``off``: this checkout, nothing configured (the shipped default);
* ``tracing``: ``[polymsg_observability] tracing = true``, the OpenTelemetry
  SDK's tracer provider with a batch span processor and an exporter that
  drops the spans (what a service pays on its own threads);
* ``metrics``: ``metrics = true``, the SDK's meter provider with an in-memory
  reader;
* ``both``: tracing and metrics.

Each figure is the best of ``--rounds`` rounds (the least disturbed by a
busy machine): wall-clock microseconds per call (and the worst round, to
show the noise) and calls/s, then the CPU
time of the process per call (all its threads: client, server, driver) and
the cost of each mode over ``off`` in CPU microseconds per call, the figure
least moved by other processes on the machine.
The RabbitMQ URL defaults to ``$POLYMSG_TEST_RABBIT_URL``. Not a test: run it
by hand, on a machine as quiet as can be.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

MODES = ("baseline", "off", "tracing", "metrics", "both")
ROOT = Path(__file__).resolve().parent.parent


class Echo:
    def echo(self, ctxt: Any, x: Any) -> Any:
        return x


def _sdk(mode: str) -> None:
    """Install the OpenTelemetry SDK providers the mode pays for."""
    if mode in ("tracing", "both"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
    if mode in ("metrics", "both"):
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def child(mode: str, url: str, calls: int) -> dict[str, float]:
    """One measurement, in this (child) process."""
    from oslo_config import cfg

    import polymsg

    _sdk(mode)
    conf = cfg.ConfigOpts()
    if mode in ("tracing", "metrics", "both"):
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write("[polymsg_observability]\n"
                    f"tracing = {mode in ('tracing', 'both')}\n"
                    f"metrics = {mode in ('metrics', 'both')}\n")
        conf(["--config-file", f.name])
        os.unlink(f.name)
    else:
        conf([])
    topic = f"bench-observe-{uuid.uuid4().hex[:8]}"
    with polymsg.get_transport(url, conf=conf) as transport, polymsg.get_rpc_server(
            transport, polymsg.Target(topic=topic, server="s"), [Echo()]):
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=30)
        for i in range(min(500, calls)):  # warm-up: connections, caches
            client.call({}, "echo", x=i)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(calls):
            client.call({"request_id": "req"}, "echo", x=i)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"us_per_call": elapsed / calls * 1e6, "calls_per_s": calls / elapsed,
            "cpu_us_per_call": cpu / calls * 1e6,
            "hook": float(os.path.exists(Path(polymsg.__file__).parent / "_observe.py"))}


def _baseline(rev: str) -> Path:
    """The core package as of ``rev``, exported to a temporary directory."""
    where = Path(tempfile.mkdtemp(prefix="bench-observe-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "polymsg"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def _run_child(mode: str, url: str, calls: int, baseline: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if mode == "baseline" and baseline is not None:
        env["PYTHONPATH"] = f"{baseline}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--calls", str(calls)],
        check=True, capture_output=True, text=True, env=env, timeout=600, cwd=str(ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _urls(only: list[str], rabbit: str | None) -> dict[str, str]:
    urls: dict[str, str] = {}
    for name in only:
        if name == "memory":
            urls[name] = f"memory://bench-observe-{uuid.uuid4().hex[:6]}"
        elif name in ("kombu", "pika"):
            if not rabbit:
                print(f"{name}: skipped, no --url-rabbit / $POLYMSG_TEST_RABBIT_URL")
                continue
            urls[name] = rabbit.replace("rabbit://", f"rabbit+{name}://", 1)
        else:
            raise SystemExit(f"unknown transport {name!r} (memory, kombu, pika)")
    return urls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="memory,kombu")
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-rev", default=None)
    parser.add_argument("--url-rabbit", default=os.environ.get("POLYMSG_TEST_RABBIT_URL"))
    parser.add_argument("--rst", type=Path, default=None,
                        help="also write the figures as a reST table to this file")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.url, args.calls)))
        return
    baseline = _baseline(args.baseline_rev) if args.baseline_rev else None
    try:
        _measure_all(args, baseline)
    finally:
        if baseline is not None:
            shutil.rmtree(baseline, ignore_errors=True)


def _measure_all(args: argparse.Namespace, baseline: Path | None) -> None:
    modes = [m for m in MODES if m != "baseline" or baseline is not None]
    print(f"{'transport':<9} {'mode':<9} {'us/call':>9} {'worst':>7} {'calls/s':>9} "
          f"{'CPU us/call':>12} {'CPU cost':>9}")
    rows: list[tuple[str, str, float, float, float, float]] = []
    for name, url in _urls(args.only.split(","), args.url_rabbit).items():
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                run = _run_child(mode, url, args.calls, baseline)
                if (mode == "baseline") == bool(run["hook"]):
                    raise SystemExit(f"{mode}: the child imported the wrong polymsg")
                runs[mode].append(run)
        best = {m: min(r["us_per_call"] for r in runs[m]) for m in modes}
        cpu = {m: min(r["cpu_us_per_call"] for r in runs[m]) for m in modes}
        worst = {m: max(r["us_per_call"] for r in runs[m]) for m in modes}
        for mode in modes:
            cost = cpu[mode] - cpu["off"]
            print(f"{name:<9} {mode:<9} {best[mode]:>9.1f} {worst[mode]:>7.0f} "
                  f"{1e6 / best[mode]:>9.0f} {cpu[mode]:>12.1f} {cost:>+9.1f}")
            rows.append((name, mode, best[mode], worst[mode], cpu[mode], cost))
    if args.rst:
        args.rst.write_text(_rst(rows))
        print(f"wrote {args.rst}")


def _rst(rows: list[tuple[str, str, float, float, float, float]]) -> str:
    """The figures as a reST list-table (docs/observability_bench.inc)."""
    lines = [".. list-table::", "   :header-rows: 1", "",
             "   * - transport", "     - mode", "     - µs per call (best)",
             "     - worst round", "     - calls/s", "     - CPU µs per call",
             "     - CPU cost over off, µs per call"]
    for name, mode, us, worst, cpu, cost in rows:
        lines += [f"   * - {name}", f"     - {mode}", f"     - {us:.1f}", f"     - {worst:.0f}",
                  f"     - {1e6 / us:,.0f}", f"     - {cpu:.1f}", f"     - {cost:+.1f}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
