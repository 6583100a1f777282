"""The I/O port: what polymsg's AMQP engine needs of a client library.

The engine (links, declarations, publishing with confirms, subscriptions,
the reply queue) is written once, in core, against these protocols; each
RabbitMQ driver implements them over its client library (pika's
``SelectConnection``; py-amqp driven by an I/O thread of the driver's own).

Threading: every method here is called on the adapter's I/O thread (the
:class:`Loop`), and every callback the adapter makes runs there too, except
:meth:`Loop.submit`, :meth:`Loop.run` and :meth:`Loop.close`, which any
thread may call. Callbacks never raise into the adapter: the engine catches
what it must. A callback handed to a method (``on_open``, ``done``, the
:class:`ConnectionEvents` given to :meth:`Adapter.connect`...) never runs
before that method has returned: an adapter over a synchronous library
defers it (:meth:`Loop.submit`); the engine stores what
a method returns (a channel, a consumer tag) before its answer can arrive.

Values crossing the port are polymsg's own (plain ``bytes``, mappings of
AMQP basic properties by their AMQP names, the dataclasses below), never a
client library's frame or property objects. Errors the adapter hands over
(channel or connection closed, connecting failed) are the client library's
exceptions as they came: the engine only passes them to the adapter's
:meth:`Adapter.failure_of`, :meth:`Adapter.describe` and
:meth:`Adapter.reply_code`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from polymsg._amqp_connection import ConnectionSpec, Endpoint, Failure

__all__ = ["Adapter", "Channel", "Connection", "ConnectionEvents", "Delivered", "Loop",
           "Returned"]

T = TypeVar("T")

#: Called with nothing once the broker answered a step (declare, bind, qos...).
Done = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message a consumer received."""

    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    #: AMQP basic properties by name (``headers``, ``message_id``, ...); absent ones left out.
    properties: Mapping[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class Returned:
    """A ``mandatory`` message the broker could not route (``basic.return``)."""

    exchange: str
    routing_key: str
    reply_code: int
    reply_text: str
    properties: Mapping[str, Any]
    body: bytes


class Loop(Protocol):
    """The adapter's I/O thread: the only thread that touches the client library."""

    name: str
    #: Called on the I/O thread after each batch of submitted work.
    after_batch: list[Callable[[], None]]

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon (any thread); raise
        :class:`~polymsg.MessageDeliveryFailure` once the loop is closed."""

    def run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` on the I/O thread and return its result (any thread;
        inline on the I/O thread itself)."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        """Run ``fn`` after ``delay`` seconds (I/O thread); returns a handle."""

    def cancel(self, handle: Any) -> None:
        """Cancel a :meth:`call_later` handle (I/O thread)."""

    def in_loop(self) -> bool:
        """True on the I/O thread."""

    @property
    def started(self) -> bool:
        """True once the I/O thread runs (started by the first submission)."""

    def close(self, timeout: float = 10.0) -> None:
        """Stop once pending work ran, and join the thread (any thread; idempotent)."""


class Channel(Protocol):
    """One AMQP channel. Each ``done`` runs once the broker answered; a step the
    broker refuses closes the channel instead (its ``on_close`` callbacks run)."""

    @property
    def is_open(self) -> bool: ...

    @property
    def connection(self) -> Connection: ...

    def on_close(self, callback: Callable[[Channel, BaseException], None]) -> None:
        """Call ``callback(channel, error)`` once when the channel closes, whoever
        closed it (the broker, the connection going, :meth:`close`)."""

    def on_return(self, callback: Callable[[Returned], None]) -> None:
        """Call ``callback`` for every ``mandatory`` message the broker returns."""

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(consumer_tag)`` when the broker cancels a consumer."""

    def confirm(self, on_confirm: Callable[[int, bool, bool], None], done: Done) -> None:
        """Put the channel in confirm mode; ``on_confirm(delivery_tag, multiple,
        nack)`` for every ``basic.ack``/``basic.nack``. Delivery tags count the
        channel's publishes from 1."""

    def publish(self, exchange: str, routing_key: str, body: bytes,
                properties: Mapping[str, Any], mandatory: bool) -> None:
        """``basic.publish``; raise (any exception) when the channel cannot take it."""

    def declare_exchange(self, name: str, type: str, *, passive: bool, durable: bool,
                         auto_delete: bool, done: Done) -> None: ...

    def declare_queue(self, name: str, *, passive: bool, durable: bool, auto_delete: bool,
                      arguments: Mapping[str, Any], done: Done) -> None: ...

    def bind(self, queue: str, exchange: str, routing_key: str, done: Done) -> None: ...

    def delete_queue(self, name: str, done: Done) -> None: ...

    def qos(self, prefetch_count: int, done: Done) -> None: ...

    def consume(self, queue: str, on_message: Callable[[Channel, Delivered], None], *,
                auto_ack: bool, arguments: Mapping[str, Any] | None,
                done: Callable[[str], None]) -> str:
        """``basic.consume``; returns the consumer tag, ``done(tag)`` on consume-ok."""

    def cancel(self, consumer_tag: str) -> None: ...

    def ack(self, delivery_tag: int) -> None: ...

    def reject(self, delivery_tag: int, requeue: bool) -> None: ...

    def nack(self, delivery_tag: int, requeue: bool) -> None: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """One AMQP connection, opened by :meth:`Adapter.connect`."""

    @property
    def is_open(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        """What the broker said of itself on opening (``version``, ...)."""

    def channel(self, on_open: Callable[[Channel], None]) -> Channel:
        """Open a channel; ``on_open(channel)`` once the broker opened it."""

    def flush(self) -> None:
        """Send now what was written since the last flush (after each batch)."""

    def close(self) -> None:
        """Close; its events hear ``connection_closed`` once closed."""


class ConnectionEvents(Protocol):
    """What a connection tells its owner, on the I/O thread: exactly one of
    :meth:`connection_opened` and :meth:`connection_failed`; after the first,
    :meth:`connection_closed` once when it closes."""

    def connection_opened(self, connection: Connection) -> None: ...

    def connection_failed(self, error: BaseException | None) -> None: ...

    def connection_closed(self, error: BaseException | None) -> None: ...

    def connection_blocked(self, reason: str | None) -> None:
        """The broker stopped reading what is published (a resource alarm)."""

    def connection_unblocked(self) -> None: ...


class Adapter(Protocol):
    """A client library as the engine sees it."""

    def loop(self, name: str) -> Loop:
        """A new, not yet started, I/O thread."""

    def connect(self, loop: Loop, spec: ConnectionSpec, endpoint: Endpoint, name: str,
                events: ConnectionEvents) -> Connection:
        """Start opening a connection to ``endpoint`` (I/O thread; never blocks
        the loop for long); ``events`` hears how it goes."""

    def failure_of(self, error: BaseException | None, host: str) -> Failure:
        """Classify why connecting or a connection failed: permanent or transient."""

    def describe(self, error: BaseException | None) -> str:
        """A short text for ``error``, for logs and polymsg errors; no secrets."""

    def reply_code(self, error: BaseException | None) -> int | None:
        """The AMQP reply code a channel or connection was closed with, if any."""
