"""Reading polymsg's metrics in tests, through the OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["MetricsProbe", "metrics_probe"]


class MetricsProbe:
    """polymsg's metrics as an ``InMemoryMetricReader`` collects them."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def points(self, name: str, **labels: str) -> list[tuple[dict[str, Any], float]]:
        """``(attributes, value)`` of metric ``name`` whose attributes include ``labels``."""
        found = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes)
                        if all(attributes.get(k) == v for k, v in labels.items()):
                            found.append((attributes, float(point.value)))
        return found

    def value(self, name: str, **labels: str) -> float | None:
        """The one value of ``name`` with ``labels``; None when there is none."""
        found = self.points(name, **labels)
        assert len(found) <= 1, f"{name} {labels}: several points {found}"
        return found[0][1] if found else None

    def wait(self, name: str, check: Callable[[float | None], bool], timeout: float = 30.0,
             **labels: str) -> float | None:
        """Collect until ``check(value)`` holds; fails with the last value after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(name, **labels)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} {labels} is still {value} after {timeout} s")
            time.sleep(0.02)  # polling a condition with a deadline, not a timed guess


@contextmanager
def metrics_probe() -> Iterator[MetricsProbe]:
    """A private SDK ``MeterProvider`` with polymsg's health instruments and an
    in-memory reader (no global state touched)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from polymsg._health_otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(provider)
    try:
        yield MetricsProbe(reader)
    finally:
        provider.shutdown()


def labels_of(points: list[tuple[Mapping[str, Any], float]]) -> list[dict[str, Any]]:
    """The attribute sets of ``points``."""
    return [dict(attributes) for attributes, _ in points]
