"""The confirm window: casts and notifications published but not yet confirmed.

With ``confirm_window`` > 0, a cast or notification returns to its sender
once it is written on a live connection; RabbitMQ's confirm arrives later
and is read by the publisher's I/O thread. Every message stays in the
window until then. One that comes back negatively confirmed, returned as
unroutable, or lost with its connection leaves the I/O thread's hands at
once: a resend thread publishes it again the careful way (declaring its
route, waiting for its own confirm, within its ``retry`` budget), and logs
a warning naming it if that fails too. A sender finding the window full
waits for room, which bounds both memory and what a crash could lose.

``flush`` lets ``cleanup()`` wait for the window to empty before the
connection closes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure, MessagingError

__all__ = ["ConfirmWindow", "Job"]

LOG = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One cast or notification in the window, with all it takes to send it again."""

    route: amqp.Route
    body: bytes
    properties: Mapping[str, Any]
    retry: int | None
    mandatory: bool
    what: str


class ConfirmWindow:
    """At most ``size`` unconfirmed jobs; ``resend`` sends one again synchronously
    (raising :class:`~polymsg.MessagingError` when it cannot)."""

    def __init__(self, size: int, resend: Callable[[Job], None]) -> None:
        self.size = size
        self._resend = resend
        self._cond = threading.Condition(threading.Lock())
        self._open: set[Job] = set()
        self._failed: deque[Job] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False

    def __len__(self) -> int:
        return len(self._open)

    def enter(self, job: Job) -> None:
        """Take a place for ``job``, waiting while the window is full."""
        with self._cond:
            while len(self._open) >= self.size and not self._closing:
                self._cond.wait()
            if self._closing:
                raise MessageDeliveryFailure(f"{job.what} failed: the transport is closed")
            self._open.add(job)

    def leave(self, job: Job) -> None:
        """``job`` is settled (confirmed, or given up on): free its place."""
        with self._cond:
            self._open.discard(job)
            self._cond.notify_all()

    def settled(self, job: Job, confirmed: bool) -> None:
        """Called (without blocking) once the broker confirmed ``job`` or it
        was lost, refused or returned; the latter go to the resend thread."""
        if confirmed:
            self.leave(job)
            return
        with self._cond:
            if self._closing:
                self._open.discard(job)
                self._cond.notify_all()
                return
            self._failed.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="polymsg-kombu-resend")
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> list[Job]:
        """Wait up to ``timeout`` seconds for every job to settle; returns those
        still open."""
        with self._cond:
            self._cond.wait_for(lambda: not self._open, timeout)
            return list(self._open)

    def close(self) -> None:
        """Stop taking jobs and sending again; what is still open is dropped
        without further logs (``flush`` reported it)."""
        with self._cond:
            self._closing = True
            for job in self._failed:
                self._open.discard(job)
            self._failed.clear()
            self._cond.notify_all()

    def join(self) -> None:
        """Wait for the resend thread to end (after the connection is closed,
        which fails a resend in progress)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._failed or self._closing)
                if self._closing:
                    return
                job = self._failed.popleft()
            try:
                self._resend(job)
            except MessagingError as exc:
                if not self._closing:
                    LOG.warning("%s was not delivered: %s", job.what, exc)
            except Exception:  # a bug must not stop later resends
                LOG.exception("unexpected error sending %s again", job.what)
            finally:
                self.leave(job)
