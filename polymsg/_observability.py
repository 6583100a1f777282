"""Turning tracing and RPC metrics on: ``[polymsg_observability]`` options.

``tracing = true`` registers a :class:`~polymsg._otel.TracingObserver`,
``metrics = true`` a :class:`~polymsg._otel_metrics.RPCMetricsObserver`,
once per process, when a transport is created with such a configuration
(the observers see every transport of the process from then on, as
oslo.messaging's tracer does). Both need OpenTelemetry's API
(``pip install polymsg[otel]``); with neither option set nothing is
imported and nothing observes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from oslo_config import cfg

from polymsg import _observe
from polymsg._config import register_opts
from polymsg._exceptions import NotSupported
from polymsg._observe import GROUP

__all__ = ["OPTS", "configure", "enable_metrics", "enable_tracing", "list_opts", "reset"]

LOG = logging.getLogger(__name__)

OPTS = [
    cfg.BoolOpt("tracing", default=False,
                help="Trace every call, cast, notification and message processed with "
                     "OpenTelemetry (spans to the process's tracer provider; the trace "
                     "context travels in the message context as oslo.messaging carries it). "
                     "Needs polymsg[otel]."),
    cfg.BoolOpt("metrics", default=False,
                help="Count RPCs with oslo.metrics' names (oslo_messaging_rpc_client_* and "
                     "oslo_messaging_rpc_server_*) through the OpenTelemetry metrics API "
                     "(the process's meter provider). Needs polymsg[otel]."),
]

_lock = threading.Lock()
_enabled: dict[str, _observe.Observer] = {}


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[(group, opts)]`` of the options in this module."""
    return [(GROUP, list(OPTS))]


def configure(conf: cfg.ConfigOpts) -> None:
    """Register the options on ``conf`` and turn on what they ask for."""
    register_opts(conf, OPTS, group=GROUP)
    group = conf[GROUP]
    if group.tracing:
        enable_tracing()
    if group.metrics:
        enable_metrics()


def _needs_otel(what: str) -> None:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise NotSupported(f"[{GROUP}] {what} needs OpenTelemetry's API, which is not "
                           "installed: pip install 'polymsg[otel]'") from None


def enable_tracing(tracer_provider: Any = None) -> None:
    """Trace every send and receive of this process from now on (idempotent).
    ``tracer_provider``: ``None``, the global one."""
    _needs_otel("tracing")
    from polymsg._otel import TracingObserver

    _enable("tracing", tracer_provider, lambda: TracingObserver(tracer_provider))
    _warn_without_provider()


def enable_metrics(meter_provider: Any = None) -> None:
    """Count every RPC of this process from now on (idempotent).
    ``meter_provider``: ``None``, the global one."""
    _needs_otel("metrics")
    from polymsg._otel_metrics import RPCMetricsObserver

    _enable("metrics", meter_provider, lambda: RPCMetricsObserver(meter_provider))


#: Observers made so far, by (kind, provider): made once, since a provider keeps
#: the instruments (and their callbacks) of the first observer for good.
_made: dict[tuple[str, int], _observe.Observer] = {}


def _enable(name: str, provider: Any, make: Any) -> None:
    with _lock:
        if name in _enabled:
            return
        key = (name, id(provider))
        observer = _made.get(key)
        if observer is None:
            observer = _made[key] = make()
        _enabled[name] = observer
    _observe.add_observer(observer)
    LOG.debug("polymsg %s is on", name)


def _warn_without_provider() -> None:
    from opentelemetry import trace

    if type(trace.get_tracer_provider()) is trace.ProxyTracerProvider:
        LOG.warning("[%s] tracing is on but no OpenTelemetry tracer provider is configured "
                    "yet: spans are dropped until the application sets one (the "
                    "OpenTelemetry SDK, or opentelemetry-instrument)", GROUP)


def reset() -> None:
    """Turn tracing and metrics off again (tests; a process that reconfigures).
    Turned on again, they carry on with the same instruments."""
    with _lock:
        observers = list(_enabled.values())
        _enabled.clear()
    for observer in observers:
        _observe.remove_observer(observer)
