"""The AMQP 0-9-1 wire format of polymsg's RabbitMQ drivers.

Both RabbitMQ drivers (``rabbit+kombu`` and ``rabbit+pika``) speak the format
oslo.messaging's ``rabbit`` driver uses, so a polymsg service and an
oslo.messaging service on the same broker call each other and read each
other's notifications, and a client of one polymsg driver talks to a server
of the other. This module holds that format once, free of any broker client:
drivers get plain values (:class:`ExchangeSpec`, :class:`QueueSpec`,
:class:`Route`, bytes and a properties dict) and turn them into calls of
their own library. Drivers reach it as ``polymsg.amqp``.

Bodies
======
Every body is the JSON "2.0 envelope"::

    {"oslo.version": "2.0", "oslo.message": "<the message, as JSON text>"}

published with ``content_type="application/json"`` and
``content_encoding="utf-8"``. Inside, a message is a flat JSON object:

* request: ``method``, ``args`` and, when set, ``namespace`` and
  ``version``; a call adds ``_msg_id`` (the reply's correlation id),
  ``_reply_q`` (the caller's reply queue) and ``_timeout`` (its call-monitor
  timeout in seconds, or ``null``);
* notification: ``message_id``, ``publisher_id``, ``event_type``,
  ``priority`` (upper case), ``payload`` and ``timestamp``;
* reply: ``result``, ``failure`` (the failure dict as JSON *text*, or
  ``null``), ``ending`` (``true`` on the final reply) and ``_msg_id``; a
  call-monitor heartbeat is a reply with ``result`` and ``failure``
  ``null`` and ``ending`` ``false``, sent every ``_timeout / 2`` seconds
  while the call runs.

Requests and notifications carry the caller's context flattened into
``_context_<key>`` fields, and every message a ``_unique_id`` (hex) that
receivers may use to drop duplicates. A body without the envelope is read as
the bare message (what older senders and oslo.messaging's ``messaging``
notification driver publish).

Names and declarations
======================
========================  =========================================  ==============================
what                      exchange (type)                            queue (routing key)
========================  =========================================  ==============================
RPC to a topic            ``<exchange>`` (topic)                     ``<topic>`` (``<topic>``)
RPC to one server         ``<exchange>`` (topic)                     ``<topic>.<server>`` (same)
fanout cast               ``<topic>_fanout`` (fanout, auto-delete)   ``<topic>_fanout_<hex>`` (one
                                                                     per server, ``x-expires``), or
                                                                     the stream ``<topic>_fanout``
reply                     the default exchange ``""``                ``reply_<hex>`` (one per
                                                                     transport, ``x-expires``)
notification              ``<exchange>`` (topic)                     ``<topic>.<priority>``, or the
                                                                     pool's name (routing key
                                                                     ``<topic>.<priority>``)
========================  =========================================  ==============================

RPC queues and fanout exchanges of targets on an exchange other than the
control exchange get the prefix ``<exchange>/`` (see :meth:`Layout.scoped`),
so exchanges isolate as polymsg promises; oslo.messaging services share the
control exchange, where the names above apply unchanged. With the option
``exchange_scoped_names = false`` the names above apply on every exchange
(oslo.messaging's naming; exchanges then no longer isolate RPC). Notification queues
keep oslo.messaging's names on every exchange, so a listener can collect the
notifications other services publish on their own exchanges.

Every queue is durable and none exclusive: RabbitMQ 4.3 refuses
non-durable non-exclusive queues, and an exclusive queue dies with its
connection (a reply in flight would be lost, a fast reconnect would meet
``RESOURCE_LOCKED``). Reply and fanout queues expire after
:attr:`Layout.transient_queue_ttl` without a consumer; topic, server and
notification queues store messages until a consumer takes them. Which queue
type each role gets under oslo.messaging's ``rabbit_quorum_queue``,
``rabbit_transient_quorum_queue`` and ``rabbit_stream_fanout`` is in
:class:`Layout`; ``use_queue_manager`` names reply and fanout queues
``reply_<host>:<process>:<n>`` and ``<topic>_fanout_<host>:<process>:<n>``.

Garbage on the wire
===================
Every ``decode_*`` function raises :class:`~polymsg.SerializationError`
naming what is wrong (not JSON, not an object, an unknown envelope version,
a missing or mistyped field); drivers log it and drop the message.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from polymsg._exceptions import InvalidTarget, SerializationError
from polymsg._json import dumps, dumps_str, loads
from polymsg._target import Target

__all__ = [
    "CONTENT_ENCODING",
    "CONTENT_TYPE",
    "ENVELOPE_VERSION",
    "PERSISTENT",
    "TRANSIENT",
    "ExchangeSpec",
    "Layout",
    "Notification",
    "QueueSpec",
    "ReplyFrame",
    "Request",
    "Route",
    "conflict_error",
    "consume_arguments",
    "decode_notification",
    "decode_reply",
    "decode_request",
    "encode_heartbeat",
    "encode_notification",
    "encode_reply",
    "encode_request",
    "expiration",
    "fanout_queue_name",
    "for_broker",
    "layout_from_options",
    "new_id",
    "next_stream_offset",
    "properties",
    "queue_arguments",
    "rabbit_opts",
    "reply_queue_name",
    "requeue_warning",
]

ENVELOPE_VERSION = "2.0"
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"

_VERSION_KEY = "oslo.version"
_MESSAGE_KEY = "oslo.message"
_CONTEXT_PREFIX = "_context_"
_UNIQUE_ID = "_unique_id"
_MSG_ID = "_msg_id"
_REPLY_Q = "_reply_q"
_TIMEOUT = "_timeout"

#: AMQP delivery modes.
TRANSIENT = 1
PERSISTENT = 2


# -- declarations -------------------------------------------------------------

@dataclass(frozen=True)
class ExchangeSpec:
    """An exchange to declare: ``type`` is ``"topic"``, ``"fanout"`` or ``"direct"``."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False


