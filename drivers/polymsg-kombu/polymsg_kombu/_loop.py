"""The I/O thread of a ``rabbit+kombu`` transport: the one thread that touches py-amqp.

py-amqp has no event loop of its own, so the driver runs one: a
:mod:`selectors` loop over a wake-up socket and the sockets of the open
connections (each a :class:`Source`), with timers (heartbeats, reconnect
backoff). Other threads hand work over with :meth:`IOLoop.submit`: one
wake-up drains every callable queued since, then the ``after_batch`` hooks
run. Work the I/O thread itself queues with :meth:`IOLoop.post` (the
callbacks of frames read while py-amqp waited for an answer) runs after the
current step, in the order it was queued, so no callback ever runs inside
another one.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol, TypeVar

from polymsg.driver import MessageDeliveryFailure

__all__ = ["IOLoop", "Source", "Timer"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class Source(Protocol):
    """Something with a socket the loop reads for (an open connection)."""

    def fileno(self) -> int: ...

    def read(self) -> None:
        """Handle what can be read now (called when the socket is readable or
        :meth:`pending` said so)."""

    def pending(self) -> bool:
        """True when bytes already taken off the socket wait to be handled."""

    def flush(self) -> None:
        """Send what was written and not sent yet (before the loop sleeps)."""

    def abort(self) -> None:
        """Drop the connection without a word (the loop is ending)."""


class Timer:
    """A :meth:`IOLoop.call_later` handle."""

    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False


class IOLoop:
    """A daemon thread running a selector loop, started by the first submission."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: Called on the I/O thread after each batch of work.
        self.after_batch: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._submitted: deque[Callable[[], None]] = deque()
        self._ready: deque[Callable[[], None]] = deque()
        self._signalled = False
        self._closed = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._sources: dict[int, Source] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    # -- any thread ---------------------------------------------------------------
    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread soon; raise once the loop is closed."""
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._submitted.append(fn)
            if self._signalled:
                return
            self._signalled = True
        self._wake()

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
                self._submitted.append(self._request_stop)
        if thread is None:
            self._release()
            return
        self._wake()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                LOG.warning("%s: the I/O thread did not stop within %ss", self.name, timeout)

    # -- I/O thread -----------------------------------------------------------------
    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the current step, in order (I/O thread only)."""
        self._ready.append(fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` after ``delay`` seconds (I/O thread only); returns a handle."""
        timer = Timer(time.monotonic() + delay, fn)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def cancel(self, handle: Timer | None) -> None:
        """Cancel a :meth:`call_later` handle (I/O thread only)."""
        if handle is not None:
            handle.cancelled = True

    def watch(self, source: Source) -> None:
        """Read ``source`` whenever its socket is readable (I/O thread only)."""
        fd = source.fileno()
        self._sources[fd] = source
        self._selector.register(fd, selectors.EVENT_READ, source)

    def unwatch(self, source: Source) -> None:
        """Stop reading ``source`` (I/O thread only; its socket may be closed already)."""
        for fd, known in list(self._sources.items()):
            if known is source:
                del self._sources[fd]
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)

    def _request_stop(self) -> None:
        self._stop = True

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while not self._stop:
                self._cycle()
        except Exception:
            LOG.exception("%s: the I/O loop failed", self.name)
        finally:
            self._release()

    def _cycle(self) -> None:
        for source in list(self._sources.values()):
            self._guard(source.flush)
        busy = bool(self._ready) or any(s.pending() for s in self._sources.values())
        for key, _ in self._selector.select(0 if busy else self._timeout()):
            if key.data is None:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                self._guard(key.data.read)
                self._run_ready()
        for source in list(self._sources.values()):
            if source.pending():
                self._guard(source.read)
                self._run_ready()
        self._run_timers()
        self._run_ready()
        with self._lock:
            self._signalled = False
            batch, self._submitted = self._submitted, deque()
        for fn in batch:
            self._guard(fn)
            self._run_ready()
        for hook in self.after_batch:
            self._guard(hook)

    def _timeout(self) -> float | None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return None
        return max(0.0, timers[0][0] - time.monotonic())

    def _run_timers(self) -> None:
        timers, now = self._timers, time.monotonic()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.cancelled = True
                self._guard(timer.fn)

    def _run_ready(self) -> None:
        ready = self._ready
        while ready:
            self._guard(ready.popleft())

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a bug in one callback must not stop the I/O thread
            LOG.exception("%s: unexpected error on the I/O thread", self.name)

    def _release(self) -> None:
        sources = list(self._sources.values())
        self._sources.clear()
        for source in sources:
            self._guard(source.abort)
        self._timers.clear()
        self._ready.clear()
        with contextlib.suppress(OSError):
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
