"""A Prometheus endpoint for polymsg's metrics, turned on with one option.

``[polymsg_observability] prometheus_port`` (0: off) and ``prometheus_host``
(default ``127.0.0.1``): the first :func:`polymsg.get_transport` whose
configuration sets a port starts one HTTP server per process serving, in
Prometheus' text format, every polymsg metric (transport health and the RPC
metrics with oslo.metrics' names, counted for this endpoint whether or not
``[polymsg_observability] metrics`` also sends them to the application's
meter provider) and nothing else.

It is built from the maintained libraries rather than by hand: an
OpenTelemetry SDK ``MeterProvider`` of polymsg's own (the application's
global provider, if any, is left alone) whose ``PrometheusMetricReader``
feeds a private ``prometheus_client`` registry that ``prometheus_client``'s
HTTP server serves (``pip install 'polymsg[prometheus]'``). What it serves
is bounded: only polymsg's instruments are registered with that provider,
and each metric keeps at most :data:`MAX_SERIES` label sets.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from polymsg._config import register_opts
from polymsg._exceptions import MessagingError, NotSupported
from polymsg._observe import GROUP, add_observer, remove_observer

__all__ = ["GROUP", "MAX_SERIES", "OPTS", "serve", "serve_configured", "stop"]

LOG = logging.getLogger(__name__)

#: Label sets kept per metric; beyond it the SDK folds new ones into one overflow series.
MAX_SERIES = 1000

OPTS = [
    cfg.PortOpt("prometheus_port", default=0,
                help="Serve polymsg's metrics (transport health, RPC counts and times) in "
                     "Prometheus' text format over HTTP on this port; 0 turns the endpoint "
                     "off. One endpoint per process. Needs 'pip install polymsg[prometheus]'."),
    cfg.HostAddressOpt("prometheus_host", default="127.0.0.1",
                       help="The address the Prometheus endpoint listens on. The endpoint has "
                            "no authentication: keep the loopback default unless the "
                            "network in front of it is trusted."),
]

_INSTALL_HINT = "pip install 'polymsg[prometheus]'"


@dataclass
class _Endpoint:
    host: str
    port: int
    server: Any
    thread: threading.Thread
    provider: Any
    observer: Any


_lock = threading.Lock()
_endpoint: _Endpoint | None = None


def serve_configured(conf: cfg.ConfigOpts) -> None:
    """Start the endpoint if ``conf`` sets ``[polymsg_observability] prometheus_port``."""
    register_opts(conf, OPTS, group=GROUP)
    port = int(conf[GROUP].prometheus_port or 0)
    if port:
        serve(str(conf[GROUP].prometheus_host), port)


def serve(host: str, port: int) -> tuple[str, int]:
    """Serve polymsg's metrics on ``host``:``port`` (port 0 here: any free port); the
    address it listens on. Once per process: a later call with another address
    logs a warning and returns the first one's."""
    global _endpoint
    with _lock:
        if _endpoint is not None:
            if (host, port) != (_endpoint.host, _endpoint.port) and port:
                LOG.warning("polymsg already serves Prometheus metrics on %s:%d; not also on "
                            "%s:%d (one endpoint per process)", _endpoint.host, _endpoint.port,
                            host, port)
            return _endpoint.host, _endpoint.port
        _endpoint = _start(host, port)
        LOG.info("serving polymsg metrics for Prometheus on http://%s:%d/metrics",
                 _endpoint.host, _endpoint.port)
        return _endpoint.host, _endpoint.port


def _start(host: str, port: int) -> _Endpoint:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk import metrics as sdk
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise NotSupported(
            f"[{GROUP}] prometheus_port is set, but the Prometheus endpoint needs packages "
            f"that are not installed ({exc.name}): {_INSTALL_HINT}") from exc
    from polymsg._health_otel import instrument
    from polymsg._otel_metrics import RPCMetricsObserver

    registry = CollectorRegistry(auto_describe=True)
    limits: Any = {getattr(sdk, kind): MAX_SERIES for kind in (
        "Counter", "UpDownCounter", "Histogram", "Gauge", "ObservableCounter",
        "ObservableUpDownCounter", "ObservableGauge") if hasattr(sdk, kind)}
    reader = PrometheusMetricReader(disable_target_info=True, registry=registry,
                                    cardinality_limits=limits)
    provider = sdk.MeterProvider(metric_readers=[reader])
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        provider.shutdown()
        raise MessagingError(
            f"cannot serve Prometheus metrics on {host}:{port} ([{GROUP}] prometheus_host "
            f"and prometheus_port): {exc.strerror or exc}") from exc
    instrument(provider)
    observer = RPCMetricsObserver(provider)  # the RPC metrics, on this provider too
    add_observer(observer)
    bound_host, bound_port = server.server_address[:2]
    return _Endpoint(str(bound_host), int(bound_port), server, thread, provider, observer)


def stop() -> None:
    """Stop serving (tests; a process normally serves until it exits)."""
    global _endpoint
    with _lock:
        endpoint, _endpoint = _endpoint, None
    if endpoint is not None:
        remove_observer(endpoint.observer)
        endpoint.server.shutdown()
        endpoint.server.server_close()
        endpoint.thread.join()
        endpoint.provider.shutdown()
