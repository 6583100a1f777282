"""Declarations on pika: core's :class:`~polymsg.amqp.Declarer` on a channel of its own.

Core decides what to declare, what to remember per connection and what a
refusal means (``406 PRECONDITION_FAILED``: a warning, then a passive check,
the queue or exchange used as it is). A broker that refuses a declaration
closes the channel it came on; running declarations on a dedicated channel
keeps that away from the channels that publish (with confirms in flight)
and consume. This module runs each step on that channel and reopens it after
a refusal; a connection loss forgets what was declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polymsg import amqp
from polymsg_pika._errors import describe, reply_code
from polymsg_pika._link import Link

__all__ = ["Declarer"]


class _Channel:
    """:class:`~polymsg.amqp.DeclareChannel` on a pika channel: each step's
    ``done`` is called from the I/O loop, by the broker's answer or, when the
    broker refused, by the channel closing (:meth:`Declarer._on_channel_closed`)."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.pending: amqp.DeclareDone | None = None

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        return getattr(self.channel.connection, "server_properties", None)

    def declare_exchange(self, exchange: amqp.ExchangeSpec, passive: bool,
                         done: amqp.DeclareDone) -> None:
        self.pending = done
        self.channel.exchange_declare(exchange.name, exchange.type, passive=passive,
                                      durable=exchange.durable,
                                      auto_delete=exchange.auto_delete, callback=self._ok)

    def declare_queue(self, queue: amqp.QueueSpec, passive: bool,
                      done: amqp.DeclareDone) -> None:
        self.pending = done
        self.channel.queue_declare(queue.name, passive=passive, durable=queue.durable,
                                   auto_delete=queue.auto_delete,
                                   arguments=dict(queue.arguments) or None, callback=self._ok)

    def bind(self, queue: str, exchange: str, routing_key: str, done: amqp.DeclareDone) -> None:
        self.pending = done
        self.channel.queue_bind(queue, exchange, routing_key=routing_key, callback=self._ok)

    def delete_queue(self, name: str, done: amqp.DeclareDone) -> None:
        self.pending = done
        self.channel.queue_delete(name, callback=self._ok)

    def refusal(self, error: BaseException) -> tuple[int | None, str]:
        return reply_code(error), describe(error)

    def settle(self, error: BaseException | None) -> None:
        done, self.pending = self.pending, None
        if done is not None:
            done(error)

    def _ok(self, _frame: Any) -> None:
        self.settle(None)


class Declarer:
    """core's declarer over one channel of ``link`` (I/O thread only)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._channel: _Channel | None = None
        self._core = amqp.Declarer(self._ready)
        link.add_user(self)

    # -- API (core's) -----------------------------------------------------------------
    def ensure(self, route: amqp.Route, done: amqp.DeclareDone, *,
               remember: bool = True) -> None:
        """See :meth:`polymsg.amqp.Declarer.ensure`."""
        self._core.ensure(route, done, remember=remember)

    def delete_queue(self, name: str, done: amqp.DeclareDone) -> None:
        """Delete queue ``name`` (whatever it holds), then call ``done``."""
        self._core.delete_queue(name, done)

    def known(self, route: amqp.Route) -> bool:
        """True when ``route`` was declared on the current connection."""
        return self._core.known(route)

    def forget(self, route: amqp.Route) -> None:
        """Declare ``route`` again next time (it was found missing)."""
        self._core.forget(route)

    def forget_all(self) -> None:
        """Declare every route again next time (something was found missing)."""
        self._core.forget_all()

    # -- LinkUser -------------------------------------------------------------------
    def link_opened(self, connection: Any) -> None:
        self._open_channel(connection)

    def link_lost(self, error: BaseException | None) -> None:
        self._channel = None
        self._core.reset()

    def attempt_failed(self, failure: amqp.Failure, new_round: bool) -> None:
        """Waiting jobs are owned by users, who count attempts themselves."""

    def wants_link(self) -> bool:
        """Jobs wait for a connection their owners want; they add no demand."""
        return False

    # -- the channel ------------------------------------------------------------------
    def _ready(self) -> _Channel | None:
        channel = self._channel
        if channel is not None and channel.channel.is_open:
            return channel
        if channel is None and self._link.is_open:
            self._open_channel(self._link.connection)
        else:
            self._link.want()
        return None

    def _open_channel(self, connection: Any) -> None:
        if self._channel is not None or not connection.is_open:
            return
        channel = connection.channel(on_open_callback=self._on_channel_open)
        channel.add_on_close_callback(self._on_channel_closed)
        self._channel = _Channel(channel)

    def _on_channel_open(self, channel: Any) -> None:
        if self._channel is not None and channel is self._channel.channel:
            self._core.resume()

    def _on_channel_closed(self, channel: Any, error: BaseException) -> None:
        current = self._channel
        if current is None or channel is not current.channel:
            return
        self._channel = None
        if not channel.connection.is_open:
            return  # the connection is going: link_lost restarts the job
        current.settle(error)  # refused: core decides (and asks for a channel again)
        if self._link.is_open:
            self._open_channel(self._link.connection)
