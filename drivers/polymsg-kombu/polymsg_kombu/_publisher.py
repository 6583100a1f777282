"""Publishing: one connection shared by every sending thread.

Casts and notifications go on a channel in confirm mode; calls' requests and
replies on a second channel without confirms (the reply, or its absence,
tells the caller what it needs). A publish is an :class:`~polymsg_kombu._link.Op`:
the thread finding the connection free writes every queued publish with one
system call, so concurrent senders neither queue up behind each other nor
pay a write each. A sender waiting alone for its confirm reads it off the
socket itself; when several wait, the link's I/O thread reads the confirms
and wakes them (RabbitMQ acknowledges many messages at once).

Routes are declared once per connection before their first publish. Requests
and notifications are published ``mandatory``: when the broker returns one
(its queue was deleted or expired since), the route's declaration is
forgotten and a confirmed message is declared and sent again; a returned
call fails at once through ``on_return``. Fanout casts are published
``mandatory`` too: one that reached no server is logged (at a bounded rate,
:class:`polymsg.amqp.Unrouted`) and counts as delivered.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import amqp as pyamqp

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure
from polymsg_kombu._declare import declare_route, needs_declaring
from polymsg_kombu._errors import (
    BACKEND_ERRORS,
    RETRYABLE,
    SessionLost,
    describe,
    failure_of,
    translated,
)
from polymsg_kombu._link import Link, Op, Session

__all__ = ["OnReturn", "Publisher"]

LOG = logging.getLogger(__name__)

ACK, NACK, RETURNED, LOST, UNDECLARED = "ack", "nack", "returned", "lost", "undeclared"

#: Longest a sender reading its own confirm waits on the socket at a time (seconds).
_LEAD_SLICE = 1.0
#: Confirmed sends in a row made while no other waited, before senders lead reads.
_LEAD_AFTER = 3

#: Told when RabbitMQ returns an unconfirmed message (a call's request or a
#: reply): its correlation id (the call's message id), exchange, routing key
#: and the broker's reason.
OnReturn = Callable[[str, str, str, str], None]


@dataclass(eq=False)
class Job:
    """A cast or notification in the confirm window, with all it takes to send it again."""

    route: amqp.Route
    body: bytes
    properties: Mapping[str, Any]
    retry: int | None
    mandatory: bool
    what: str


class _Undeclared(Exception):
    """Internal: the connection changed after the route was declared."""


class _Pending:
    """One confirmed publish: settled once by its confirm, or by its loss.
    ``on_settle`` (a windowed send) is told whether it was confirmed."""

    __slots__ = ("event", "on_settle", "outcome", "returned", "route", "what")

    def __init__(self, route: amqp.Route, what: str) -> None:
        self.route = route
        self.what = what
        self.event = threading.Event()
        self.returned = False
        self.outcome: str | None = None
        self.on_settle: Callable[[bool], None] | None = None

    def settle(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = RETURNED if outcome == ACK and self.returned else outcome
            self.event.set()
            if self.on_settle is not None:
                self.on_settle(self.outcome == ACK)

    def wait(self) -> str:
        self.event.wait()
        return self.outcome or LOST


class _Confirms:
    """The confirm bookkeeping of one session's channel (used under the link's lock)."""

    def __init__(self, session: Session, unrouted: amqp.Unrouted) -> None:
        self.session = session
        self.unrouted = unrouted
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.last_tag = 0

    def settle(self, outcome: str, delivery_tag: int, multiple: bool) -> None:
        pending = self.pending
        if not multiple:
            entry = pending.pop(delivery_tag, None)
            if entry is not None:
                entry.settle(outcome)
            return
        while pending:
            tag = next(iter(pending))
            if tag > delivery_tag:
                break
            pending.popitem(last=False)[1].settle(outcome)

    def on_return(self, exc: Exception, exchange: str, routing_key: str,
                  message: Any) -> None:
        try:
            entry = self.pending.get(int(message.properties.get("message_id", "")))
        except (TypeError, ValueError):
            entry = None
        if entry is not None and _is_fanout(entry.route):
            self.unrouted.fanout(entry.what, exchange)  # delivered to every server: none
            return
        self.session.declarer.forget_destination(exchange, routing_key)
        if entry is None:
            LOG.warning("RabbitMQ returned an unroutable message sent to exchange %r with key "
                        "%r: %s", exchange, routing_key, exc)
        else:
            entry.returned = True

    def lose(self) -> None:
        pending, self.pending = self.pending, OrderedDict()
        for entry in pending.values():
            entry.settle(LOST)


class _Send(Op):
    """A call's request or a reply: written on the unconfirmed channel.

    Its sender either waits for it (:meth:`wait`) or leaves it to whichever
    thread holds the lock, giving ``on_failed`` to be told of a failure."""

    __slots__ = ("_done", "error", "message", "on_failed", "route")

    def __init__(self, route: amqp.Route, message: Any,
                 on_failed: Callable[[BaseException], None] | None = None) -> None:
        self.route = route
        self.message = message
        self.on_failed = on_failed
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def run(self, session: Session) -> None:
        if needs_declaring(session, self.route):
            self.error = _Undeclared()
            return
        session.state["fast"].basic_publish(self.message, exchange=self.route.exchange_name,
                                            routing_key=self.route.routing_key, mandatory=True)

    def finish(self, error: BaseException | None) -> None:
        if self.error is None:
            self.error = error
        if self.on_failed is not None and self.error is not None:
            self.on_failed(self.error)
        self._done.release()

    def wait(self) -> BaseException | None:
        self._done.acquire()
        return self.error


class _ConfirmedSend(Op):
    """A cast or notification: written on the confirm channel, settled by its confirm."""

    __slots__ = ("body", "entry", "mandatory", "properties")

    def __init__(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any],
                 mandatory: bool, what: str) -> None:
        self.entry = _Pending(route, what)
        self.body = body
        self.properties = properties
        self.mandatory = mandatory

    def run(self, session: Session) -> None:
        route = self.entry.route
        if needs_declaring(session, route) and route.queue is not None:
            self.entry.settle(UNDECLARED)
            return
        confirms: _Confirms = session.state["confirms"]
        confirms.last_tag += 1
        tag = confirms.last_tag
        confirms.pending[tag] = self.entry
        props = dict(self.properties, message_id=str(tag)) if self.mandatory else self.properties
        session.channel.basic_publish(pyamqp.Message(self.body, **props),
                                      exchange=route.exchange_name,
                                      routing_key=route.routing_key, mandatory=self.mandatory)

    def finish(self, error: BaseException | None) -> None:
        if error is not None:
            self.entry.settle(LOST)


class Publisher:
    """Sends messages for one driver; see the module docstring."""

    def __init__(self, settings: amqp.RabbitSettings, on_return: OnReturn,
                 unrouted: amqp.Unrouted) -> None:
        self.link = Link("publisher", settings, on_open=self._on_open, on_lost=self._on_lost,
                         watch_socket=lambda: self._leader is None)
        self._on_return = on_return
        self._unrouted = unrouted
        self._lead_lock = threading.Lock()
        self._leader: _Pending | None = None
        self._alone = 0
        self.window: amqp.ConfirmWindow[Job] | None = None
        if settings.confirm_window > 0:
            self.window = amqp.ConfirmWindow(settings.confirm_window, self._resend,
                                             describe=lambda job: job.what)
        self._flush_timeout = settings.confirm_flush_timeout
        #: Send casts and notifications that wait for a connection or a declaration.
        self._helpers: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Wait for the confirm window to empty (``confirm_flush_timeout``), then
        close the connection (pending confirms fail as lost)."""
        window = self.window
        if window is not None and self.link.thread is not None:
            left = window.drain(self._flush_timeout)
            if left:
                LOG.warning("%d casts and notifications were still unconfirmed after %.1f s "
                            "when the transport closed; they may be lost: %s", len(left),
                            self._flush_timeout, "; ".join(job.what for job in left))
        if window is not None:
            window.close()
        self.link.close()
        if window is not None:
            window.join()
        with self._lead_lock:
            helpers = self._helpers
        if helpers is not None:  # the closed link fails what still waits (or is queued)
            helpers.shutdown(wait=True)

    def _on_open(self, session: Session) -> None:
        channel = session.channel
        channel.confirm_select()
        confirms = _Confirms(session, self._unrouted)
        session.state["confirms"] = confirms
        channel.events["basic_ack"].add(partial(confirms.settle, ACK))
        channel.events["basic_nack"].add(partial(confirms.settle, NACK))
        channel.events["basic_return"].add(confirms.on_return)
        fast = session.conn.channel()
        fast.events["basic_return"].add(partial(self._returned, session))
        session.state["fast"] = fast

    def _on_lost(self, session: Session) -> None:
        confirms = session.state.get("confirms")
        if confirms is not None:
            confirms.lose()

    def _returned(self, session: Session, exc: Exception, exchange: str, routing_key: str,
                  message: Any) -> None:
        session.declarer.forget_destination(exchange, routing_key)
        correlation_id = str(message.properties.get("correlation_id") or "")
        self.link.post(partial(self._on_return, correlation_id, exchange, routing_key,
                               describe(exc)))

    def _declare(self, session: Session, route: amqp.Route) -> None:
        if needs_declaring(session, route):
            with self.link.locked:
                if session.broken is not None:
                    raise SessionLost(describe(session.broken))
                declare_route(session, route, consumer=False)

    def _await(self, entry: _Pending, session: Session) -> str:
        """Wait for ``entry``'s confirm. A sender waiting alone reads it off the
        socket itself (the I/O thread stands aside meanwhile), saving a thread
        hand-over per cast; otherwise the I/O thread reads and wakes it."""
        with self._lead_lock:
            confirms: _Confirms = session.state["confirms"]
            alone = len(confirms.pending) <= 1
            self._alone = self._alone + 1 if alone else 0
            lead = self._leader is None and alone and self._alone >= _LEAD_AFTER
            if lead:
                self._leader = entry
            unread = self._leader is None and not self.link.watching
        if not lead:
            if unread:
                self.link.wake()  # nobody reads: the I/O thread must watch again
            return entry.wait()
        try:
            if self.link.watching:
                self.link.wake()  # the I/O thread stops watching the socket
            while not entry.event.is_set():
                if self.link.current() is not session:
                    break  # lost: _on_lost settles the entry
                try:
                    readable = session.wait_readable(_LEAD_SLICE)
                except BACKEND_ERRORS as exc:
                    self.link.break_session(session, exc)
                    break
                if readable:
                    self.link.read(session)
        finally:
            with self._lead_lock:
                self._leader = None
                others = bool(confirms.pending)
            if others:
                self.link.wake()
        return entry.wait()

    def send_now(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
                 correlation_id: str, on_failed: Callable[[BaseException], None]) -> bool:
        """Publish a call's request without waiting at all: written by this thread
        when the connection is free, else by the thread using it, before it
        lets go. False (nothing sent) when that needs a connection or a
        declaration first; ``on_failed`` is told when the write fails."""
        session = self.link.current()
        if session is None or needs_declaring(session, route):
            return False
        message = pyamqp.Message(body, **dict(properties, correlation_id=correlation_id))
        self.link.submit(_Send(route, message, on_failed))
        return True

    def send(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
             retry: int | None, correlation_id: str, what: str,
             deadline: float | None = None) -> None:
        """Publish a call's request or a reply, without waiting for a confirm.

        Returns once the frames are written (the reply, or its absence,
        tells the caller the rest). If RabbitMQ returns the message as
        unroutable, the publisher's ``on_return`` gets ``correlation_id``.
        """
        message = pyamqp.Message(body, **dict(properties, correlation_id=correlation_id))
        attempts = amqp.Attempts(retry)
        while True:
            lost = attempts.count(amqp.Outcome.LOST)
            session = self.link.session(None if retry is None else retry - lost, deadline)
            try:
                self._declare(session, route)
                op = _Send(route, message)
                self.link.submit(op)
                error = op.wait()
            except RETRYABLE as exc:
                error = exc
            if error is None:
                return
            if not isinstance(error, _Undeclared):
                if not isinstance(error, RETRYABLE):
                    raise MessageDeliveryFailure(f"{what} failed: {describe(error)}") from error
                self.link.break_session(session, error)
                _check_refused(what, session, error)
                if not attempts.again(amqp.Outcome.LOST):
                    raise attempts.error(what, amqp.Outcome.LOST) from error

    def publish(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
                retry: int | None, mandatory: bool, what: str) -> Future[None]:
        """Publish a cast or notification: through the confirm window when it has
        one (:class:`polymsg.amqp.ConfirmWindow`), else as :meth:`send_confirmed`.

        The future is done at once when the message was written (or, without
        a window, confirmed). When it needs a connection or a declaration
        first, a helper thread sends it the careful way and completes the
        future; cancelling the future meanwhile drops the message: it leaves
        the window at once and is never written."""
        window = self.window
        if window is None:
            self.send_confirmed(route, body, properties, retry=retry, mandatory=mandatory,
                                what=what)
            return _done()
        job = Job(route, body, properties, retry, mandatory, what)
        window.enter(job)
        try:
            if self._submit_windowed(window, job):
                return _done()
            future: Future[None] = Future()
            window.bind(job, future)
            try:
                self._careful().submit(self._send_careful, window, job, future)
            except RuntimeError as exc:  # closed meanwhile
                raise MessageDeliveryFailure(f"{what} failed: the transport is closed") from exc
        except BaseException:
            window.leave(job)
            raise
        return future

    def _careful(self) -> ThreadPoolExecutor:
        with self._lead_lock:
            if self._helpers is None:
                assert self.window is not None
                # as many as the window holds: one per message waiting, as when
                # each sender waited in its own thread
                self._helpers = ThreadPoolExecutor(self.window.size,
                                                   thread_name_prefix="polymsg-kombu-cast")
            return self._helpers

    def _send_careful(self, window: amqp.ConfirmWindow[Job], job: Job,
                      future: Future[None]) -> None:
        """On a helper thread: not connected, or the route is new on this
        connection: the careful way, which waits (and fails) per its retry budget."""
        try:
            with translated(job.what):
                self.send_confirmed(job.route, job.body, job.properties, retry=job.retry,
                                    mandatory=job.mandatory, what=job.what,
                                    abandoned=future.cancelled)
        except BaseException as exc:
            if not future.done():
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(exc)
        else:
            if not future.done():
                with contextlib.suppress(InvalidStateError):
                    future.set_result(None)
        finally:
            window.leave(job)

    def _submit_windowed(self, window: amqp.ConfirmWindow[Job], job: Job) -> bool:
        """Write ``job`` on the live session without waiting for its confirm;
        False when that needs a connection or a declaration first."""
        session = self.link.current()
        if session is None or needs_declaring(session, job.route):
            return False
        op = _ConfirmedSend(job.route, job.body, job.properties, job.mandatory, job.what)
        op.entry.on_settle = partial(window.settled, job)
        self.link.submit(op)
        if self._leader is None and not self.link.watching:
            self.link.wake()  # the I/O thread must watch for the confirm
        return True

    def _resend(self, job: Job) -> None:
        self.send_confirmed(job.route, job.body, job.properties, retry=job.retry,
                            mandatory=job.mandatory, what=job.what)

    def send_confirmed(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
                       retry: int | None, mandatory: bool, what: str,
                       abandoned: Callable[[], bool] = lambda: False) -> None:
        """Publish a cast or notification and block until RabbitMQ confirms it.

        A ``mandatory`` message the broker returns (its queue vanished) is
        declared and sent again. A refusal, or a lost connection once
        ``retry`` is exhausted, raises :class:`MessageDeliveryFailure`.
        Returns without writing it once ``abandoned()`` says its sender gave up.
        """
        attempts = amqp.Attempts(retry)
        while True:
            lost = attempts.count(amqp.Outcome.LOST)
            session = self.link.session(None if retry is None else retry - lost)
            if abandoned():
                return
            try:
                self._declare(session, route)
                if abandoned():
                    return
                op = _ConfirmedSend(route, body, properties, mandatory, what)
                self.link.submit(op)
                outcome = self._await(op.entry, session)
            except RETRYABLE as exc:
                self.link.break_session(session, exc)
                _check_refused(what, session, exc)
                outcome = LOST
            if outcome == UNDECLARED:
                continue
            result = _OUTCOMES[outcome]
            cause = session.broken
            if result is amqp.Outcome.LOST and cause is not None \
                    and not isinstance(cause, RETRYABLE):
                result = amqp.Outcome.CHANNEL_CLOSED  # the broker closed the channel
            if result is amqp.Outcome.CONFIRMED:
                return
            if not attempts.again(result):
                detail = describe(cause) if cause is not None and result is not \
                    amqp.Outcome.RETURNED else ""
                raise attempts.error(what, result, detail) from cause


def _is_fanout(route: amqp.Route) -> bool:
    return route.queue is None and route.exchange is not None \
        and route.exchange.type == "fanout"


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


_OUTCOMES = {ACK: amqp.Outcome.CONFIRMED, NACK: amqp.Outcome.NACKED,
             RETURNED: amqp.Outcome.RETURNED, LOST: amqp.Outcome.LOST}


def _check_refused(what: str, session: Session, exc: BaseException) -> None:
    """Raise at once when the broker closed the connection over what was sent
    (a declaration it refuses): sending again would only be refused again."""
    failure = failure_of(exc, session.host.label)
    if failure.permanent:
        raise amqp.connection_error(failure, what=what) from exc
