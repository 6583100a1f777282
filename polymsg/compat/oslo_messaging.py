"""oslo.messaging's public names over polymsg.

A service written against oslo.messaging runs on every polymsg transport
with one line changed::

    import oslo_messaging as messaging                       # before
    from polymsg.compat import oslo_messaging as messaging   # after

Each name is a thin adapter: transports, clients, servers and listeners are
polymsg's own objects, built from oslo.messaging's arguments and option
groups (``[oslo_messaging_notifications]``, and ``[oslo_messaging_rabbit]``
where a polymsg option has a twin: see ``polymsg.compat._options``). What
still differs is listed in the migration guide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

import polymsg
from polymsg._config import register_defaults, value
from polymsg._dispatcher import expected_exceptions
from polymsg._exceptions import (
    DriverLoadFailure,
    InvalidTarget,
    InvalidTransportURL,
    MessageDeliveryFailure,
    MessageUndeliverable,
    MessagingTimeout,
    NoSuchMethod,
    RemoteError,
    RPCVersionCapError,
    UnsupportedVersion,
)
from polymsg._exceptions import MessagingError as MessagingException
from polymsg._json import to_primitive
from polymsg._listener import NotificationFilter, NotificationResult
from polymsg._rpc_client import TransportOptions
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._transport import Transport
from polymsg._url import TransportHost
from polymsg.compat._notify import LoggingNotificationHandler, Notifier
from polymsg.compat._options import (
    NOTIFICATIONS_GROUP,
    group_values,
    oslo_observability,
    url_with_twins,
)
from polymsg.compat._target import Target, endpoints_for, to_target

__all__ = [
    "ClientSendError",
    "DriverLoadFailure",
    "ExecutorLoadFailure",
    "ExpectedException",
    "InvalidTarget",
    "InvalidTransportURL",
    "JsonPayloadSerializer",
    "LoggingNotificationHandler",
    "MessageDeliveryFailure",
    "MessageUndeliverable",
    "MessagingException",
    "MessagingServerError",
    "MessagingTimeout",
    "NoOpSerializer",
    "NoSuchMethod",
    "NotificationFilter",
    "NotificationResult",
    "Notifier",
    "RPCClient",
    "RPCVersionCapError",
    "RemoteError",
    "Serializer",
    "ServerListenError",
    "Target",
    "Transport",
    "TransportHost",
    "TransportOptions",
    "TransportURL",
    "UnsupportedVersion",
    "expected_exceptions",
    "get_batch_notification_listener",
    "get_notification_listener",
    "get_notification_transport",
    "get_rpc_client",
    "get_rpc_server",
    "get_rpc_transport",
    "get_transport",
    "set_transport_defaults",
]

LOG = logging.getLogger(__name__)


class MessagingServerError(MessagingException):
    """Base of the errors a server or listener raises (oslo.messaging's name)."""


class ServerListenError(MessagingServerError):
    """A server could not start listening (oslo.messaging's name)."""


class ExecutorLoadFailure(MessagingServerError):
    """The executor asked for is not available (oslo.messaging's name)."""


class ClientSendError(MessagingException):
    """A client could not send (oslo.messaging's name; polymsg raises
    :class:`MessageDeliveryFailure` or :class:`MessageUndeliverable`)."""


class ExpectedException(Exception):
    """oslo.messaging's wrapper for expected exceptions. polymsg re-raises the
    original exception instead, so this is never raised; it exists so that
    ``except messaging.ExpectedException`` still imports."""


class JsonPayloadSerializer(NoOpSerializer):
    """Entities as JSON types, objects as their attributes (oslo.messaging's
    JSON payload serializer)."""

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return to_primitive(entity, "entity", convert_instances=True)


# -- configuration and transports ---------------------------------------------

_exchange_default: dict[str, str] = {}


def set_transport_defaults(control_exchange: str) -> None:
    """Make ``control_exchange`` the default exchange of transports this module
    creates from now on (as the option's default: a configured value wins)."""
    _exchange_default["control_exchange"] = control_exchange


def _url(conf: cfg.ConfigOpts, url: Any) -> str | polymsg.TransportURL:
    if isinstance(url, polymsg.TransportURL):
        return url
    if url is None:
        url = value(conf, "transport_url")
    if not url:
        raise InvalidTransportURL(
            "no transport URL: set [DEFAULT] transport_url or pass url= (polymsg does not "
            "assume oslo.messaging's default rabbit://)")
    return url_with_twins(conf, str(url))


def get_rpc_transport(conf: cfg.ConfigOpts, url: Any = None,
                      allowed_remote_exmods: Sequence[str] | None = None,
                      transport_cls: Any = None) -> Transport:
    """A transport for RPC: ``url``, or ``[DEFAULT] transport_url``."""
    if conf is None:
        raise InvalidTransportURL("oslo.messaging's API needs a ConfigOpts (conf)")
    register_defaults(conf)
    if "control_exchange" in _exchange_default:
        conf.set_default("control_exchange", _exchange_default["control_exchange"])
    oslo_observability(conf)
    return polymsg.get_transport(_url(conf, url), conf=conf,
                                 allowed_remote_exmods=tuple(allowed_remote_exmods or ()))


class TransportURL(polymsg.TransportURL):
    """polymsg's parsed URL; :meth:`parse` also takes oslo.messaging's
    ``(conf, url=None)`` arguments."""

    @classmethod
    def parse(cls, conf: Any, url: Any = None) -> polymsg.TransportURL:
        """``TransportURL.parse(conf, url)`` (or ``parse(url)``)."""
        if isinstance(conf, str) and url is None:
            return polymsg.TransportURL.parse(conf)
        if url is None:
            register_defaults(conf)
            url = value(conf, "transport_url")
            if not url:
                raise InvalidTransportURL("no transport URL: set [DEFAULT] transport_url")
        return polymsg.TransportURL.parse(url)


def get_transport(conf: cfg.ConfigOpts, url: Any = None,
                  allowed_remote_exmods: Sequence[str] | None = None) -> Transport:
    """Deprecated in oslo.messaging; the same as :func:`get_rpc_transport`."""
    return get_rpc_transport(conf, url, allowed_remote_exmods)


def get_notification_transport(conf: cfg.ConfigOpts, url: Any = None,
                               allowed_remote_exmods: Sequence[str] | None = None) -> Transport:
    """A transport for notifications: ``url``, ``[oslo_messaging_notifications]
    transport_url``, or ``[DEFAULT] transport_url``."""
    if url is None:
        url = group_values(conf, NOTIFICATIONS_GROUP).get("transport_url") or None
    return get_rpc_transport(conf, url, allowed_remote_exmods)


# -- RPC ------------------------------------------------------------------------

class RPCClient(polymsg.RPCClient):
    """oslo.messaging's RPC client: ``target`` may be an oslo-style :class:`Target`;
    ``prepare`` takes its keywords."""

    def __init__(self, transport: Transport, target: Any, timeout: float | None = None,
                 version_cap: str | None = None, serializer: Serializer | None = None,
                 retry: int | None = None, call_monitor_timeout: float | None = None,
                 transport_options: TransportOptions | None = None, **kwargs: Any) -> None:
        super().__init__(transport, to_target(target), timeout=timeout, retry=retry,
                         version_cap=version_cap, serializer=serializer,
                         call_monitor_timeout=call_monitor_timeout,
                         transport_options=transport_options, **kwargs)

    def prepare(self, **kwargs: Any) -> polymsg.RPCClient:
        """A client with the given target fields and options changed."""
        return super().prepare(**kwargs)


def get_rpc_client(transport: Transport, target: Any, client_cls: Any = None,
                   **kwargs: Any) -> RPCClient:
    """An RPC client (``timeout``, ``version_cap``, ``serializer``, ``retry``,
    ``call_monitor_timeout``, ``transport_options``)."""
    return (client_cls or RPCClient)(transport, target, **kwargs)


def get_rpc_server(transport: Transport, target: Any, endpoints: Sequence[Any],
                   executor: str | None = None, serializer: Serializer | None = None,
                   access_policy: Any = None, server_cls: Any = None) -> polymsg.RPCServer:
    """An RPC server. ``executor`` ``"threading"`` (the default) and
    ``"eventlet"`` both run endpoints on polymsg's worker threads."""
    if access_policy is not None:
        LOG.debug("access_policy %r: polymsg never dispatches names starting with '_' "
                  "(oslo.messaging's default policy)", access_policy)
    return polymsg.get_rpc_server(transport, to_target(target), endpoints_for(endpoints),
                                  executor=_executor(executor), serializer=serializer)


def _executor(executor: str | None) -> str:
    if executor in (None, "threading", "eventlet", "blocking"):
        return "threading"
    raise ExecutorLoadFailure(f"executor {executor!r} is not available; use 'threading'")


# -- notifications ----------------------------------------------------------------

def get_notification_listener(transport: Transport, targets: Sequence[Any],
                              endpoints: Sequence[Any], executor: str | None = None,
                              serializer: Serializer | None = None,
                              allow_requeue: bool = False,
                              pool: str | None = None) -> polymsg.NotificationListener:
    """A notification listener (see :func:`polymsg.get_notification_listener`)."""
    return polymsg.get_notification_listener(
        transport, [to_target(t) for t in targets], list(endpoints),
        executor=_executor(executor), serializer=serializer, allow_requeue=allow_requeue,
        pool=pool)


def get_batch_notification_listener(transport: Transport, targets: Sequence[Any],
                                    endpoints: Sequence[Any], executor: str | None = None,
                                    serializer: Serializer | None = None,
                                    allow_requeue: bool = False, pool: str | None = None,
                                    batch_size: int | None = None,
                                    batch_timeout: float | None = None
                                    ) -> polymsg.BatchNotificationListener:
    """A batch notification listener (see :func:`polymsg.get_batch_notification_listener`)."""
    return polymsg.get_batch_notification_listener(
        transport, [to_target(t) for t in targets], list(endpoints),
        executor=_executor(executor), serializer=serializer, allow_requeue=allow_requeue,
        pool=pool, batch_size=batch_size, batch_timeout=batch_timeout)
