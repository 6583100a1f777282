"""Publishing with pipelined publisher confirms.

Casts and notifications go out on a confirm-mode channel. They are published
as soon as their route is declared, without waiting for earlier confirms:
the broker acknowledges delivery tags (often many at once, ``multiple``), and
each acknowledged message resolves its own future. Any number of messages
are in flight at once, so threads sending together share round trips instead
of queueing behind each other's.

Calls and replies go out on a second channel without confirms: a call is
confirmed by its reply (and expires with its timeout), and a reply by the
caller receiving it, so a broker acknowledgement would only cost both sides
a frame each.

Every message is published ``mandatory``; one the broker cannot route comes
back (``basic.return``, matched by its ``message_id`` property). A cast,
call or notification whose queue vanished (expired, deleted) is declared
again and sent once more; a fanout that reached no server is logged; a reply
whose caller is gone is logged.

Delivery on a lost connection: an unconfirmed cast or notification is
published again after reconnecting (at least once) unless its ``retry``
budget is spent; a call already published is never sent again (at most
once): its caller gets the reply if the broker kept the request, or a
timeout. One the broker refuses (``basic.nack``) is published again, up to
three times in all.

The confirm window
==================
A cast or notification's future resolves on its confirm when the transport
has ``confirm_window = 0``. With a window (the default, 256; see
:class:`polymsg.amqp.ConfirmWindow`) the message is ``early``: its future resolves
as soon as it was published on the open confirm channel -- or at
once, in the sender's thread, when the channels are open and the route
already declared (``handed``), since only a lost connection could stop it
then and the message is sent again after one -- so one sending thread no
longer waits one broker round trip, nor a thread hand-over, per message; the
window bounds how many such messages await their confirm. The publisher
keeps an early message until its confirm exactly like any other (published
again after a lost connection, a nack or a vanished queue) and makes it
leave the window once settled. What fails before the message was ever
published (no connection within ``retry``, a route that cannot be declared,
a name the client library refuses) still fails its future, so its sender sees the error;
what fails later, when nobody waits any more, is logged as a WARNING naming
the message by kind, method or event type and unique id, with the reason.
``close()`` lists in one WARNING the early messages still unconfirmed.
A cast or notification whose future its sender cancels before it was
published (``polymsg.aio`` does when the awaiting task is cancelled) is
dropped: it leaves the window at once and is never published.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from polymsg._amqp import decode_reply
from polymsg._amqp_connection import NOT_FOUND, Failure, connection_error, give_up_reason
from polymsg._amqp_declaring import LinkDeclarer
from polymsg._amqp_delivery import Attempts, Outcome, Unrouted
from polymsg._amqp_driver import delivery_failure
from polymsg._amqp_layout import Route
from polymsg._amqp_link import Link
from polymsg._amqp_port import Channel, Connection, Returned

__all__ = ["Outgoing", "Publisher", "budget_error", "fail", "out_of_budget", "resolve"]

LOG = logging.getLogger(__name__)

CAST, CALL, REPLY = "cast", "call", "reply"


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
    An ``early`` message (a cast or notification under a confirm window)
    resolves ``future`` once published; ``on_settled`` runs once when the
    message is settled for good (confirmed, given up or dropped).
    """

    kind: str
    label: str
    exchange: str
    routing_key: str
    body: bytes
    properties: Mapping[str, Any]
    message_id: str
    future: Future[Any] | None
    route: Route | None = None
    remember: bool = True
    retry: int | None = None
    deadline: float | None = None  # a call's (time.monotonic()): given up then, unsent
    fanout: bool = False
    ready: bool = False
    tries: Attempts = field(default_factory=Attempts, repr=False)
    early: bool = False
    published: bool = False
    handed: bool = False
    on_settled: Callable[[], None] | None = field(default=None, repr=False)
    returned: str | None = field(default=None, repr=False)

    @property
    def confirmed(self) -> bool:
        """True for what goes on the confirm channel (casts and notifications)."""
        return self.kind == CAST

    def abandoned(self) -> bool:
        """True when nobody waits any more and it was never published: a call
        that timed out, or a cast or notification whose future was cancelled
        (under a confirm window it already left the window)."""
        future = self.future
        if future is None:
            return False
        if self.kind == CALL:
            return future.done()
        return self.kind == CAST and not self.published and future.cancelled()

    @property
    def unwatched(self) -> bool:
        """True when its sender no longer waits: an early message already published,
        or handed over to a publisher ready for its route."""
        return self.early and (self.published or self.handed)

    def settle(self) -> None:
        """Run ``on_settled`` (once): the message needs nothing more."""
        callback, self.on_settled = self.on_settled, None
        if callback is not None:
            callback()


