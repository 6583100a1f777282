"""RPC metrics with oslo.metrics' names and labels, through the OpenTelemetry metrics API.

Client side, per call, cast and fanout cast (``call_type`` ``call`` or
``cast``): ``oslo_messaging_rpc_client_invocation_start_total`` when it is
sent; then either ``..._processing_seconds`` and ``..._invocation_end_total``
(success), or ``..._exception_total`` labelled with the exception class
(``MessagingTimeout``, a remote error's class...). Server side the same four
``oslo_messaging_rpc_server_*`` instruments per request processed; an
exception the endpoint declared as expected ends the invocation normally.
Notifications are not counted (oslo.metrics has no family for them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import metrics

from polymsg._observe import Operation, is_expected
from polymsg._otel import error_type

__all__ = ["BUCKETS", "CLIENT_LABELS", "SERVER_LABELS", "RPCMetricsObserver"]

#: oslo.metrics' histogram buckets of ``*_processing_seconds`` (seconds).
BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0,
           50.0, 75.0, 100.0)
#: Labels of the client instruments (``exception`` added on ``exception_total``).
CLIENT_LABELS = ("call_type", "exchange", "topic", "namespace", "version", "server", "fanout",
                 "method")
#: Labels of the server instruments (``exception`` added on ``exception_total``).
SERVER_LABELS = ("exchange", "topic", "server", "namespace", "version", "method")

_SENT_KINDS = {"call": "call", "cast": "cast", "fanout": "cast"}


class _Counts:
    """A monotonic counter kept here (a dict increment per event) and reported
    through an observable counter when the metrics are collected: an SDK
    measurement per event costs ~15 microseconds, this well under one."""

    def __init__(self, meter: metrics.Meter, name: str, description: str) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[tuple[str, str], ...], int] = {}
        meter.create_observable_counter(name, callbacks=[self._observe], unit="1",
                                        description=description)

    def add(self, labels: dict[str, str]) -> None:
        key = tuple(labels.items())
        with self._lock:
            self._values[key] = self._values.get(key, 0) + 1

    def _observe(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        with self._lock:
            values = list(self._values.items())
        return [metrics.Observation(value, dict(key)) for key, value in values]


class _Family:
    """The four instruments of one side (``rpc_client`` or ``rpc_server``)."""

    def __init__(self, meter: metrics.Meter, side: str) -> None:
        prefix = f"oslo_messaging_{side}"
        self.start = _Counts(meter, f"{prefix}_invocation_start_total",
                             "Total number of RPC invocation start.")
        self.end = _Counts(meter, f"{prefix}_invocation_end_total",
                           "Total number of RPC invocation end.")
        self.seconds = meter.create_histogram(
            f"{prefix}_processing_seconds", unit="s",
            description="Duration of RPC processing.",
            explicit_bucket_boundaries_advisory=list(BUCKETS))
        self.exceptions = _Counts(meter, f"{prefix}_exception_total",
                                  "Total number of exception while RPC processing.")

    @contextmanager
    def measure(self, labels: dict[str, str]) -> Iterator[None]:
        self.start.add(labels)
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            if not is_expected(exc):
                self.exceptions.add({**labels, "exception": error_type(exc)})
                raise
            self._ended(labels, started)
            raise
        self._ended(labels, started)

    def _ended(self, labels: dict[str, str], started: float) -> None:
        self.seconds.record(time.perf_counter() - started, labels)
        self.end.add(labels)


class RPCMetricsObserver:
    """An observer (see :mod:`polymsg._observe`) counting RPCs as oslo.metrics does.

    ``meter_provider``: where the measurements go; ``None``, the global provider.
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        from polymsg import __version__

        meter = metrics.get_meter("polymsg", __version__, meter_provider)
        self._client = _Family(meter, "rpc_client")
        self._server = _Family(meter, "rpc_server")

    def sending(self, op: Operation, ctxt: dict[str, Any]) -> AbstractContextManager[Any]:
        """Count a call or cast (notifications are not counted)."""
        call_type = _SENT_KINDS.get(op.kind)
        if call_type is None:
            return _NOTHING
        return self._client.measure({
            "call_type": call_type, "exchange": str(op.exchange), "topic": str(op.topic),
            "namespace": str(op.namespace), "version": str(op.version),
            "server": str(op.server), "fanout": str(op.kind == "fanout"),
            "method": str(op.method)})

    def receiving(self, op: Operation, ctxt: Mapping[str, Any]) -> AbstractContextManager[Any]:
        """Count a request processed (notifications are not counted)."""
        if op.kind != "rpc":
            return _NOTHING
        return self._server.measure({
            "exchange": str(op.exchange), "topic": str(op.topic), "server": str(op.server),
            "namespace": str(op.namespace), "version": str(op.version),
            "method": str(op.method)})


class _Nothing(AbstractContextManager[None]):
    def __exit__(self, *exc_info: object) -> None:
        return None


_NOTHING = _Nothing()
