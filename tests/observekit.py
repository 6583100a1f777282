"""Helpers of the observability tests (a module name no other tests use).

``url`` is every transport: memory, both RabbitMQ drivers (with
``POLYMSG_TEST_RABBIT_URL``, see ``scripts/services.sh env``) and zmq.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from transportkit import KINDS, transport_url

import polymsg
from polymsg.testing._spans import span_exporter

WAIT = 15.0
#: What each transport reports as its messaging system.
SYSTEMS = {"memory": "memory", "kombu": "rabbitmq", "pika": "rabbitmq", "zmq": "zeromq"}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The transport under test."""
    return str(request.param)


@pytest.fixture
def url(kind: str) -> Iterator[str]:
    """A URL of the transport under test."""
    with transport_url(kind, "observe") as url:
        yield url


@pytest.fixture
def transport(url: str) -> Iterator[polymsg.Transport]:
    """A transport of the kind under test, cleaned up after the test."""
    with polymsg.get_transport(url) as transport:
        yield transport


@pytest.fixture
def topic() -> str:
    """A topic no other test uses."""
    return f"observe-{uuid.uuid4().hex[:10]}"


class Waiter:
    """Collects items from other threads; ``wait(n)`` returns once ``n`` came."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = WAIT) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"only {len(self.items)} of {count} came: {self.items}")
            return list(self.items)


# -- OpenTelemetry SDK, in memory, for the whole test session -------------------

_sdk: dict[str, Any] = {}


def sdk() -> tuple[Any, Any]:
    """(span exporter, metric reader) of the process's global OpenTelemetry SDK
    providers, set up on first use (a process sets its global providers once)."""
    if not _sdk:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _sdk.update(exporter=span_exporter(), reader=reader)
    return _sdk["exporter"], _sdk["reader"]


def observability_conf(tmp_path: Any, text: str) -> Any:
    """A ConfigOpts read from a file holding ``text``."""
    from oslo_config import cfg

    path = tmp_path / "polymsg.conf"
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="polymsg-tests")
    return conf
