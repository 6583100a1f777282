"""Finished OpenTelemetry spans in memory, for tests that wait for them.

Spans of a call or cast end on the threads that finish it, possibly after the
test has its result; :func:`span_exporter` gives the in-memory exporter of the
process's tracer provider (set up once, needs ``opentelemetry-sdk``) whose
:meth:`~WaitingExporter.wait` returns once the spans a test expects ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["span_exporter"]

_exporters: list[Any] = []


def span_exporter() -> Any:
    """The in-memory span exporter added to the global tracer provider (made
    once per process; a provider another suite set first is reused)."""
    if _exporters:
        return _exporters[0]
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class WaitingExporter(InMemorySpanExporter):
        """An in-memory exporter that wakes those waiting for spans."""

        def __init__(self) -> None:
            super().__init__()
            self._cond = threading.Condition()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result = super().export(spans)
            with self._cond:
                self._cond.notify_all()
            return result

        def wait(self, enough: Callable[[tuple[ReadableSpan, ...]], bool],
                 timeout: float = 15.0) -> tuple[ReadableSpan, ...]:
            """The finished spans, once ``enough(spans)`` holds or ``timeout`` passed."""
            with self._cond:
                self._cond.wait_for(lambda: enough(self.get_finished_spans()), timeout)
            return self.get_finished_spans()

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = WaitingExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _exporters.append(exporter)
    return exporter
