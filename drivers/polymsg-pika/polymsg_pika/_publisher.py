"""Publishing with pipelined publisher confirms.

One confirm-mode channel carries every message a transport sends (calls,
casts, notifications, replies). Messages are published as soon as their
route is declared, without waiting for earlier confirms: the broker
acknowledges delivery tags (often several at once, ``multiple``), and each
acknowledged message resolves its own future. Any number of messages are in
flight at once, so many threads sending share one round trip rather than
queueing behind each other's.

Every message is published ``mandatory``; one the broker cannot route comes
back (``basic.return``, matched by its ``message_id`` property) before its
confirm. A cast, call or notification whose queue vanished (expired, deleted)
is declared again and sent once more; a fanout that reached no server is
logged; a reply whose caller is gone is logged.

Delivery on a lost connection: an unconfirmed cast or notification is
published again after reconnecting (at least once) unless its ``retry``
budget is spent; an unconfirmed call fails at once rather than risk running
twice (at most once); a confirmed call keeps waiting for its reply.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from pika import spec

from polymsg.driver import amqp
from polymsg_pika._declare import Declarer
from polymsg_pika._errors import NOT_FOUND, delivery_failure, describe, reply_code
from polymsg_pika._link import Link

__all__ = ["Outgoing", "Publisher", "fail", "resolve"]

LOG = logging.getLogger(__name__)

CAST, CALL, REPLY = "cast", "call", "reply"
_MAX_CHANNEL_FAILURES = 3


def resolve(future: Future[Any] | None, value: Any) -> None:
    """Set ``future``'s result unless it is already done (cancelled by a timeout)."""
    if future is not None and not future.done():
        with contextlib.suppress(InvalidStateError):
            future.set_result(value)


def fail(future: Future[Any] | None, error: BaseException) -> None:
    """Fail ``future`` unless it is already done."""
    if future is not None and not future.done():
        with contextlib.suppress(InvalidStateError):
            future.set_exception(error)


@dataclass(eq=False)
class Outgoing:
    """One message to publish and the future its broker confirm resolves.

    ``route`` is declared first (``None``: publish as is, e.g. a reply).
    For calls ``future`` is the reply's, failed here only when sending fails.
    """

    kind: str
    label: str
    exchange: str
    routing_key: str
    body: bytes
    properties: Any
    message_id: str
    future: Future[Any] | None
    route: amqp.Route | None = None
    remember: bool = True
    retry: int | None = None
    fanout: bool = False
    ready: bool = False
    attempts: int = 0
    returns: int = 0
    channel_failures: int = 0
    returned: str | None = field(default=None, repr=False)

    def abandoned(self) -> bool:
        """True when nobody waits any more (a call that timed out before sending)."""
        return self.kind == CALL and self.future is not None and self.future.done()