@dataclass(frozen=True)
class QueueSpec:
    """A queue to declare; ``arguments`` are its ``x-`` arguments (``x-expires``…).

    ``role`` is ``"shared"`` (topic, server, notification, pool),
    ``"transient"`` (reply, fanout) or ``"stream"`` (stream fanout): it names
    the option that decides the queue's type in errors. ``consume_arguments``
    go with ``basic.consume`` (a stream's ``x-stream-offset``).
    """

    name: str
    durable: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict, hash=False)
    role: str = field(default="shared", compare=False)
    #: Durability on a broker older than RabbitMQ 4 (``None``: ``durable``), see
    #: :func:`polymsg._amqp_topology.for_broker`.
    legacy_durable: bool | None = field(default=None, compare=False)
    consume_arguments: Mapping[str, Any] = field(default_factory=dict, hash=False,
                                                 compare=False)


@dataclass(frozen=True)
class Route:
    """Where a message goes, or what a consumer reads.

    ``exchange`` is ``None`` for the default exchange (no declaration, no
    binding); ``queue`` is ``None`` when nothing is to be declared besides the
    exchange (a fanout cast). A driver declares the exchange, the queue and
    binds the queue to the exchange with ``routing_key``, then publishes to
    ``exchange_name`` with ``routing_key`` or consumes ``queue``.
    """

    exchange: ExchangeSpec | None
    routing_key: str
    queue: QueueSpec | None = None

    @property
    def exchange_name(self) -> str:
        """The name to publish to (``""`` is the default exchange)."""
        return self.exchange.name if self.exchange is not None else ""


