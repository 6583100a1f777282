"""Transport health as OpenTelemetry instruments (``pip install 'polymsg[otel]'``).

One observable instrument per :data:`polymsg.driver.HEALTH_STATS` entry,
named ``polymsg.<stat>`` on the meter ``polymsg``: gauges for levels,
counters for totals. Their callbacks read :func:`polymsg._health.readings`
when a metric reader collects, so they cost nothing while nobody collects.

:func:`instrument_global` registers them once with the global meter
provider (OpenTelemetry's proxy until the application sets one, which then
takes them over); :func:`instrument` registers them with any other provider
(the Prometheus endpoint's, a test's). Without ``opentelemetry-api``
installed, :func:`instrument_global` does nothing.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from polymsg._health import readings
from polymsg.driver import HEALTH_STATS

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["METER_NAME", "instrument", "instrument_global", "metric_name"]

#: The instrumentation scope of polymsg's metrics.
METER_NAME = "polymsg"

_lock = threading.Lock()
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()  # providers done
_global_done = False


def metric_name(stat: str) -> str:
    """The OpenTelemetry metric name of a health stat (``polymsg.connection.up``)."""
    return f"polymsg.{stat}"


def _version() -> str:
    try:
        return version("polymsg")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return ""


def _callback(stat: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(r.value, r.labels) for r in readings(stat)]

    return observe


def instrument(provider: MeterProvider | None = None) -> None:
    """Register the health instruments with ``provider`` (``None``: the global one).
    Idempotent per provider."""
    global _global_done
    from opentelemetry import metrics

    with _lock:
        if (_global_done if provider is None else provider in _instrumented):
            return
        if provider is None:
            _global_done = True
        else:
            _instrumented.add(provider)
    meter = metrics.get_meter(METER_NAME, _version(), meter_provider=provider)
    for stat, (kind, unit, description) in HEALTH_STATS.items():
        create: Any = (meter.create_observable_counter if kind == "counter"
                       else meter.create_observable_gauge)
        create(metric_name(stat), callbacks=[_callback(stat)], unit=unit,
               description=description)


def instrument_global() -> None:
    """:func:`instrument` the global meter provider, when OpenTelemetry is installed."""
    global _global_done
    if _global_done:
        return
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError:
        _global_done = True  # not installed: nothing to do, ever
        return
    instrument(None)