class Publisher:
    """Publishes :class:`Outgoing` messages on a confirm channel of ``link`` (I/O thread)."""

    def __init__(self, link: Link, declarer: Declarer) -> None:
        self._link = link
        self._declarer = declarer
        self._queue: deque[Outgoing] = deque()
        self._waiting_routes: dict[amqp.Route, list[Outgoing]] = {}
        self._unconfirmed: dict[int, Outgoing] = {}
        self._by_id: dict[str, Outgoing] = {}
        self._channel: Any = None
        self._ready = False
        self._next_tag = 1
        link.add_user(self)

    def send(self, message: Outgoing) -> None:
        """Publish ``message`` as soon as the connection and its route are ready."""
        self._queue.append(message)
        self._pump()

    def close(self, error: BaseException) -> None:
        """Fail everything not yet confirmed with ``error`` (the transport is closing)."""
        pending = [*self._queue, *itertools.chain(*self._waiting_routes.values()),
                   *self._unconfirmed.values()]
        self._queue.clear()
        self._waiting_routes.clear()
        self._unconfirmed.clear()
        self._by_id.clear()
        for message in pending:
            fail(message.future, error)

    # -- LinkUser -------------------------------------------------------------------------
    def link_opened(self, connection: Any) -> None:
        self._open_channel(connection)

    def link_lost(self, error: BaseException | None) -> None:
        self._channel, self._ready = None, False
        self._requeue_unconfirmed(error, connection_lost=True)

    def attempt_failed(self, error: BaseException | None) -> None:
        waiting = [*self._queue, *itertools.chain(*self._waiting_routes.values())]
        for message in waiting:
            message.attempts += 1
            if message.retry is not None and message.attempts > message.retry:
                self._give_up(message, delivery_failure(
                    f"{message.label}: cannot reach the broker after {message.attempts} "
                    f"attempt(s)", error))

    def wants_link(self) -> bool:
        return bool(self._queue or self._waiting_routes or self._unconfirmed)

    # -- channel ----------------------------------------------------------------------------
    def _open_channel(self, connection: Any) -> None:
        if self._channel is not None or not connection.is_open:
            return
        channel = connection.channel(on_open_callback=self._on_channel_open)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        self._channel = channel

    def _on_channel_open(self, channel: Any) -> None:
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_select(channel))

    def _on_select(self, channel: Any) -> None:
        if channel is self._channel:
            self._ready, self._next_tag = True, 1
            self._pump()

    def _on_channel_closed(self, channel: Any, error: BaseException) -> None:
        if channel is not self._channel:
            return
        self._channel, self._ready = None, False
        if not channel.connection.is_open:
            return  # the whole connection is going: link_lost follows
        LOG.warning("%s: the broker closed the publishing channel: %s", self._link.name,
                    describe(error))
        if reply_code(error) == NOT_FOUND:
            self._declarer.forget_all()
        self._requeue_unconfirmed(error, connection_lost=False)
        self._open_channel(channel.connection)

    def _requeue_unconfirmed(self, error: BaseException | None, *, connection_lost: bool) -> None:
        unconfirmed = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._by_id.clear()
        for message in [*unconfirmed, *self._queue]:
            message.ready = False
        again = []
        for message in unconfirmed:
            if message.kind == CALL:
                fail(message.future, delivery_failure(
                    f"{message.label}: the connection was lost before the broker confirmed "
                    "the request (it may or may not run)", error))
                continue
            if connection_lost:
                message.attempts += 1
                exhausted = message.retry is not None and message.attempts > message.retry
            else:
                message.channel_failures += 1
                exhausted = message.channel_failures >= _MAX_CHANNEL_FAILURES
            if exhausted:
                self._give_up(message, delivery_failure(
                    f"{message.label}: not confirmed by the broker", error))
            else:
                again.append(message)
        self._queue.extendleft(reversed(again))

    # -- publishing ---------------------------------------------------------------------------
    def _pump(self) -> None:
        if not self._ready:
            if self._link.is_open:
                self._open_channel(self._link.connection)
            else:
                self._link.want()
            return
        queue = self._queue
        while queue and self._ready:
            message = queue.popleft()
            if message.abandoned():
                continue
            route = message.route
            if route is not None and not message.ready and not self._route_ready(message, route):
                continue
            self._publish(message)

    def _route_ready(self, message: Outgoing, route: amqp.Route) -> bool:
        waiting = self._waiting_routes.get(route)
        if waiting is not None:
            waiting.append(message)
            return False
        if message.remember and self._declarer.known(route):
            message.ready = True
            return True
        self._waiting_routes[route] = [message]
        self._declarer.ensure(route, functools.partial(self._route_declared, route),
                              remember=message.remember)
        return False

    def _route_declared(self, route: amqp.Route, error: BaseException | None) -> None:
        messages = self._waiting_routes.pop(route, [])
        for message in messages:
            if error is not None:
                self._give_up(message, delivery_failure(f"{message.label}: {error}"))
            else:
                message.ready = True
                self._queue.append(message)
        self._pump()

    def _publish(self, message: Outgoing) -> None:
        try:
            self._channel.basic_publish(message.exchange, message.routing_key, message.body,
                                        message.properties, mandatory=True)
        except Exception as exc:  # a closing channel or an invalid name: never raise here
            if self._channel is not None and self._channel.is_open:
                self._give_up(message, delivery_failure(f"{message.label}: pika refused it", exc))
            else:  # the channel is closing; its close callback reopens it and pumps
                self._ready = False
                self._queue.appendleft(message)
            return
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        self._unconfirmed[tag] = message
        self._by_id[message.message_id] = message

    # -- broker answers ------------------------------------------------------------------------
    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nack = isinstance(method, spec.Basic.Nack)
        tag = int(method.delivery_tag)
        if method.multiple:
            tags = list(itertools.takewhile(lambda t: t <= tag, self._unconfirmed))
        else:
            tags = [tag] if tag in self._unconfirmed else []
        for done in tags:
            message = self._unconfirmed.pop(done)
            self._by_id.pop(message.message_id, None)
            self._settled(message, nack)

    def _settled(self, message: Outgoing, nack: bool) -> None:
        if nack:
            self._give_up(message, delivery_failure(
                f"{message.label}: the broker refused to take it (basic.nack)"))
        elif message.returned is not None:
            self._on_returned(message)
        elif message.kind == CAST:
            resolve(message.future, None)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        message = self._by_id.get(getattr(properties, "message_id", None) or "")
        text = f"{method.reply_text} ({method.reply_code})"
        if message is None:
            LOG.warning("%s: the broker returned an unknown message sent to %r/%r: %s",
                        self._link.name, method.exchange, method.routing_key, text)
            return
        message.returned = text

    def _on_returned(self, message: Outgoing) -> None:
        text, message.returned = message.returned, None
        if message.kind == REPLY:
            LOG.info("%s dropped: the caller's reply queue %r is gone (%s)", message.label,
                     message.routing_key, text)
        elif message.fanout:
            LOG.info("%s reached no server: no queue is bound to %r", message.label,
                     message.exchange)
            resolve(message.future, None)
        elif message.returns == 0 and message.route is not None:
            LOG.info("%s: queue %r was missing (%s); declaring it and sending again",
                     message.label, message.routing_key, text)
            message.returns += 1
            message.ready = False
            self._declarer.forget(message.route)
            self._queue.append(message)
            self._pump()
        else:
            self._give_up(message, delivery_failure(
                f"{message.label}: the broker could not route it to a queue ({text})"))

    def _give_up(self, message: Outgoing, error: BaseException) -> None:
        if message.kind == REPLY:
            LOG.warning("%s was not delivered: %s", message.label, error)
        fail(message.future, error)
        for waiting in self._waiting_routes.values():
            if message in waiting:
                waiting.remove(message)
        if message in self._queue:
            self._queue.remove(message)