@dataclass(frozen=True)
class Layout:
    """Declaration policy: queue types and durability per role, transient queue expiry.

    No queue is ever declared both non-durable and non-exclusive (RabbitMQ
    4.3 refuses such queues and closes the connection): every queue below is
    durable, and none is exclusive, so reply and fanout queues outlive a
    lost connection (replies in flight wait for the reconnected caller) and
    disappear through ``x-expires`` once unused.

    =================  ======================  ===========================  =======================
    role               default (classic)       ``rabbit_quorum_queue`` /    ``rabbit_stream_fanout``
                                               ``..._transient_quorum_...``
    =================  ======================  ===========================  =======================
    topic, server,     durable classic         quorum (``x-delivery-limit``  (unchanged)
    notification       (``auto_delete`` as     and memory bounds when set)
                       ``amqp_auto_delete``)
    reply              durable classic,        quorum, ``x-expires``        (unchanged)
                       ``x-expires``
    fanout             durable classic per     quorum per server,           one stream per topic
                       server, ``x-expires``   ``x-expires``                ``<topic>_fanout``,
                                                                            ``x-max-age``
    =================  ======================  ===========================  =======================

    Exchanges are durable when ``durable`` (``amqp_durable_queues``) or
    ``quorum`` is set, as oslo.messaging declares them; fanout exchanges are
    auto-delete, durable with transient quorum queues. Messages are
    persistent when exchanges are durable. The defaults match
    oslo.messaging's options; an oslo.messaging service configured with the
    same options shares every queue, except that oslo.messaging on its
    defaults declares non-durable classic queues (polymsg uses such a queue
    as it is when it finds one, see :func:`polymsg._amqp_topology.conflict_error`).
    """

    durable: bool = False
    auto_delete: bool = False
    transient_queue_ttl: float | None = 1800.0
    control_exchange: str | None = None
    quorum: bool = False
    transient_quorum: bool = False
    quorum_delivery_limit: int = 0
    quorum_max_memory_length: int = 0
    quorum_max_memory_bytes: int = 0
    stream_fanout: bool = False
    #: Names reply and fanout queues (``use_queue_manager``); ``None``: random names.
    namer: Callable[[], str] | None = field(default=None, compare=False)

    @property
    def durable_exchanges(self) -> bool:
        """Topic exchanges and persistent messages: ``amqp_durable_queues`` or quorum."""
        return self.durable or self.quorum
    #: False: oslo.messaging's names on every exchange (see :meth:`scoped`).
    exchange_scoped_names: bool = True

    def exchange(self, name: str) -> ExchangeSpec:
        """The topic exchange ``name`` (a target's exchange)."""
        return ExchangeSpec(name, "topic", self.durable_exchanges, self.auto_delete)

    def fanout_exchange(self, topic: str, exchange: str | None = None) -> ExchangeSpec:
        """The fanout exchange of ``topic`` (for a target on ``exchange``)."""
        name = self.scoped(exchange, f"{topic}_fanout")
        return ExchangeSpec(name, "fanout", durable=self.transient_quorum, auto_delete=True)

    def scoped(self, exchange: str | None, name: str) -> str:
        """``name`` for an RPC queue or fanout exchange of a target on ``exchange``.

        On the control exchange (and when no control exchange is set) names
        are oslo.messaging's. oslo.messaging names RPC queues after the topic
        alone, so servers of one topic on two exchanges would share a queue;
        polymsg keeps exchanges apart by prefixing ``<exchange>/`` to the
        names of every other exchange, unless :attr:`exchange_scoped_names` is
        off (option ``exchange_scoped_names = false``): then names are
        oslo.messaging's on every exchange, so polymsg and oslo.messaging
        services interoperate on any exchange, at the cost of isolation:
        servers of one topic on two exchanges share the topic's queues and
        fanout exchange.
        """
        if (not self.exchange_scoped_names or exchange is None or self.control_exchange is None
                or exchange == self.control_exchange):
            return name
        return f"{exchange}/{name}"

    def _quorum_arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.quorum_delivery_limit:
            args["x-delivery-limit"] = self.quorum_delivery_limit
        if self.quorum_max_memory_length:
            args["x-max-in-memory-length"] = self.quorum_max_memory_length
        if self.quorum_max_memory_bytes:
            args["x-max-in-memory-bytes"] = self.quorum_max_memory_bytes
        return args

    def shared_queue(self, name: str, queue_ttl: float | None = None) -> QueueSpec:
        """A topic, server or notification queue; ``queue_ttl`` becomes ``x-expires``.

        Durable whatever ``amqp_durable_queues`` says (that option makes
        exchanges durable and messages persistent), except on brokers older
        than RabbitMQ 4, where a classic queue keeps oslo.messaging's
        durability (``legacy_durable``) so services on its defaults share it;
        quorum queues cannot be auto-delete, so ``amqp_auto_delete`` applies
        to classic ones only.
        """
        args = queue_arguments(queue_ttl)
        if self.quorum:
            return QueueSpec(name, True, False, {**self._quorum_arguments(), **args}, "shared")
        return QueueSpec(name, True, self.auto_delete, args, "shared",
                         legacy_durable=self.durable)

    def transient_queue(self, name: str, queue_ttl: float | None = None) -> QueueSpec:
        """A reply or fanout queue: expires after ``queue_ttl`` (default: the layout's)."""
        ttl = queue_ttl if queue_ttl is not None else self.transient_queue_ttl
        args = queue_arguments(ttl)
        if self.transient_quorum:
            args = {**self._quorum_arguments(), **args}
        return QueueSpec(name, durable=True, auto_delete=False, arguments=args, role="transient")

    def stream_queue(self, name: str) -> QueueSpec:
        """The fanout stream of a topic: messages kept ``transient_queue_ttl`` seconds.

        A consumer starts at the next message published (``x-stream-offset``
        ``next``), not at what the stream already holds.
        """
        args: dict[str, Any] = {"x-queue-type": "stream"}
        if self.transient_queue_ttl:
            args["x-max-age"] = f"{math.ceil(self.transient_queue_ttl)}s"
        return QueueSpec(name, durable=True, auto_delete=False, arguments=args, role="stream",
                         consume_arguments={"x-stream-offset": "next"})

    def reply_queue_name(self) -> str:
        """A reply queue name: ``reply_<hex>``, or stable with ``use_queue_manager``."""
        return f"reply_{self.namer()}" if self.namer is not None else reply_queue_name()

    def fanout_queue_name(self, topic: str) -> str:
        """A fanout queue name for one server of ``topic`` (stable with the queue manager)."""
        if self.stream_fanout:
            return f"{topic}_fanout"
        return f"{topic}_fanout_{self.namer()}" if self.namer is not None else \
            fanout_queue_name(topic)

    def send_route(self, target: Target, queue_ttl: float | None = None) -> Route:
        """Where a call or cast to ``target`` is published.

        The queue (``topic`` or ``topic.server``) is what the sender declares
        so the message waits for a server that has not started yet; a fanout
        route declares only its exchange.
        """
        topic = _require(target.topic, "topic")
        exchange = _exchange_of(target)
        if target.fanout:
            return Route(self.fanout_exchange(topic, exchange), topic)
        key = f"{topic}.{target.server}" if target.server else topic
        queue = self.shared_queue(self.scoped(exchange, key), queue_ttl)
        return Route(self.exchange(exchange), key, queue)

    def server_routes(self, target: Target, queue_ttl: float | None = None) -> list[Route]:
        """The three queues an RPC server consumes: topic, topic.server, fanout."""
        topic = _require(target.topic, "topic")
        server = _require(target.server, "server")
        name = _exchange_of(target)
        exchange = self.exchange(name)
        key = f"{topic}.{server}"
        fanout_queue = self.scoped(name, self.fanout_queue_name(topic))
        fanout = (self.stream_queue(fanout_queue) if self.stream_fanout
                  else self.transient_queue(fanout_queue, queue_ttl))
        return [
            Route(exchange, topic, self.shared_queue(self.scoped(name, topic), queue_ttl)),
            Route(exchange, key, self.shared_queue(self.scoped(name, key), queue_ttl)),
            Route(self.fanout_exchange(topic, name), topic, fanout),
        ]

    def notification_route(self, target: Target, priority: str, pool: str | None = None,
                           queue_ttl: float | None = None) -> Route:
        """The queue of notifications of ``priority`` on ``target.topic``.

        Without a pool the queue is named after its routing key
        ``<topic>.<priority>`` (where senders store notifications); a pool
        gets its own queue, named after the pool.
        """
        topic = _require(target.topic, "topic")
        key = f"{topic}.{priority.lower()}"
        queue = self.shared_queue(pool or key, queue_ttl)
        return Route(self.exchange(_exchange_of(target)), key, queue)

    def message_properties(self, ttl: str | None = None) -> dict[str, Any]:
        """Properties of a request or notification: persistent only when exchanges are
        durable (``amqp_durable_queues`` or quorum), as oslo.messaging sends them."""
        return properties(ttl=ttl, persistent=self.durable_exchanges)

    def reply_route(self, queue: str) -> Route:
        """Replies go through the default exchange, keyed by the reply queue's name."""
        return Route(None, queue, self.transient_queue(queue))


