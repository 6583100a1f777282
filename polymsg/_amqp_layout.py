"""Declarations of polymsg's RabbitMQ drivers: exchanges, queues and routes per role.

What each role declares (and why every queue is durable and none exclusive)
is described in :mod:`polymsg._amqp`, the wire format this belongs to; this
module holds the values (:class:`ExchangeSpec`, :class:`QueueSpec`,
:class:`Route`), the policy that makes them (:class:`Layout`) and the message
properties that go with them.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from polymsg._exceptions import InvalidTarget
from polymsg._target import Target

__all__ = [
    "CONTENT_ENCODING",
    "CONTENT_TYPE",
    "PERSISTENT",
    "TRANSIENT",
    "ExchangeSpec",
    "Layout",
    "QueueSpec",
    "Route",
    "expiration",
    "fanout_queue_name",
    "properties",
    "queue_arguments",
    "reply_queue_name",
]

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"

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
