"""A selector loop for adapters whose client library has no event loop (py-amqp).

:class:`SelectorLoop` is a :class:`~polymsg._amqp_port.Loop`: a
:mod:`selectors` loop over a wake-up socket and the sockets of the open
connections (each a :class:`Source`), with timers (heartbeats, reconnect
backoff). Submissions from other threads are batched by
:class:`~polymsg._amqp_loop.LoopThread`. What the I/O thread queues itself
with :meth:`SelectorLoop.post` (the callbacks of frames read while a
synchronous client waited for an answer) runs right after the current step,
in the order queued, so no callback runs inside another.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from polymsg._amqp_loop import LoopThread

__all__ = ["SelectorLoop", "Source", "Timer"]

LOG = logging.getLogger(__name__)


class Source(Protocol):
    """An open connection: the loop calls ``read`` when its socket is readable or
    ``pending`` (bytes already off the socket wait), ``flush`` before it sleeps,
    ``abort`` when it ends."""

    def fileno(self) -> int: ...
    def read(self) -> None: ...
    def pending(self) -> bool: ...
    def flush(self) -> None: ...
    def abort(self) -> None: ...


class Timer:
    """A :meth:`SelectorLoop.call_later` handle."""

    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False


class SelectorLoop(LoopThread):
    """A selector loop on a daemon thread, started by the first submission."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._ready: deque[Callable[[], None]] = deque()
        self._running = True
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._sources: dict[int, Source] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the current step, in order (I/O thread only)."""
        self._ready.append(fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` after ``delay`` seconds (I/O thread only); returns a handle."""
        timer = Timer(fn)
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), timer))
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

    # -- the thread ---------------------------------------------------------------------------
    def _signal(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"x")

    def _stop(self) -> None:
        self._running = False

    def _after_each(self) -> None:
        ready = self._ready
        while ready:
            self._guard(ready.popleft())

    def _main(self) -> None:
        try:
            while self._running:
                self._cycle()
        except Exception:
            LOG.exception("%s: the I/O loop failed", self.name)
        finally:
            self._release()

    def _cycle(self) -> None:
        sources = self._sources
        for source in list(sources.values()):
            self._guard(source.flush)
        busy = bool(self._ready) or any(s.pending() for s in sources.values())
        signalled = False
        for key, _ in self._selector.select(0 if busy else self._timeout()):
            if key.data is None:  # one byte per batch; what is left wakes the next select
                signalled = True
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                self._guard(key.data.read)
                self._after_each()
        for source in list(sources.values()):
            if source.pending():
                self._guard(source.read)
                self._after_each()
        timers, now = self._timers, time.monotonic()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.cancelled = True
                self._guard(timer.fn)
        self._after_each()
        if signalled:
            self._run_batch()

    def _timeout(self) -> float | None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return max(0.0, timers[0][0] - time.monotonic()) if timers else None

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