def reply_queue_name() -> str:
    """A fresh reply queue name: ``reply_<hex>``."""
    return f"reply_{uuid.uuid4().hex}"


def fanout_queue_name(topic: str) -> str:
    """A fresh fanout queue name for one server of ``topic``."""
    return f"{topic}_fanout_{uuid.uuid4().hex}"


class _Ids:
    """Message ids: a random per-process prefix and a counter. As unique as
    uuid4 for this purpose, without a system call per message."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_new_id = _Ids()


def new_id() -> str:
    """A fresh message id (32 hex digits), unique across processes."""
    return _new_id()


def queue_arguments(queue_ttl: float | None) -> dict[str, Any]:
    """``{"x-expires": ms}`` for a queue TTL in seconds; ``{}`` for ``None``."""
    if queue_ttl is None:
        return {}
    return {"x-expires": max(1, math.ceil(queue_ttl * 1000))}


def expiration(*ttls: float | None) -> str | None:
    """The per-message ``expiration`` property (milliseconds, as text) for the
    smallest of ``ttls`` in seconds; ``None`` when all are ``None``."""
    given = [t for t in ttls if t is not None]
    if not given:
        return None
    return str(max(0, math.ceil(min(given) * 1000)))


def properties(*, ttl: str | None = None, persistent: bool = True) -> dict[str, Any]:
    """The message properties of a body from this module; ``ttl`` from :func:`expiration`."""
    props: dict[str, Any] = {
        "content_type": CONTENT_TYPE,
        "content_encoding": CONTENT_ENCODING,
        "delivery_mode": PERSISTENT if persistent else TRANSIENT,
    }
    if ttl is not None:
        props["expiration"] = ttl
    return props


def _require(value: str | None, what: str) -> str:
    if not value:
        raise InvalidTarget(f"the target needs a {what} here")
    return value


def _exchange_of(target: Target) -> str:
    # The facade fills in the configured control exchange before a driver
    # sees a target; a bare target here is a driver bug, not user input.
    return _require(target.exchange, "exchange")


# -- encoding -----------------------------------------------------------------

def _envelope(raw: dict[str, Any]) -> bytes:
    return dumps({_VERSION_KEY: ENVELOPE_VERSION, _MESSAGE_KEY: dumps_str(raw)})


def _with_context(raw: dict[str, Any], ctxt: Mapping[str, Any],
                  unique_id: str | None = None) -> dict[str, Any]:
    if not isinstance(ctxt, Mapping):
        raise SerializationError(f"the context must be a dict, not {type(ctxt).__name__}")
    for key, value in ctxt.items():
        if not isinstance(key, str):
            raise SerializationError(f"context keys must be strings, got {key!r}")
        raw[_CONTEXT_PREFIX + key] = value
    raw[_UNIQUE_ID] = unique_id or new_id()
    return raw


def encode_request(ctxt: Mapping[str, Any], message: Mapping[str, Any], *,
                   msg_id: str | None = None, reply_q: str | None = None,
                   unique_id: str | None = None,
                   call_monitor_timeout: float | None = None) -> bytes:
    """The body of an RPC request; a call passes ``msg_id`` and ``reply_q``.

    ``unique_id`` (default: a new one) lets a sender name the message in
    its logs by the id receivers see. ``call_monitor_timeout`` (calls only)
    goes out as ``_timeout``: the server then sends a heartbeat frame
    (:func:`encode_heartbeat`) every ``_timeout / 2`` seconds while the
    call runs; ``null`` asks for none.

    ``namespace`` and ``version`` are left out when ``None``, as
    oslo.messaging's servers read a missing version as ``"1.0"``.
    """
    raw: dict[str, Any] = {"method": message["method"], "args": message.get("args") or {}}
    for key in ("namespace", "version"):
        if message.get(key) is not None:
            raw[key] = message[key]
    if msg_id is not None:
        raw[_MSG_ID] = msg_id
        raw[_REPLY_Q] = reply_q
        raw[_TIMEOUT] = call_monitor_timeout
    return _envelope(_with_context(raw, ctxt, unique_id))


def encode_notification(ctxt: Mapping[str, Any], message: Mapping[str, Any], *,
                        unique_id: str | None = None) -> bytes:
    """The body of a notification (the message dict of the driver SPI)."""
    raw = {key: message.get(key) for key in _NOTIFICATION_FIELDS}
    return _envelope(_with_context(raw, ctxt, unique_id))


def encode_reply(msg_id: str, result: Any = None, failure: Mapping[str, Any] | None = None,
                 *, ending: bool = True) -> bytes:
    """The body of a call's reply; ``failure`` is carried as JSON text."""
    raw = {
        "result": result,
        "failure": dumps_str(dict(failure)) if failure is not None else None,
        "ending": ending,
        _MSG_ID: msg_id,
        _UNIQUE_ID: new_id(),
    }
    return _envelope(raw)


