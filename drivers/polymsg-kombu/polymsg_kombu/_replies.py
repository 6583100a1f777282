"""The transport's reply queue, read by a lone waiting caller itself.

Replies have a connection of their own (opened on the first call), and the
queue ``reply_<hex>`` is consumed without acknowledgements. When calls are
made one at a time, the caller reads the socket itself (it "leads") and gets
its reply on its own thread, with no hand-over from an I/O thread. While a
caller leads, the link's I/O thread leaves the socket alone (it goes on
sending heartbeats); whenever nobody leads -- several calls waiting at once,
or none -- the I/O thread reads and completes the futures of the calls
whose replies came.

This works through :meth:`_ReplyFuture.result`, which is how the facade
waits for a reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure, Reply
from polymsg_kombu._declare import declare_route
from polymsg_kombu._errors import BACKEND_ERRORS, describe
from polymsg_kombu._link import Link, Session

__all__ = ["ReplyRouter"]

LOG = logging.getLogger(__name__)

#: Longest the leader waits on the socket before looking around (seconds).
_LEAD_SLICE = 1.0
#: Calls in a row made while no other call waited, before callers lead reads
#: (switching the I/O thread in and out costs; concurrent callers do not lead).
_LEAD_AFTER = 3


class _ReplyFuture(Future[Reply]):
    """A call's future; waiting on it may mean reading the reply queue."""

    def __init__(self, router: ReplyRouter) -> None:
        super().__init__()
        self._router = router

    def result(self, timeout: float | None = None) -> Reply:
        if not self.done() and self._router.take_lead(self):
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._router.lead(self, deadline)
            finally:
                self._router.leave(self)
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        return super().result(timeout)


class ReplyRouter:
    """Matches replies to waiting calls by message id; see the module docstring."""

    def __init__(self, settings: amqp.RabbitSettings, layout: amqp.Layout) -> None:
        self.queue = layout.reply_queue_name()
        self._route = layout.reply_route(self.queue)
        self._lock = threading.Lock()
        self.table = amqp.ReplyTable(self.queue)
        self._leader: _ReplyFuture | None = None
        self._leader_thread = 0
        self._alone = 0
        self.link = Link("reply", settings, on_open=self._on_open, on_lost=lambda s: None,
                         watch_socket=lambda: self._leader is None,
                         needed=lambda: bool(self.table))

    def start(self, retry: int | None, deadline: float | None = None) -> None:
        """Wait until the reply queue is consumed; ``retry`` and ``deadline`` bound
        the connection."""
        if self.link.current() is None:
            self.link.session(retry, deadline)

    def close(self) -> None:
        """Delete the reply queue, close the connection and fail every call still
        waiting (a late reply then comes back to its server, which logs it)."""
        self._delete_queue()
        self.link.close()
        self.table.fail_all(MessageDeliveryFailure("the transport was cleaned up before the "
                                                   "reply arrived"))

    def _delete_queue(self) -> None:
        """Delete the reply queue, best effort: without a connection it expires
        on its own (``x-expires``)."""
        session = self.link.current()
        if session is None:
            return
        with self.link.locked:
            try:
                session.declare_channel().queue_delete(queue=self.queue)
            except BACKEND_ERRORS as exc:
                LOG.debug("could not delete the reply queue %r: %s", self.queue, describe(exc))

    def _on_open(self, session: Session) -> None:
        declare_route(session, self._route, consumer=True)
        session.channel.basic_consume(queue=self.queue, no_ack=True,
                                      callback=partial(self._handle, session))

    # -- calls ---------------------------------------------------------------

    def expect(self, msg_id: str,
               heartbeat: Callable[[], None] | None = None) -> Future[Reply]:
        """A future for the reply to ``msg_id`` (``heartbeat``: called for each of
        its call-monitor heartbeats); cancelling it forgets the call."""
        future = _ReplyFuture(self)
        with self._lock:
            self._alone = self._alone + 1 if not self.table else 0
        self.table.expect(msg_id, future, heartbeat)
        return future

    def fail(self, msg_id: str, exc: BaseException) -> bool:
        """Fail the call ``msg_id`` (its request could not be delivered); False
        when no call of that id is waiting."""
        return self.table.fail(msg_id, exc)

    def take_lead(self, future: _ReplyFuture) -> bool:
        """True when ``future``'s caller is to read the socket itself; otherwise
        make sure the I/O thread does."""
        with self._lock:
            lead = (self._leader is None and len(self.table) == 1
                    and self._alone >= _LEAD_AFTER and not future.done())
            if lead:
                self._leader = future
                self._leader_thread = threading.get_ident()
            unread = self._leader is None and not self.link.watching
        if (lead and self.link.watching) or unread:
            self.link.wake()  # the I/O thread re-reads watch_socket()
        return lead

    def leave(self, future: _ReplyFuture) -> None:
        """The leader stops reading; calls still waiting go back to the I/O thread."""
        with self._lock:
            self._leader = None
            unread = not future.done() or any(f is not future for f in self.table.waiting())
        if unread:
            self.link.wake()

    def lead(self, future: _ReplyFuture, deadline: float | None) -> None:
        """Read the reply queue until ``future`` is done or ``deadline`` passed."""
        while not future.done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            wait = _LEAD_SLICE if deadline is None else min(_LEAD_SLICE, deadline - now)
            session = self.link.current()
            if session is None:  # reconnecting: the I/O thread will read
                return
            try:
                readable = session.wait_readable(wait)
            except BACKEND_ERRORS as exc:  # the socket went away under us
                self.link.break_session(session, exc)
                return
            if readable:
                self.link.read(session)

    # -- replies ----------------------------------------------------------------

    def _handle(self, session: Session, message: Any) -> None:
        # A frame callback, on whichever thread reads: the leader or the I/O thread.
        self.table.deliver(message.body)
        if self._leader is not None and self._leader_thread != threading.get_ident():
            session.wake_leader()  # the I/O thread read it: the leader must not wait on
