"""The driver SPI: what a transport driver distribution implements.

This module is a contract. polymsg's own drivers (``memory`` in core,
``polymsg-kombu``, ``polymsg-pika``, ``polymsg-zmq``) use nothing but what is
here, so a third-party driver can do everything they do.

Registering a driver
====================
A distribution advertises a :class:`Driver` subclass on the
``polymsg.drivers`` entry-point group under the URL scheme it serves
(``memory``, ``rabbit+kombu``, ``zmq``…). Its configuration options go on the
``oslo.config.opts`` entry point through its own ``list_opts()``.

Division of work
================
The facade (``RPCClient``, ``get_rpc_server``, ``Notifier``,
``get_notification_listener``) validates targets, applies serializers,
checks version caps and capabilities, builds and reads failure dicts, runs
endpoints on its executor and re-raises remote errors. A driver only moves
messages and acknowledges them:

* every :class:`~polymsg.Target` a driver receives has ``exchange`` filled in
  (the configured ``control_exchange`` when the user gave none) and a
  ``topic``; the facade never passes a fanout target to :meth:`Driver.call`;
* ``ctxt`` and the ``message`` dict are JSON types; drivers encode them with
  :func:`dumps` (or their wire format) and MUST raise
  :class:`~polymsg.SerializationError` *before sending anything* when that
  fails;
* a feature not in :attr:`Driver.capabilities` is never requested: the
  facade raises :class:`~polymsg.NotSupported` first. A declared capability
  MUST pass its conformance tests (:mod:`polymsg.testing`).

Message dicts
=============
An RPC ``message`` is ``{"method": str, "args": dict, "namespace": str|None,
"version": str|None}``. A notification ``message`` is ``{"message_id": str,
"publisher_id": str, "event_type": str, "priority": str (upper case, e.g.
"INFO"), "payload": Any, "timestamp": str}``. Drivers deliver the same dict
(after a JSON round trip) on :attr:`IncomingMessage.message`; they may add
their own routing fields on the wire but strip them on the way in.

Failures
========
A failure dict describes a server-side exception: ``{"class": str,
"module": str, "message": str, "tb": [str, ...], "args": list, "kwargs":
dict}``. Drivers carry it opaquely from :meth:`IncomingMessage.reply` to
:class:`Reply`.

Threads
=======
Driver methods may be called from many threads at once. Listener callbacks
run on a driver-owned thread; they are short (the facade only queues the
message) and never block on network I/O. After :meth:`Driver.cleanup`
returns, the driver has no thread left running.

Health
======
:meth:`Driver.health` is an optional, read-only window on the driver's
state, read when a metrics collector asks (see :class:`HealthStat` and
:data:`HEALTH_STATS`); a driver without one reports nothing.

Errors
======
Errors of the backend library are translated at the boundary (``raise
polymsg.MessageDeliveryFailure(...) from exc``) and never re-exported:
connection failures after ``retry`` is exhausted become
:class:`~polymsg.MessageDeliveryFailure`; anything unexpected on the wire is
logged and dropped, never raised into a listener thread.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from oslo_config import cfg

from polymsg._exceptions import (
    InvalidTarget,
    InvalidTransportURL,
    MessageDeliveryFailure,
    MessageUndeliverable,
    MessagingError,
    MessagingTimeout,
    NotSupported,
    SerializationError,
)
from polymsg._json import dumps, dumps_str, loads
from polymsg._ratelimit import LogLimiter
from polymsg._target import Target
from polymsg._url import TransportHost, TransportURL

__all__ = [
    "CAPABILITIES",
    "Driver",
    "DriverOptions",
    "HealthStat",
    "IncomingMessage",
    "InvalidTarget",
    "InvalidTransportURL",
    "Listener",
    "LogLimiter",
    "MessageDeliveryFailure",
    "MessageUndeliverable",
    "MessagingError",
    "MessagingTimeout",
    "NotSupported",
    "OnMessage",
    "Reply",
    "SendOptions",
    "SerializationError",
    "Target",
    "TransportHost",
    "TransportURL",
    "dumps",
    "dumps_str",
    "loads",
]

#: Every capability a driver may declare (docs: concepts, "Capabilities").
CAPABILITIES: frozenset[str] = frozenset({
    "rpc", "fanout", "notify", "pools", "requeue", "store_and_forward",
    "queue_ttl", "message_ttl", "multi_host",
})


#: Optional send features a driver may list in :attr:`Driver.send_features`
#: (see :class:`SendOptions`): ``"call_monitor"`` (call-monitor heartbeats,
#: both as caller and as server) and ``"at_least_once"`` (unroutable sends
#: fail at once with :class:`~polymsg.MessageUndeliverable`).
SEND_FEATURES: frozenset[str] = frozenset({"call_monitor", "at_least_once"})


#: The health readings a driver may report from :meth:`Driver.health`, by name:
#: ``(kind, unit, description)``, ``kind`` being ``"gauge"`` (a level read now)
#: or ``"counter"`` (a total since the transport was created, never
#: decreasing). polymsg exports each as the metric ``polymsg.<name>``; a
#: reading whose name is not listed here is ignored.
HEALTH_STATS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "connection.up": (
        "gauge", "1", "1 while the connection of this role is open, 0 while it is down "
        "(reported once the transport first tried to open it)"),
    "connection.reconnects": (
        "counter", "{reconnect}", "connections of this role opened again after the first"),
    "connection.failures": (
        "counter", "{failure}", "connection attempts of this role that failed, and open "
        "connections that were lost"),
    "confirm_window.in_flight": (
        "gauge", "{message}", "messages published and not yet confirmed by the broker"),
    "confirm_window.size": (
        "gauge", "{message}", "the most messages that may await confirms at once "
        "(confirm_window)"),
    "receiver.held_messages": (
        "gauge", "{message}", "messages a receiver holds for consumers that have not taken "
        "them (store and forward)"),
    "receiver.held_bytes": (
        "gauge", "By", "bytes a receiver holds for consumers (bounded by max_held_bytes)"),
    "receiver.topics": ("gauge", "{topic}", "topics a receiver routes"),
    "peers": ("gauge", "{peer}", "connections open to receivers (this host's and others')"),
    "known_hosts": ("gauge", "{host}", "hosts the matchmaker knows (for a cached "
                    "matchmaker: the hosts in its cache)"),
    "queue.messages": ("gauge", "{message}", "messages waiting in the transport's queues "
                       "for a consumer"),
    "queue.unacknowledged": (
        "gauge", "{message}", "messages handed to consumers and not yet acknowledged"),
    "queues": ("gauge", "{queue}", "queues the transport holds"),
})


@dataclass(frozen=True)
class HealthStat:
    """One reading from :meth:`Driver.health`.

    ``name`` is a key of :data:`HEALTH_STATS`; ``labels`` tell readings of the
    same name apart (``{"role": "publisher"}``). Labels MUST NOT carry
    secrets, and their values MUST come from a small set (roles, not message
    or host names), since every distinct set of labels is a time series.
    """

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendOptions:
    """How one message is sent.

    ``timeout``: for calls, seconds to wait for the reply; the request MUST
    also expire (never be executed) once it has passed.

    ``call_monitor_timeout`` (calls, feature ``"call_monitor"``): the driver
    MUST carry it to the server with the request (AMQP: the request's
    ``_timeout`` field, as oslo.messaging does), where it becomes
    :attr:`IncomingMessage.call_monitor_timeout`, and MUST call
    ``heartbeat()`` (cheap, never blocking, from any thread) for every
    call-monitor heartbeat the server sends back for this call (AMQP: a reply
    frame with ``ending`` false, no result and no failure). The facade fails
    the call when heartbeats stop.

    ``at_least_once`` (calls and casts, feature ``"at_least_once"``): the
    driver MUST NOT declare the queue it sends to, and MUST fail the send
    (the future) with :class:`~polymsg.MessageUndeliverable` when the
    transport reports that no queue took the message (AMQP: publish with
    ``mandatory=True``; the broker's ``basic.return`` means undeliverable),
    at once, not at the call's timeout. ``retry``: ``None``
    keep retrying the connection, ``0`` no retry, ``N`` N retries, then
    :class:`~polymsg.MessageDeliveryFailure`. ``queue_ttl``: the queue this
    message is stored in (when the driver stores and forwards) is removed
    after that many seconds without a consumer. ``message_ttl``: the message
    is discarded if no consumer took it within that many seconds.
    """

    timeout: float | None = None
    retry: int | None = None
    queue_ttl: float | None = None
    message_ttl: float | None = None
    #: Optional features (see :attr:`Driver.send_features`); the facade sets
    #: them only for a driver that declares them.
    call_monitor_timeout: float | None = None
    heartbeat: Callable[[], None] | None = field(default=None, compare=False)
    at_least_once: bool = False


@dataclass(frozen=True)
class Reply:
    """The outcome of a call: ``result`` when ``failure`` is ``None``."""

    result: Any = None
    failure: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DriverOptions:
    """A driver's option values: its config group overlaid with the URL query.

    Read options as attributes (``options.heartbeat``) or with ``get``.
    Values are already converted to the option's type.
    """

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when the driver has no such option."""
        return self.values.get(name, default)


class IncomingMessage(abc.ABC):
    """One message handed to a listener's callback.

    ``ctxt`` is the caller's context dict, ``message`` the RPC or
    notification dict (see the module docstring). The facade calls exactly
    one of :meth:`acknowledge` or :meth:`requeue` per message, from any
    thread, and for RPC messages :meth:`reply` at most once.

    A driver may decode lazily: reading ``ctxt`` or ``message`` (as
    properties) may then raise :class:`~polymsg.SerializationError` for a
    malformed body. The facade then logs a warning and drops the message,
    whether or not it called :meth:`acknowledge` first, so a driver that
    decodes lazily treats such a message as taken (``polymsg-zmq`` does).
    """

    ctxt: dict[str, Any]
    message: dict[str, Any]
    #: The caller's call-monitor timeout in seconds (drivers with the
    #: ``"call_monitor"`` feature), ``None`` when the caller set none.
    call_monitor_timeout: float | None = None

    @abc.abstractmethod
    def acknowledge(self) -> None:
        """Tell the transport the message is taken; it MUST NOT be redelivered."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Give the message back for later redelivery (drivers with ``requeue``)."""

    def reply(  # noqa: B027 - optional: casts and notifications never reply
        self, result: Any = None, failure: Mapping[str, Any] | None = None
    ) -> None:
        """Send the call's outcome back to the caller; a no-op for casts.

        MUST raise :class:`~polymsg.SerializationError` without sending
        anything when ``result`` is not JSON-encodable, so the facade can
        send a failure instead. Other send errors are logged, not raised.
        """

    def heartbeat(self) -> None:  # noqa: B027 - optional: drivers with "call_monitor"
        """Tell the caller the call is still running (a call-monitor heartbeat).

        The facade calls it every ``call_monitor_timeout / 2`` seconds while
        the endpoint runs (never after :meth:`reply`). AMQP: a reply frame
        ``{"result": null, "failure": null, "ending": false, "_msg_id": ...}``
        to the caller's reply queue, as oslo.messaging's servers send. Errors
        are logged, not raised.
        """


#: A listener callback: called on a driver thread with each incoming message.
OnMessage = Callable[[IncomingMessage], None]


class Listener(abc.ABC):
    """A running subscription created by :meth:`Driver.listen` or
    :meth:`Driver.listen_for_notifications`."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop taking messages. Blocks until no callback is running or will
        start; messages not yet delivered stay with the transport."""

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Release the subscription's resources (called after :meth:`stop`)."""


class Driver(abc.ABC):
    """A transport. One instance per :func:`polymsg.get_transport` call.

    Class attributes are data the facade reads before any instance exists:
    ``capabilities`` (a subset of :data:`CAPABILITIES`), ``send_features``
    (a subset of :data:`SEND_FEATURES`), ``options_group``
    and :meth:`list_opts` (the oslo.config options URL query keys may
    override).
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Optional :class:`SendOptions` features the driver implements, a subset of
    #: :data:`SEND_FEATURES`; the facade raises :class:`~polymsg.NotSupported`
    #: when a user asks for one the driver does not list.
    send_features: ClassVar[frozenset[str]] = frozenset()
    #: The send methods (``"call"``, ``"cast"``, ``"notify"``) that may block
    #: the calling thread (connecting, reconnecting, waiting for an I/O thread
    #: or an unreachable peer). ``polymsg.aio`` calls the others on the event
    #: loop and these on a small pool of threads, so a connecting driver never
    #: stalls the loop. A driver that hands every message to its own I/O and
    #: returns the future at once, connected or not, declares ``frozenset()``.
    blocking_sends: ClassVar[frozenset[str]] = frozenset({"call", "cast", "notify"})
    options_group: ClassVar[str | None] = None
    #: The messaging system the driver talks to, as tracing reports it
    #: (OpenTelemetry's ``messaging.system``: ``"rabbitmq"``...); ``None``:
    #: the URL scheme.
    messaging_system: ClassVar[str | None] = None

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts) -> None:
        """MUST NOT block on the network: connect lazily or in the background.

        ``conf`` is the caller's ConfigOpts as polymsg reads it: the
        ``[DEFAULT]`` options polymsg shares with oslo.messaging
        (``control_exchange``...) give polymsg's own defaults unless set, even
        when oslo.messaging registered them first in the same process.
        """
        self.url = url
        self.options = options
        self.conf = conf

    @classmethod
    def list_opts(cls) -> Sequence[cfg.Opt]:
        """The driver's options, registered in ``[options_group]``."""
        return ()

    @abc.abstractmethod
    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        """Send a request to one server of ``target`` and return a future of its
        :class:`Reply`.

        May block until the request is handed over (then it is listed in
        :attr:`blocking_sends`). The future fails with
        :class:`~polymsg.MessageDeliveryFailure` if the request cannot be
        sent; the facade enforces ``options.timeout`` and cancels the future
        on expiry, which MUST drop the driver's bookkeeping for it. The
        future may be a subclass whose ``result()`` does the waiting itself
        (e.g. the caller reads its own reply); it MUST then also complete for
        ``add_done_callback`` users (such as ``asyncio.wrap_future``).
        """

    @abc.abstractmethod
    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        """Send a one-way message: to one server of the topic, to
        ``target.server``, or to every server when ``target.fanout``.

        The future resolves when the transport has accepted the message
        (broker-confirmed where the broker confirms).
        """

    @abc.abstractmethod
    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        """Publish a notification on ``target.topic`` with ``message["priority"]``."""

    @abc.abstractmethod
    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        """Consume RPC messages for ``target.topic`` (shared with other servers),
        ``target.topic`` + ``target.server`` and the topic's fanout.
        Returns once the subscription is in place."""

    @abc.abstractmethod
    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        """Consume notifications for each ``(target, priority)``; priorities are
        lower case. Listeners with the same ``pool`` share one stream (each
        message to one of them); every distinct pool gets its own copy."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Close connections and join threads. Idempotent."""

    def health(self) -> Sequence[HealthStat]:
        """Readings of the driver's state (see :data:`HEALTH_STATS`); none by default.

        Called from a metrics collector's thread, at any time, also before
        first use and after :meth:`cleanup`: it MUST be cheap, MUST NOT block
        on the network or on a lock held during I/O, and MUST NOT create
        connections or threads. A reading it cannot take cheaply is left
        out. Exceptions are logged (rate-limited) and the readings dropped.
        """
        return ()