def encode_heartbeat(msg_id: str) -> bytes:
    """The body of a call-monitor heartbeat for call ``msg_id``: a reply frame
    with no result, no failure and ``ending`` false."""
    return encode_reply(msg_id, None, None, ending=False)


# -- decoding -----------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """A decoded RPC request: the SPI's ``ctxt`` and ``message``, plus the reply
    address (``msg_id`` and ``reply_q`` are ``None`` for casts)."""

    ctxt: dict[str, Any]
    message: dict[str, Any]
    msg_id: str | None
    reply_q: str | None
    unique_id: str | None
    #: The caller's ``_timeout`` (seconds between heartbeats it tolerates),
    #: ``None`` unless a positive finite number.
    call_monitor_timeout: float | None = None


@dataclass(frozen=True)
class Notification:
    """A decoded notification: the SPI's ``ctxt`` and ``message``."""

    ctxt: dict[str, Any]
    message: dict[str, Any]
    unique_id: str | None


@dataclass(frozen=True)
class ReplyFrame:
    """A decoded reply. ``ending`` is false on interim frames (oslo.messaging's
    call-monitor heartbeats, and the first half of replies from old senders)."""

    msg_id: str
    result: Any
    failure: dict[str, Any] | None
    ending: bool

    @property
    def heartbeat(self) -> bool:
        """True for a call-monitor heartbeat: interim, with no result and no failure."""
        return not self.ending and self.result is None and self.failure is None


