"""Awaiting the futures a driver completes, from an event loop, without a thread.

A driver's I/O thread completes a :class:`concurrent.futures.Future`; its done
callback schedules one call on the waiting loop (``call_soon_threadsafe``),
which settles an asyncio future. The timeout is a loop timer, not a task.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from polymsg._exceptions import MessageDeliveryFailure, MessagingError, MessagingTimeout

__all__ = ["wait_future"]

T = TypeVar("T")


class _Expired(Exception):
    """A loop timer fired before the driver's future completed."""

    def __init__(self, silent: bool) -> None:
        super().__init__()
        self.silent = silent


#: ``(seconds, last)``: expire when ``last()`` (a ``time.monotonic()`` reading: the
#: latest call-monitor heartbeat) is older than that.
Silence = tuple[float, Callable[[], float]]


async def wait_future(future: Future[T], timeout: float | None = None,
                      timed_out: Callable[[bool], MessagingTimeout] | None = None,
                      silence: Silence | None = None) -> T:
    """The result of ``future``, awaited.

    After ``timeout`` seconds, or once ``silence`` says the heartbeats stopped,
    ``future`` is cancelled (the driver drops its bookkeeping) and
    ``timed_out(silent)`` raised. Cancelling the awaiting task cancels
    ``future`` too, so a late reply is dropped by the driver.
    """
    if future.done():
        return _outcome(future)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    inbox = _INBOXES.get(loop)
    if inbox is None:
        inbox = _INBOXES[loop] = _Inbox(loop)
    future.add_done_callback(partial(inbox.put, waiter))
    timer = _Timer(loop, waiter, timeout, silence)
    try:
        return await waiter
    except _Expired as expired:
        future.cancel()
        if timed_out is not None:
            raise timed_out(expired.silent) from None
        raise MessagingTimeout(f"timed out after {timeout:g}s") from None
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        timer.cancel()


class _Timer:
    """Fails ``waiter`` with :class:`_Expired` at the deadline or once silent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any],
                 timeout: float | None, silence: Silence | None) -> None:
        self._loop = loop
        self._waiter = waiter
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._silence = silence
        self._handle: asyncio.TimerHandle | None = None
        self._check()

    def _check(self) -> None:
        now = time.monotonic()
        wake_at = self._deadline
        if wake_at is not None and now >= wake_at:
            return self._expire(silent=False)
        if self._silence is not None:
            seconds, last = self._silence
            quiet_until = last() + seconds
            if now >= quiet_until:
                return self._expire(silent=True)
            wake_at = quiet_until if wake_at is None else min(wake_at, quiet_until)
        if wake_at is not None:
            self._handle = self._loop.call_later(wake_at - now, self._check)
        return None

    def _expire(self, silent: bool) -> None:
        if not self._waiter.done():
            self._waiter.set_exception(_Expired(silent))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class _Inbox:
    """Driver futures completed for one loop, handed to it in bursts: the driver's
    thread wakes the loop once for all the replies that came while it was busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the inbox must not keep its loop alive
        self._items: deque[tuple[asyncio.Future[Any], Future[Any]]] = deque()
        self._scheduled = False

    def put(self, waiter: asyncio.Future[Any], done: Future[Any]) -> None:
        """A done callback, on whatever thread completed ``done``."""
        self._items.append((waiter, done))
        if self._scheduled:
            return
        self._scheduled = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody waits for these any more
            self._items.clear()

    def _drain(self) -> None:
        self._scheduled = False  # before reading: what comes from now on wakes us again
        items = self._items
        while items:
            _settle(*items.popleft())


_INBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = (
    weakref.WeakKeyDictionary())


def _settle(waiter: asyncio.Future[T], done: Future[T]) -> None:
    if waiter.done():  # timed out or cancelled meanwhile
        return
    try:
        waiter.set_result(_outcome(done))
    except Exception as exc:  # handed to the awaiting task
        waiter.set_exception(exc)


def _outcome(future: Future[T]) -> T:
    """``future.result()`` of a done future, driver errors wrapped as the sync side does."""
    if future.cancelled():
        raise MessageDeliveryFailure("the driver cancelled the send")
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, MessagingError):
        raise exc
    raise MessageDeliveryFailure(f"the driver failed to deliver: {exc}") from exc
