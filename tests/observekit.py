"""Helpers of the observability tests (a module name no other tests use).

``url`` is every transport: memory, both RabbitMQ drivers (with
``POLYMSG_TEST_RABBIT_URL``, see ``scripts/services.sh env``) and zmq.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import polymsg

RABBIT = os.environ.get("POLYMSG_TEST_RABBIT_URL")
WAIT = 15.0
#: What each transport reports as its messaging system.
SYSTEMS = {"memory": "memory", "kombu": "rabbitmq", "pika": "rabbitmq", "zmq": "zeromq"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["memory", "kombu", "pika", "zmq"])
def kind(request: pytest.FixtureRequest) -> str:
    """The transport under test."""
    return str(request.param)


@pytest.fixture
def url(kind: str) -> Iterator[str]:
    """A URL of the transport under test."""
    if kind == "memory":
        yield f"memory://observe-{uuid.uuid4().hex[:8]}"
    elif kind in ("kombu", "pika"):
        if not RABBIT:
            pytest.skip("POLYMSG_TEST_RABBIT_URL is not set")
        yield RABBIT.replace("rabbit://", f"rabbit+{kind}://", 1)
    else:
        if importlib.util.find_spec("polymsg_zmq") is None:
            pytest.skip("polymsg-zmq is not installed")
        root = tempfile.mkdtemp(prefix="observe", dir="/tmp")
        try:
            yield f"zmq://127.0.0.1:{_free_port()}/?ipc_dir={root}/ipc"
        finally:
            shutil.rmtree(root, ignore_errors=True)


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
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = trace.get_tracer_provider()
        if not isinstance(tracer_provider, TracerProvider):  # else set by another suite
            tracer_provider = TracerProvider()
            trace.set_tracer_provider(tracer_provider)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _sdk.update(exporter=exporter, reader=reader)
    return _sdk["exporter"], _sdk["reader"]


def observability_conf(tmp_path: Any, text: str) -> Any:
    """A ConfigOpts read from a file holding ``text``."""
    from oslo_config import cfg

    path = tmp_path / "polymsg.conf"
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="polymsg-tests")
    return conf
