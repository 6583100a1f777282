"""The confirm window: casts and notifications published but not yet confirmed.

With ``confirm_window`` > 0 a cast or notification returns to its sender once
it is written on a live connection; the broker's confirm arrives later. Every
such message is an item of the window until it is settled: confirmed, given
up on, or dropped at close. A sender finding the window full waits for room
(in its own thread), which bounds both memory and what a crash could lose;
``cleanup()`` waits for the window to empty (:meth:`ConfirmWindow.drain`).

A driver that settles on its I/O thread and cannot resend there hands a
message that failed (negatively confirmed, returned, lost with its
connection) to :meth:`ConfirmWindow.settled` with ``confirmed=False``: a
resend thread then calls the driver's ``resend`` (which publishes it the
careful way and raises :class:`~polymsg.MessagingError` when it cannot, which
is logged as a warning naming the message). A driver that resends on its own
just calls :meth:`ConfirmWindow.leave` once the message is settled for good.

A message whose future its sender may still cancel (it was not yet written:
the driver waits for a connection or a declaration first) is tied to that
future with :meth:`ConfirmWindow.bind`: cancelling the future makes it leave
the window (and the resend queue) at once, so ``cleanup()`` does not wait for
it, and the driver checks ``future.cancelled()`` before it writes the message.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from polymsg._exceptions import MessageDeliveryFailure, MessagingError
from polymsg._health_amqp import enlist

__all__ = ["ConfirmWindow"]

LOG = logging.getLogger(__name__)

T = TypeVar("T", bound=Hashable)


class ConfirmWindow(Generic[T]):
    """At most ``size`` unconfirmed messages, usable from any thread.

    ``resend`` (optional) sends a failed message again synchronously;
    ``describe`` names a message in logs and errors. A window made while a
    RabbitMQ driver is being built reports its occupancy to that driver's
    :meth:`~polymsg.driver.Driver.health`.
    """

    def __init__(self, size: int, resend: Callable[[T], None] | None = None,
                 describe: Callable[[T], str] = str) -> None:
        if size < 1:
            raise ValueError(f"a confirm window needs at least one place, not {size}")
        self.size = size
        self._resend = resend
        self._describe = describe
        self._cond = threading.Condition(threading.Lock())
        self._open: set[T] = set()
        self._failed: deque[T] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False
        #: The most messages ever inside the window at once (diagnostics and tests).
        self.most_in_flight = 0
        enlist(self)

    @property
    def in_flight(self) -> int:
        """Messages inside the window now."""
        return len(self._open)

    def enter(self, item: T) -> None:
        """Take a place for ``item``, waiting while the window is full."""
        with self._cond:
            while len(self._open) >= self.size and not self._closing:
                self._cond.wait()
            if self._closing:
                raise MessageDeliveryFailure(
                    f"{self._describe(item)} failed: the transport is closed")
            self._open.add(item)
            self.most_in_flight = max(self.most_in_flight, len(self._open))

    def leave(self, item: T) -> None:
        """``item`` is settled (confirmed, or given up on): free its place."""
        with self._cond:
            self._open.discard(item)
            self._cond.notify_all()

    def bind(self, item: T, future: Future[Any]) -> None:
        """Make ``item`` leave the window (and the resend queue) at once when its
        sender cancels ``future``: the sender gave up on a message not yet
        written (a cancelled future is never done otherwise), which the
        driver then never sends (it checks ``future.cancelled()`` first)."""
        future.add_done_callback(lambda done: self._abandon(item) if done.cancelled() else None)

    def _abandon(self, item: T) -> None:
        with self._cond:
            self._open.discard(item)
            if item in self._failed:
                self._failed.remove(item)
            self._cond.notify_all()

    def settled(self, item: T, confirmed: bool) -> None:
        """Called without blocking once ``item`` was confirmed, or failed; a failed
        one goes to the resend thread (needs ``resend``)."""
        if confirmed or self._resend is None:
            self.leave(item)
            return
        with self._cond:
            if self._closing:
                self._open.discard(item)
                self._cond.notify_all()
                return
            self._failed.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="polymsg-resend")
                self._thread.start()
            self._cond.notify_all()

    def drain(self, timeout: float) -> list[T]:
        """Wait up to ``timeout`` seconds for every message to settle; returns those
        still open (empty: the window drained)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._open, timeout)
            return list(self._open)

    def close(self) -> None:
        """Stop taking messages and sending again; waiting senders fail. What is
        still open is dropped without further logs (``drain`` reported it)."""
        with self._cond:
            self._closing = True
            for item in self._failed:
                self._open.discard(item)
            self._failed.clear()
            self._cond.notify_all()

    def join(self) -> None:
        """Wait for the resend thread to end (after the connection is closed,
        which fails a resend in progress)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        assert self._resend is not None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._failed) or self._closing)
                if self._closing:
                    return
                item = self._failed.popleft()
            try:
                self._resend(item)
            except MessagingError as exc:
                if not self._closing:
                    what = self._describe(item)
                    LOG.warning("%s was not delivered: %s", what,
                                str(exc).removeprefix(f"{what} failed: "))
            except Exception:  # a bug must not stop later resends
                LOG.exception("unexpected error sending %s again", self._describe(item))
            finally:
                self.leave(item)
