"""Declarations over the port: core's :class:`~polymsg._amqp_declare.Declarer` on a
channel of its own.

The declarer decides what to declare, what to remember per connection and
what a refusal means (``406 PRECONDITION_FAILED``: a warning, then a passive
check, the queue or exchange used as it is). A broker that refuses a
declaration closes the channel it came on; running declarations on a
dedicated channel keeps that away from the channels that publish (with
confirms in flight) and consume. This module runs each step on that channel
and reopens it after a refusal; a connection loss forgets what was declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polymsg._amqp_connection import Failure
from polymsg._amqp_declare import DeclareDone, Declarer
from polymsg._amqp_layout import ExchangeSpec, QueueSpec, Route
from polymsg._amqp_link import Link
from polymsg._amqp_port import Adapter, Channel, Connection

__all__ = ["LinkDeclarer"]


class _Steps:
    """:class:`~polymsg._amqp_declare.DeclareChannel` on a port channel: each step's
    ``done`` is called from the I/O loop, by the broker's answer or, when the
    broker refused, by the channel closing (:meth:`LinkDeclarer._on_channel_closed`)."""

    def __init__(self, channel: Channel, adapter: Adapter) -> None:
        self.channel = channel
        self.pending: DeclareDone | None = None
        self._adapter = adapter

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        return self.channel.connection.server_properties

    def declare_exchange(self, exchange: ExchangeSpec, passive: bool, done: DeclareDone) -> None:
        self.pending = done
        self.channel.declare_exchange(exchange.name, exchange.type, passive=passive,
                                      durable=exchange.durable,
                                      auto_delete=exchange.auto_delete, done=self._ok)

    def declare_queue(self, queue: QueueSpec, passive: bool, done: DeclareDone) -> None:
        self.pending = done
        self.channel.declare_queue(queue.name, passive=passive, durable=queue.durable,
                                   auto_delete=queue.auto_delete, arguments=queue.arguments,
                                   done=self._ok)

    def bind(self, queue: str, exchange: str, routing_key: str, done: DeclareDone) -> None:
        self.pending = done
        self.channel.bind(queue, exchange, routing_key, done=self._ok)

    def delete_queue(self, name: str, done: DeclareDone) -> None:
        self.pending = done
        self.channel.delete_queue(name, done=self._ok)

    def refusal(self, error: BaseException) -> tuple[int | None, str]:
        return self._adapter.reply_code(error), self._adapter.describe(error)

    def settle(self, error: BaseException | None) -> None:
        done, self.pending = self.pending, None
        if done is not None:
            done(error)

    def _ok(self) -> None:
        self.settle(None)


class LinkDeclarer:
    """Core's declarer over one channel of ``link`` (I/O thread only)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._steps: _Steps | None = None
        self._core = Declarer(self._ready)
        link.add_user(self)

    # -- the declarer's API -------------------------------------------------------------
    def ensure(self, route: Route, done: DeclareDone, *, remember: bool = True) -> None:
        """See :meth:`polymsg._amqp_declare.Declarer.ensure`."""
        self._core.ensure(route, done, remember=remember)

    def delete_queue(self, name: str, done: DeclareDone) -> None:
        """Delete queue ``name`` (whatever it holds), then call ``done``."""
        self._core.delete_queue(name, done)

    def known(self, route: Route) -> bool:
        """True when ``route`` was declared on the current connection."""
        return self._core.known(route)

    def forget(self, route: Route) -> None:
        """Declare ``route`` again next time (it was found missing)."""
        self._core.forget(route)

    def forget_all(self) -> None:
        """Declare every route again next time (something was found missing)."""
        self._core.forget_all()

    # -- LinkUser -----------------------------------------------------------------------
    def link_opened(self, connection: Connection) -> None:
        self._open_channel(connection)

    def link_lost(self, error: BaseException | None) -> None:
        self._steps = None
        self._core.reset()

    def attempt_failed(self, failure: Failure, new_round: bool) -> None:
        """Waiting jobs are owned by users, who count attempts themselves."""

    def wants_link(self) -> bool:
        """Jobs wait for a connection their owners want; they add no demand."""
        return False

    # -- the channel --------------------------------------------------------------------
    def _ready(self) -> _Steps | None:
        steps = self._steps
        if steps is not None and steps.channel.is_open:
            return steps
        connection = self._link.connection
        if steps is None and self._link.is_open and connection is not None:
            self._open_channel(connection)
        else:
            self._link.want()
        return None

    def _open_channel(self, connection: Connection) -> None:
        if self._steps is not None or not connection.is_open:
            return
        channel = connection.channel(self._on_channel_open)
        channel.on_close(self._on_channel_closed)
        self._steps = _Steps(channel, self._link.adapter)

    def _on_channel_open(self, channel: Channel) -> None:
        if self._steps is not None and channel is self._steps.channel:
            self._core.resume()

    def _on_channel_closed(self, channel: Channel, error: BaseException) -> None:
        current = self._steps
        if current is None or channel is not current.channel:
            return
        self._steps = None
        if not channel.connection.is_open:
            return  # the connection is going: link_lost restarts the job
        current.settle(error)  # refused: core decides (and asks for a channel again)
        connection = self._link.connection
        if self._link.is_open and connection is not None:
            self._open_channel(connection)