class _Lane:
    """One publishing channel: with confirms or without."""

    __slots__ = ("channel", "confirm", "ready")

    def __init__(self, confirm: bool) -> None:
        self.confirm = confirm
        self.channel: Channel | None = None
        self.ready = False


class Publisher:
    """Publishes :class:`Outgoing` messages on two channels of ``link`` (I/O thread)."""

    def __init__(self, link: Link, declarer: LinkDeclarer) -> None:
        self._link = link
        self._declarer = declarer
        self._unrouted = Unrouted()
        self._queue: deque[Outgoing] = deque()
        self._waiting_routes: dict[Route, list[Outgoing]] = {}
        self._confirm_lane = _Lane(confirm=True)
        self._plain_lane = _Lane(confirm=False)
        self._next_tag = 1
        self._unconfirmed: dict[int, Outgoing] = {}
        self._by_id: dict[str, Outgoing] = {}
        self._calls: dict[str, Outgoing] = {}
        #: The most messages ever waiting for their confirm at once (diagnostics).
        self.most_in_flight = 0
        self._closed = False
        link.add_user(self)

    def send(self, message: Outgoing) -> None:
        """Publish ``message`` as soon as the connection and its route are ready."""
        if self._closed:  # handed over while the transport was closing
            fail(message.future, delivery_failure(f"{message.label}: the transport is closed"))
            message.settle()
            return
        self._queue.append(message)
        self._pump()

    def close(self, error: BaseException) -> None:
        """Fail everything not yet confirmed with ``error`` (the transport is closing);
        early messages already published are listed in one warning."""
        self._closed = True
        pending = [*self._queue, *itertools.chain(*self._waiting_routes.values()),
                   *self._unconfirmed.values()]
        self._queue.clear()
        self._waiting_routes.clear()
        self._unconfirmed.clear()
        self._by_id.clear()
        self._calls.clear()
        unconfirmed = [message.label for message in pending if message.unwatched]
        if unconfirmed:
            LOG.warning("%s: closing with %d cast(s) and notification(s) not confirmed by the "
                        "broker, maybe lost: %s", self._link.name, len(unconfirmed),
                        "; ".join(unconfirmed))
        for message in pending:
            fail(message.future, error)
            message.settle()

    def accepting(self, route: Route) -> bool:
        """True when a message for ``route`` would be published at once (both
        channels open, the route declared). Read from other threads: a hint."""
        return not self._closed and self._ready and self._declarer.known(route)

    @property
    def _ready(self) -> bool:
        return self._confirm_lane.ready and self._plain_lane.ready

    def _lanes(self) -> tuple[_Lane, _Lane]:
        return self._confirm_lane, self._plain_lane

    # -- LinkUser -------------------------------------------------------------------------
    def link_opened(self, connection: Connection) -> None:
        for lane in self._lanes():
            self._open_lane(lane, connection)

    def link_lost(self, error: BaseException | None) -> None:
        for lane in self._lanes():
            lane.channel, lane.ready = None, False
        self._requeue_unconfirmed(error, connection_lost=True)

    def attempt_failed(self, failure: Failure, new_round: bool) -> None:
        waiting = [*self._queue, *itertools.chain(*self._waiting_routes.values())]
        for message in waiting:
            if message.abandoned():  # nobody waits: stop wanting a connection for it
                self._drop(message)
                continue
            if out_of_budget(message, failure, new_round):
                self._give_up(message, budget_error(message.label, message.retry, failure))

    def wants_link(self) -> bool:
        return bool(self._queue or self._waiting_routes or self._unconfirmed)

    # -- channels ---------------------------------------------------------------------------
    def _open_lane(self, lane: _Lane, connection: Connection) -> None:
        if lane.channel is not None or not connection.is_open:
            return
        channel = connection.channel(functools.partial(self._on_channel_open, lane))
        channel.on_close(functools.partial(self._on_channel_closed, lane))
        channel.on_return(functools.partial(self._on_return, lane))
        lane.channel = channel

    def _on_channel_open(self, lane: _Lane, channel: Channel) -> None:
        if not lane.confirm:
            self._lane_ready(lane, channel)
            return
        channel.confirm(self._on_confirm, functools.partial(self._lane_ready, lane, channel))

    def _lane_ready(self, lane: _Lane, channel: Channel) -> None:
        if channel is lane.channel:
            lane.ready = True
            if lane.confirm:
                self._next_tag = 1
            self._pump()

    def _on_channel_closed(self, lane: _Lane, channel: Channel, error: BaseException) -> None:
        if channel is not lane.channel:
            return
        lane.channel, lane.ready = None, False
        if not channel.connection.is_open:
            return  # the whole connection is going: link_lost follows
        LOG.warning("%s: the broker closed a publishing channel: %s", self._link.name,
                    self._link.adapter.describe(error))
        if self._link.adapter.reply_code(error) == NOT_FOUND:
            self._declarer.forget_all()
        if lane.confirm:
            self._requeue_unconfirmed(error, connection_lost=False)
        self._open_lane(lane, channel.connection)

    def _requeue_unconfirmed(self, error: BaseException | None, *, connection_lost: bool) -> None:
        unconfirmed = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._by_id.clear()
        for message in [*unconfirmed, *self._queue]:
            message.ready = False
        again = []
        for message in unconfirmed:
            outcome = Outcome.LOST if connection_lost else Outcome.CHANNEL_CLOSED
            if message.tries.again(outcome):
                again.append(message)
            else:
                self._give_up(message, self._error(message, outcome, error))
        self._queue.extendleft(reversed(again))

    # -- publishing ---------------------------------------------------------------------------
    def _pump(self) -> None:
        if not self._ready:
            connection = self._link.connection
            if self._link.is_open and connection is not None:
                for lane in self._lanes():
                    self._open_lane(lane, connection)
            else:
                self._link.want()
            return
        queue = self._queue
        while queue and self._ready:
            message = queue.popleft()
            if message.abandoned():
                message.settle()
                continue
            route = message.route
            if route is not None and not message.ready and not self._route_ready(message, route):
                continue
            self._publish(message)

    def _route_ready(self, message: Outgoing, route: Route) -> bool:
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

    def _route_declared(self, route: Route, error: BaseException | None) -> None:
        messages = self._waiting_routes.pop(route, [])
        for message in messages:
            if error is not None:
                self._give_up(message, delivery_failure(f"{message.label}: {error}"))
            else:
                message.ready = True
                self._queue.append(message)
        self._pump()

    def _publish(self, message: Outgoing) -> None:
        lane = self._confirm_lane if message.confirmed else self._plain_lane
        channel = lane.channel
        assert channel is not None  # a ready lane has its channel
        try:
            channel.publish(message.exchange, message.routing_key, message.body,
                            message.properties, mandatory=True)
        except Exception as exc:  # a closing channel or an invalid name: never raise here
            if lane.channel is not None and lane.channel.is_open:
                self._give_up(message, delivery_failure(
                    f"{message.label}: the client library refused it", exc,
                    self._link.adapter.describe))
            else:  # the channel is closing; its close callback reopens it and pumps
                lane.ready = False
                self._queue.appendleft(message)
            return
        if lane.confirm:
            tag, self._next_tag = self._next_tag, self._next_tag + 1
            self._unconfirmed[tag] = message
            self._by_id[message.message_id] = message
            self.most_in_flight = max(self.most_in_flight, len(self._unconfirmed))
            if not message.published:
                message.published = True
                if message.early:
                    resolve(message.future, None)
        elif message.kind == CALL and message.future is not None:
            # Kept until answered, in case the broker returns it as unroutable.
            self._calls[message.message_id] = message
            if not message.tries.count(Outcome.RETURNED):
                message.future.add_done_callback(
                    functools.partial(_forget, self._calls, message.message_id))

    # -- broker answers ------------------------------------------------------------------------
    def _on_confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        if multiple:
            tags = list(itertools.takewhile(lambda t: t <= tag, self._unconfirmed))
        else:
            tags = [tag] if tag in self._unconfirmed else []
        for done in tags:
            message = self._unconfirmed.pop(done)
            self._by_id.pop(message.message_id, None)
            self._settled(message, nack)
        if nack:
            self._pump()

    def _settled(self, message: Outgoing, nack: bool) -> None:
        if nack:
            if message.tries.again(Outcome.NACKED):
                LOG.info("%s: the broker refused to take it (basic.nack); sending it again",
                         message.label)
                message.returned = None
                self._queue.append(message)
            else:
                self._give_up(message, self._error(message, Outcome.NACKED))
        elif message.returned is not None:
            self._on_returned(message)
        else:
            resolve(message.future, None)
            message.settle()

    def _on_return(self, lane: _Lane, returned: Returned) -> None:
        message_id = str(returned.properties.get("message_id") or "")
        text = f"{returned.reply_text} ({returned.reply_code})"
        if lane.confirm:
            message = self._by_id.get(message_id)
            if message is not None:
                message.returned = text  # acted on when its confirm arrives
                return
        else:
            message = self._calls.pop(message_id, None)
            if message is not None:
                message.returned = text
                self._on_returned(message)
                return
            if not returned.exchange:
                self._unrouted.reply(_reply_id(returned.body), returned.routing_key, text)
                return
        LOG.warning("%s: the broker returned an unknown message sent to %r/%r: %s",
                    self._link.name, returned.exchange, returned.routing_key, text)

    def _on_returned(self, message: Outgoing) -> None:
        text, message.returned = message.returned, None
        if message.fanout:
            self._unrouted.fanout(message.label, message.exchange)
            resolve(message.future, None)
            message.settle()
        elif message.route is not None and message.tries.again(Outcome.RETURNED):
            LOG.info("%s: queue %r was missing (%s); declaring it and sending again",
                     message.label, message.routing_key, text)
            message.ready = False
            self._declarer.forget(message.route)
            self._queue.append(message)
            self._pump()
        else:
            self._give_up(message, message.tries.error(message.label, Outcome.RETURNED,
                                                       text or ""))

    def _error(self, message: Outgoing, outcome: Outcome,
               cause: BaseException | None = None) -> BaseException:
        detail = self._link.adapter.describe(cause) if cause is not None else ""
        error = message.tries.error(message.label, outcome, detail)
        error.__cause__ = cause
        return error

    def _give_up(self, message: Outgoing, error: BaseException) -> None:
        if message.kind == REPLY or message.unwatched:
            LOG.warning("%s was not delivered: %s", message.label,
                        str(error).removeprefix(f"{message.label}: "))
        fail(message.future, error)
        self._drop(message)

    def _drop(self, message: Outgoing) -> None:
        """``message`` needs nothing more: settle it and forget it."""
        message.settle()
        for waiting in self._waiting_routes.values():
            if message in waiting:
                waiting.remove(message)
        if message in self._queue:
            self._queue.remove(message)


def out_of_budget(message: Outgoing, failure: Failure, new_round: bool) -> bool:
    """Count a failed connection round against ``message``; True when it is to
    fail now (a permanent failure, or its ``retry`` is spent)."""
    if new_round and not message.tries.again(Outcome.LOST):
        return True
    return failure.permanent


def budget_error(label: str, retry: int | None, failure: Failure) -> BaseException:
    """The error of a message given up for want of a connection."""
    return connection_error(failure, what=label, gave_up=give_up_reason(retry, None))


def _forget(calls: dict[str, Outgoing], message_id: str, _future: Future[Any]) -> None:
    calls.pop(message_id, None)


def _reply_id(body: bytes) -> str:
    try:
        return decode_reply(body).msg_id
    except Exception:  # a garbled reply of ours is still only worth a log line
        return "?"