_NOTIFICATION_FIELDS = ("message_id", "publisher_id", "event_type", "priority", "payload",
                        "timestamp")


def _open(body: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Body -> the flat message object, through the envelope when there is one."""
    data = loads(body)
    if not isinstance(data, dict):
        raise SerializationError(f"message body is a JSON {type(data).__name__}, not an object")
    if _VERSION_KEY not in data and _MESSAGE_KEY not in data:
        return data
    version = data.get(_VERSION_KEY)
    if not isinstance(version, str) or version.split(".")[0] != "2":
        raise SerializationError(f"unsupported message envelope version {version!r}")
    inner = data.get(_MESSAGE_KEY)
    if not isinstance(inner, str):
        raise SerializationError("message envelope has no 'oslo.message' text")
    raw = loads(inner)
    if not isinstance(raw, dict):
        raise SerializationError(f"enveloped message is a JSON {type(raw).__name__}, not an object")
    return raw


def _context(raw: Mapping[str, Any]) -> dict[str, Any]:
    start = len(_CONTEXT_PREFIX)
    return {key[start:]: value for key, value in raw.items() if key.startswith(_CONTEXT_PREFIX)}


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise SerializationError(f"message field {key!r} must be a string, got {value!r}")
    return value


def _required_str(raw: Mapping[str, Any], key: str) -> str:
    value = _optional_str(raw, key)
    if not value:
        raise SerializationError(f"message has no {key!r}")
    return value


def decode_request(body: bytes | bytearray | memoryview | str) -> Request:
    """Read an RPC request body; garbage raises :class:`~polymsg.SerializationError`."""
    raw = _open(body)
    method = _required_str(raw, "method")
    args = raw.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise SerializationError(f"message field 'args' must be an object, got {args!r}")
    message = {"method": method, "args": args, "namespace": _optional_str(raw, "namespace"),
               "version": _optional_str(raw, "version")}
    msg_id = _optional_str(raw, _MSG_ID)
    reply_q = _optional_str(raw, _REPLY_Q)
    if msg_id and not reply_q:
        raise SerializationError(f"call {msg_id} names no reply queue")
    monitor = _call_monitor_timeout(raw.get(_TIMEOUT)) if msg_id else None
    return Request(_context(raw), message, msg_id or None, reply_q, _unique_id(raw), monitor)


def _call_monitor_timeout(value: Any) -> float | None:
    """A request's ``_timeout`` as seconds; ``None`` unless a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if 0 < seconds < math.inf else None


def decode_notification(body: bytes | bytearray | memoryview | str) -> Notification:
    """Read a notification body; garbage raises :class:`~polymsg.SerializationError`."""
    raw = _open(body)
    for key in ("publisher_id", "event_type"):
        _required_str(raw, key)
    if "payload" not in raw:
        raise SerializationError("notification has no 'payload'")
    message = {key: raw.get(key) for key in _NOTIFICATION_FIELDS}
    message["priority"] = _required_str(raw, "priority").upper()
    for key in ("message_id", "timestamp"):
        if message[key] is not None and not isinstance(message[key], str):
            message[key] = str(message[key])
    return Notification(_context(raw), message, _unique_id(raw))


def decode_reply(body: bytes | bytearray | memoryview | str) -> ReplyFrame:
    """Read a reply body; garbage raises :class:`~polymsg.SerializationError`."""
    raw = _open(body)
    msg_id = _required_str(raw, _MSG_ID)
    ending = raw.get("ending", False)
    if not isinstance(ending, bool):
        raise SerializationError(f"reply field 'ending' must be a boolean, got {ending!r}")
    return ReplyFrame(msg_id, raw.get("result"), _failure(raw.get("failure")), ending)


def _failure(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    data = loads(value) if isinstance(value, str) else value
    if not isinstance(data, dict):
        raise SerializationError(f"reply failure must be a JSON object, got {data!r}")
    args, kwargs, tb = data.get("args"), data.get("kwargs"), data.get("tb")
    return {
        "class": str(data.get("class") or "Exception"),
        "module": str(data.get("module") or ""),
        "message": str(data.get("message") or ""),
        "tb": [str(line) for line in tb] if isinstance(tb, list) else [],
        "args": list(args) if isinstance(args, list) else [],
        "kwargs": dict(kwargs) if isinstance(kwargs, dict) else {},
    }


def _unique_id(raw: Mapping[str, Any]) -> str | None:
    value = raw.get(_UNIQUE_ID)
    return value if isinstance(value, str) else None


# Options and layout shared by the RabbitMQ drivers (kept in their own module).
from polymsg._amqp_options import layout_from_options, rabbit_opts  # noqa: E402
from polymsg._amqp_topology import (  # noqa: E402
    conflict_error,
    consume_arguments,
    for_broker,
    next_stream_offset,
    requeue_warning,
)
