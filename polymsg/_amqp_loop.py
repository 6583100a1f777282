"""What every adapter's I/O thread shares (:class:`polymsg._amqp_port.Loop`).

:class:`LoopThread` keeps the part of a :class:`~polymsg._amqp_port.Loop`
that does not depend on the client library: the daemon thread started by
the first submission, batched submissions (one wake-up of the loop drains
every callable queued since, then the ``after_batch`` hooks run),
:meth:`~LoopThread.run`, and a :meth:`~LoopThread.close` that lets pending
work run first. An adapter's loop adds how it wakes up (:meth:`_signal`),
what its thread runs (:meth:`_main`), timers, and how it stops.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from polymsg._exceptions import MessageDeliveryFailure

__all__ = ["LoopThread"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """The client-library-independent half of an adapter's I/O thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: Called on the I/O thread after each batch of submitted work.
        self.after_batch: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._submitted: deque[Callable[[], None]] = deque()
        self._signalled = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- any thread ------------------------------------------------------------------------
    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon; raise once the loop is closed."""
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
            self._submitted.append(fn)
            if self._signalled:
                return
            self._signalled = True
        self._signal()

    def run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` on the I/O thread and return its result (inline on the I/O thread)."""
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
        """Stop once pending work ran, and join the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._submitted.append(self._stop)
                signal, self._signalled = not self._signalled, True
        if thread is None:
            self._release()
            return
        if signal:
            self._signal()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                LOG.warning("%s: the I/O thread did not stop within %ss", self.name, timeout)

    # -- I/O thread --------------------------------------------------------------------------
    def _run_batch(self) -> None:
        """Run what was submitted since the last signal, then the ``after_batch`` hooks."""
        with self._lock:
            self._signalled = False
            batch, self._submitted = self._submitted, deque()
        for fn in batch:
            self._guard(fn)
            self._after_each()
        for hook in self.after_batch:
            self._guard(hook)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a bug in one job must not stop the I/O thread
            LOG.exception("%s: unexpected error on the I/O thread", self.name)

    # -- for the adapter's loop ------------------------------------------------------------------
    def _signal(self) -> None:
        """Have the I/O thread call :meth:`_run_batch` soon (any thread)."""
        raise NotImplementedError

    def _main(self) -> None:
        """The I/O thread's body; calls :meth:`_release` when it ends."""
        raise NotImplementedError

    def _stop(self) -> None:
        """End :meth:`_main` once the current batch ran (I/O thread)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the loop holds (once, when it ends or was never started)."""

    def _after_each(self) -> None:
        """Called after each submitted job (work the job queued for right after it)."""
