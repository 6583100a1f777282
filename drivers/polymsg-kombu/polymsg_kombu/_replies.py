"""The transport's reply queue, read by a lone waiting caller itself.

Replies have a connection of their own (opened on the first call), and the
queue ``reply_<hex>`` is consumed without acknowledgements. When a call is
the only one waiting, its caller reads the socket itself (it "leads") and
gets its reply on its own thread, with no hand-over from an I/O thread:
sequential calls, the common case, avoid a thread switch each. While a
caller leads, the link's I/O thread leaves the socket alone (it goes on
sending heartbeats); whenever nobody leads -- several calls waiting at once,
or none -- the I/O thread reads and wakes the callers whose replies came.

This works through :meth:`_ReplyFuture.result`, which is how the facade
waits for a reply.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from functools import partial
from typing import Any

from polymsg.driver import MessageDeliveryFailure, Reply, SerializationError, amqp
from polymsg_kombu._declare import declare_route
from polymsg_kombu._errors import BACKEND_ERRORS
from polymsg_kombu._link import Link, Session
from polymsg_kombu._options import Settings

__all__ = ["ReplyRouter"]

LOG = logging.getLogger(__name__)

#: Longest the leader waits on the socket before looking around (seconds).
_LEAD_SLICE = 1.0


class _Waiter:
    """One call waiting for its reply."""

    __slots__ = ("future", "wake")

    def __init__(self, future: _ReplyFuture) -> None:
        self.future = future
        self.wake = threading.Semaphore(0)


class _ReplyFuture(Future[Reply]):
    """A call's future; waiting on it takes part in reading the reply queue."""

    def __init__(self, router: ReplyRouter) -> None:
        super().__init__()
        self._router = router
        self.waiter = _Waiter(self)

    def result(self, timeout: float | None = None) -> Reply:
        if not self.done():
            self._router.wait(self.waiter, timeout)
        return super().result(0 if timeout is not None else None)


class ReplyRouter:
    """Matches replies to waiting calls by message id; see the module docstring."""

    def __init__(self, settings: Settings, layout: amqp.Layout) -> None:
        self.queue = amqp.reply_queue_name()
        self._route = layout.reply_route(self.queue)
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._interim: dict[str, amqp.ReplyFrame] = {}
        self._leader: _Waiter | None = None
        self.link = Link("reply", settings, on_open=self._on_open, on_lost=lambda s: None,
                         watch_socket=lambda: self._leader is None)

    def start(self, retry: int | None) -> None:
        """Wait until the reply queue is consumed; ``retry`` bounds the connection."""
        if self.link.current() is None:
            self.link.session(retry)

    def close(self) -> None:
        """Close the connection and fail every call still waiting."""
        self.link.close()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            _settle(waiter, MessageDeliveryFailure("the transport was cleaned up before "
                                                   "the reply arrived"))

    def _on_open(self, session: Session) -> None:
        declare_route(session, self._route, consumer=True)
        session.channel.basic_consume(queue=self.queue, no_ack=True,
                                      callback=partial(self._handle, session))

    # -- calls ---------------------------------------------------------------

    def expect(self, msg_id: str) -> Future[Reply]:
        """A future for the reply to ``msg_id``; cancelling it forgets the call."""
        future = _ReplyFuture(self)
        with self._lock:
            self._waiting[msg_id] = future.waiter
        future.add_done_callback(partial(self._forget, msg_id))
        return future

    def fail(self, msg_id: str, exc: BaseException) -> bool:
        """Fail the call ``msg_id`` (its request could not be delivered); False
        when no call of that id is waiting."""
        with self._lock:
            waiter = self._waiting.pop(msg_id, None)
        if waiter is None:
            return False
        _settle(waiter, exc)
        return True

    def _forget(self, msg_id: str, _future: Future[Reply]) -> None:
        with self._lock:
            self._waiting.pop(msg_id, None)
            self._interim.pop(msg_id, None)

    def wait(self, waiter: _Waiter, timeout: float | None) -> None:
        """Wait for ``waiter``'s reply; read the socket itself when it is the only call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        future = waiter.future
        try:
            while not future.done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                with self._lock:
                    if future.done():
                        return
                    if self._leader is None and len(self._waiting) == 1:
                        self._leader = waiter
                    lead = self._leader is waiter
                    unread = self._leader is None and not self.link.watching
                if not lead:
                    if unread:
                        self.link.wake()  # nobody reads: the I/O thread must watch again
                    waiter.wake.acquire(timeout=remaining)
                    continue
                if self.link.watching:
                    self.link.wake()  # the I/O thread stops watching the socket
                self._lead(waiter, deadline)
        finally:
            self._leave(waiter)

    def _leave(self, waiter: _Waiter) -> None:
        """``waiter`` stops waiting; calls still waiting go back to the I/O thread."""
        with self._lock:
            if self._leader is not waiter:
                return
            self._leader = None
            others = bool(self._waiting)
        if others:
            self.link.wake()

    def _lead(self, waiter: _Waiter, deadline: float | None) -> None:
        future = waiter.future
        while not future.done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            session = self.link.current()
            if session is None:  # reconnecting: wait as a follower would
                waiter.wake.acquire(timeout=_LEAD_SLICE)
                continue
            wait = _LEAD_SLICE if deadline is None else min(_LEAD_SLICE, deadline - now)
            try:
                readable = session.wait_readable(wait)
            except BACKEND_ERRORS as exc:  # the socket went away under us
                self.link.break_session(session, exc)
                continue
            if readable:
                self.link.read(session)

    # -- replies ----------------------------------------------------------------

    def _handle(self, session: Session, message: Any) -> None:
        # A frame callback, on whichever thread reads: the leader or the I/O thread.
        try:
            frame = amqp.decode_reply(message.body)
        except SerializationError as exc:
            LOG.warning("dropping a malformed reply: %s", exc)
            return
        with self._lock:
            if not frame.ending:
                if frame.result is not None or frame.failure is not None:
                    self._interim[frame.msg_id] = frame  # the first half of an old-style reply
                return  # else a call-monitor heartbeat
            earlier = self._interim.pop(frame.msg_id, None)
            waiter = self._waiting.pop(frame.msg_id, None)
        if waiter is None:
            LOG.debug("reply to %s arrived after its caller gave up", frame.msg_id)
            return
        if earlier is not None and frame.result is None and frame.failure is None:
            frame = earlier
        _settle(waiter, Reply(result=frame.result, failure=frame.failure))


def _settle(waiter: _Waiter, outcome: Reply | BaseException) -> None:
    try:
        if isinstance(outcome, BaseException):
            waiter.future.set_exception(outcome)
        else:
            waiter.future.set_result(outcome)
    except InvalidStateError:
        return  # cancelled by the caller meanwhile
    waiter.wake.release()

