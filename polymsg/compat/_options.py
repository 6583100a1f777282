"""oslo.messaging's option groups, read where a polymsg option is their twin.

One table (:data:`RABBIT_TWINS`) says which ``[oslo_messaging_rabbit]`` option
sets which option of polymsg's RabbitMQ drivers. A value set in that group
(config file, or a registered option set by the caller) reaches the driver as
a URL query key, the public way to override a driver option for one
transport; a value the URL already sets wins. A set option with no twin is
reported once, by name, as ignored.

``[oslo_messaging_notifications]`` (``driver``, ``topics``, ``retry``,
``transport_url``) is read by the compat ``Notifier`` and
``get_notification_transport``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import quote

from oslo_config import cfg

from polymsg._config import sections
from polymsg._registry import canonical_name, load_driver
from polymsg._url import TransportURL

__all__ = ["NOTIFICATIONS_GROUP", "RABBIT_GROUP", "RABBIT_TWINS", "group_values",
           "notification_settings", "oslo_observability", "url_with_twins"]

LOG = logging.getLogger("polymsg.compat.oslo_messaging")

RABBIT_GROUP = "oslo_messaging_rabbit"
NOTIFICATIONS_GROUP = "oslo_messaging_notifications"
TRACING_GROUP = "oslo_messaging_tracing"
METRICS_GROUP = "oslo_messaging_metrics"

#: ``[oslo_messaging_rabbit]`` option -> the polymsg RabbitMQ driver option it sets.
#: A driver option of the oslo name itself is used first (drivers that adopt
#: oslo.messaging's names need no entry here).
RABBIT_TWINS: dict[str, str] = {
    "heartbeat_timeout_threshold": "heartbeat",
    "rabbit_retry_interval": "retry_interval",
    "rabbit_retry_backoff": "retry_backoff",
    "rabbit_interval_max": "retry_interval_max",
    "kombu_failover_strategy": "failover_strategy",
    "rabbit_login_method": "login_method",
    "ssl": "ssl",
    "ssl_ca_file": "ssl_ca_file",
    "ssl_cert_file": "ssl_cert_file",
    "ssl_key_file": "ssl_key_file",
    "ssl_enforce_hostname_verification": "ssl_verify_hostname",
    "rabbit_qos_prefetch_count": "prefetch_count",
    "amqp_durable_queues": "amqp_durable_queues",
    "amqp_auto_delete": "amqp_auto_delete",
    "rabbit_transient_queues_ttl": "transient_queues_ttl",
    "rabbit_quorum_queue": "rabbit_quorum_queue",
    "rabbit_transient_quorum_queue": "rabbit_transient_quorum_queue",
    "rabbit_quorum_delivery_limit": "rabbit_quorum_delivery_limit",
    "rabbit_stream_fanout": "rabbit_stream_fanout",
    "use_queue_manager": "use_queue_manager",
}

#: Options whose value is a process-level concern polymsg handles itself
#: (connection pools, client library tuning): ignored without a warning.
_QUIETLY_IGNORED = {"rpc_conn_pool_size", "conn_pool_min_size", "conn_pool_ttl",
                    "kombu_reconnect_splay", "hostname", "processname", "heartbeat_rate",
                    "heartbeat_in_pthread", "direct_mandatory_flag"}

_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def group_values(conf: cfg.ConfigOpts, group: str) -> dict[str, Any]:
    """The options of ``[group]`` that are set: registered ones whose value was set
    (file, command line, override), and keys the config files hold."""
    values: dict[str, Any] = {key: raw[-1] for key, raw in sections(conf).get(group, {}).items()}
    try:
        registered = conf[group]
    except (cfg.NoSuchOptError, KeyError):
        return values
    for name in list(getattr(registered, "keys", lambda: [])()):
        try:
            info = conf.get_location(name, group)
        except (cfg.NoSuchOptError, AttributeError):
            continue
        if info is not None and info.location is not cfg.Locations.opt_default:
            values[name] = registered[name]
    return values


def url_with_twins(conf: cfg.ConfigOpts, url: str) -> str:
    """``url`` with the ``[oslo_messaging_rabbit]`` values its driver has twins of
    added to its query (RabbitMQ URLs only; keys already in the URL win)."""
    parsed = TransportURL.parse(url)
    if not canonical_name(parsed.transport).startswith("rabbit"):
        return url
    values = group_values(conf, RABBIT_GROUP)
    if not values:
        return url
    known = {opt.dest for opt in load_driver(parsed.transport).list_opts()}
    extra: dict[str, str] = {}
    for name, value in sorted(values.items()):
        twin = name if name in known else RABBIT_TWINS.get(name)
        if twin in known and twin not in parsed.query:
            extra[twin] = _text(value)
        elif twin not in known and name not in _QUIETLY_IGNORED:
            _report(name)
    if not extra:
        return url
    query = "&".join(f"{key}={quote(text, safe='')}" for key, text in extra.items())
    return f"{url}{'&' if parsed.query else ('' if url.endswith('?') else '?')}{query}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _report(name: str) -> None:
    with _reported_lock:
        if (RABBIT_GROUP, name) in _reported:
            return
        _reported.add((RABBIT_GROUP, name))
    LOG.warning("[%s] %s is set but polymsg's RabbitMQ drivers have no such option; it is "
                "ignored (see the migration guide's list of differences)", RABBIT_GROUP, name)


def notification_settings(conf: cfg.ConfigOpts) -> dict[str, Any]:
    """``[oslo_messaging_notifications]`` with oslo.messaging's defaults: ``driver``
    (list, default none: nothing is sent), ``topics`` (default
    ``["notifications"]``), ``retry`` (``None`` = forever) and ``transport_url``."""
    raw = sections(conf).get(NOTIFICATIONS_GROUP, {})
    values = group_values(conf, NOTIFICATIONS_GROUP)
    drivers = values.get("driver")
    if isinstance(drivers, str):  # from the files: every line of the multi-valued option
        drivers = raw.get("driver", [drivers])
    topics = values.get("topics", ["notifications"])
    if isinstance(topics, str):
        topics = [t.strip() for t in topics.split(",") if t.strip()]
    retry = values.get("retry", -1)
    retry = int(retry) if retry is not None else -1
    return {"driver": list(drivers or []), "topics": list(topics),
            "retry": None if retry < 0 else retry,
            "transport_url": values.get("transport_url") or None}


def _true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def oslo_observability(conf: cfg.ConfigOpts) -> None:
    """oslo.messaging's switches for tracing and RPC metrics:
    ``[oslo_messaging_tracing] tracing_enabled`` turns polymsg's tracing on,
    ``[oslo_messaging_metrics] metrics_enabled`` its RPC metrics (through
    OpenTelemetry, not oslo.metrics' socket)."""
    from polymsg._observability import enable_metrics, enable_tracing

    if _true(group_values(conf, TRACING_GROUP).get("tracing_enabled", False)):
        enable_tracing()
    if _true(group_values(conf, METRICS_GROUP).get("metrics_enabled", False)):
        enable_metrics()
