"""The I/O thread: the one thread that touches pika objects of a transport.

Other threads never call pika; they hand work to the loop with
:meth:`IOThread.submit`. Submissions are batched: one wake-up of pika's
``IOLoop`` (``add_callback_threadsafe``) drains every callable queued since,
so a burst of publishes or acknowledgements from many threads costs one
wake-up rather than one each. After each batch the ``after_batch`` hooks run
(the links flush what the batch wrote, see :meth:`Link.flush`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pika.adapters.select_connection import IOLoop

from polymsg.driver import MessageDeliveryFailure

__all__ = ["IOThread"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class IOThread:
    """A pika ``IOLoop`` running on a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ioloop = IOLoop()
        self._pending: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Called on the I/O thread after each batch of submitted work.
        self.after_batch: list[Callable[[], None]] = []

    # -- any thread ------------------------------------------------------------
    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon; raise once the loop is shut down."""
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._pending.append(fn)
            if self._scheduled:
                return
            self._scheduled = True
        self.ioloop.add_callback_threadsafe(self._drain)

    def run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` on the I/O thread and return its result (inline when
        called from the I/O thread itself)."""
        if self.in_loop():
            return fn()
        future: Future[T] = Future()

        def job() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)

        self.submit(job)
        return future.result(timeout)

    @property
    def started(self) -> bool:
        """True once the I/O thread was started (by the first submission)."""
        return self._thread is not None

    def in_loop(self) -> bool:
        """True on the I/O thread."""
        return threading.current_thread() is self._thread

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop once pending work ran and join the thread. Idempotent."""
        with self._lock:
            thread = self._thread
            if self._closed:
                return
            if thread is not None:
                self._pending.append(self.ioloop.stop)
                scheduled, self._scheduled = self._scheduled, True
            self._closed = True
        if thread is None:
            self.ioloop.close()
            return
        if not scheduled:
            self.ioloop.add_callback_threadsafe(self._drain)
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                LOG.warning("%s: the I/O thread did not stop within %ss", self.name, timeout)

    # -- I/O thread -------------------------------------------------------------
    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        """Schedule ``fn`` after ``delay`` seconds (I/O thread only); returns a handle."""
        return self.ioloop.call_later(delay, fn)

    def cancel(self, handle: Any) -> None:
        """Cancel a :meth:`call_later` handle (I/O thread only)."""
        self.ioloop.remove_timeout(handle)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        pending = self._pending
        while pending:
            fn = pending.popleft()
            try:
                fn()
            except Exception:
                LOG.exception("%s: unexpected error on the I/O thread", self.name)
        for hook in self.after_batch:
            hook()

    def _run(self) -> None:
        try:
            self.ioloop.start()
        except Exception:
            LOG.exception("%s: the I/O loop failed", self.name)
        finally:
            try:
                self.ioloop.close()
            except Exception:
                LOG.debug("%s: error closing the I/O loop", self.name, exc_info=True)
