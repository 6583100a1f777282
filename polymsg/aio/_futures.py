"""Awaiting the futures a driver completes, from an event loop, without a thread.

A driver's I/O thread completes a :class:`concurrent.futures.Future`; its done
callback schedules one call on the waiting loop (``call_soon_threadsafe``),
which settles an asyncio future. The timeout is a loop timer, not a task.
"""

from __future__ import annotations

import asyncio
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
    """The loop timer fired before the driver's future completed."""


async def wait_future(future: Future[T], timeout: float | None = None,
                      timed_out: Callable[[], MessagingTimeout] | None = None) -> T:
    """The result of ``future``, awaited; on ``timeout`` it is cancelled (the driver
    drops its bookkeeping) and ``timed_out()`` raised. Cancelling the awaiting task
    cancels ``future`` too, so a late reply is dropped by the driver."""
    if future.done():
        return _outcome(future)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    inbox = _INBOXES.get(loop)
    if inbox is None:
        inbox = _INBOXES[loop] = _Inbox(loop)
    future.add_done_callback(partial(inbox.put, waiter))
    timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
    try:
        return await waiter
    except _Expired:
        future.cancel()
        raise (timed_out() if timed_out else MessagingTimeout(
            f"timed out after {timeout:g}s")) from None
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        if timer is not None:
            timer.cancel()


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


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


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
