"""Awaiting the futures a driver completes, from an event loop, without a thread.

A driver's I/O thread completes a :class:`concurrent.futures.Future`; its done
callback queues it for the waiting loop, which it wakes once per burst
(``call_soon_threadsafe``), not once per future. The send that returns the
future runs on the loop, or on the transport's sender threads for a driver
that may block in it (:mod:`polymsg.aio._senders`).

Timeouts cost no loop timer per call: calls with the same timeout expire in
the order they started, so each distinct timeout of a loop is one FIFO lane
with one timer, armed for its oldest waiter (see :class:`_Lane`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from polymsg._exceptions import MessageDeliveryFailure, MessagingError, MessagingTimeout
from polymsg.aio._senders import Send, Senders

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


async def wait_future(start: Callable[[], Future[T]], timeout: float | None = None,
                      timed_out: Callable[[bool], MessagingTimeout] | None = None,
                      silence: Silence | None = None, senders: Senders | None = None) -> T:
    """The result of the future ``start()`` returns (a driver send), awaited.

    ``start`` runs on the loop, or on ``senders`` (threads) when the driver
    may block in it; its errors are raised here. After ``timeout`` seconds
    (counted from now), or once ``silence`` says the heartbeats stopped, the
    send is abandoned (the driver's future cancelled: the driver drops its
    bookkeeping) and ``timed_out(silent)`` raised. Cancelling the awaiting
    task abandons it too, so a late reply is dropped by the driver.
    """
    future: Future[T] | None = None
    if senders is None:
        future = start()
        if future.done():
            return _outcome(future)
    loop = asyncio.get_running_loop()
    state = _STATES.get(loop)
    if state is None:
        state = _STATES[loop] = _LoopState(loop)
    waiter: asyncio.Future[T] = loop.create_future()
    send: Send | None = None
    if future is not None:
        future.add_done_callback(partial(state.inbox.put, waiter))
    elif senders is not None:
        send = Send(start, waiter, state.inbox.put)
        senders.submit(send)
    timer: _Timer | None = None
    lane: _Lane | None = None
    if silence is not None:
        timer = _Timer(loop, waiter, timeout, silence)
    elif timeout is not None:
        lane = state.lane(timeout)
        lane.add(waiter)
    try:
        return await waiter
    except _Expired as expired:
        _abandon(future, send)
        if timed_out is not None:
            raise timed_out(expired.silent) from None
        raise MessagingTimeout(f"timed out after {timeout:g}s") from None
    except asyncio.CancelledError:
        _abandon(future, send)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        elif lane is not None:
            lane.finished()


def _abandon(future: Future[Any] | None, send: Send | None) -> None:
    if future is not None:
        future.cancel()
    elif send is not None:
        send.abandon()


class _LoopState:
    """What one loop's waiters share: the inbox and the timeout lanes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.inbox = _Inbox(loop)
        self._loop = weakref.ref(loop)  # the state must not keep its loop alive
        self._lanes: dict[float, _Lane] = {}

    def lane(self, timeout: float) -> _Lane:
        lane = self._lanes.get(timeout)
        if lane is None:
            loop = self._loop()
            assert loop is not None  # only called on the running loop
            lane = self._lanes[timeout] = _Lane(loop, timeout, self._lanes)
        return lane


class _Lane:
    """The waiters of one loop with one timeout, oldest first.

    Their deadlines (start + timeout, on the loop's monotonic clock) ascend in
    the order they were added, so one timer for the oldest waiter serves them
    all. Waiters that finished stay queued until they reach the head or until
    they are most of the queue (then it is compacted): O(1) per call, and the
    queue holds at most about twice the calls still waiting.
    """

    _COMPACT_AT = 256

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float,
                 lanes: dict[float, _Lane]) -> None:
        self._loop = loop
        self._timeout = timeout
        self._lanes = lanes
        self._queue: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._waiting = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, waiter: asyncio.Future[Any]) -> None:
        deadline = self._loop.time() + self._timeout
        self._queue.append((deadline, waiter))
        self._waiting += 1
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def finished(self) -> None:
        """One waiter is done (result, error, expiry or cancellation)."""
        self._waiting -= 1
        queue = self._queue
        while queue and queue[0][1].done():
            queue.popleft()
        if not queue:
            self._close()
        elif len(queue) >= self._COMPACT_AT and self._waiting * 2 < len(queue):
            self._queue = deque(item for item in queue if not item[1].done())

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        now = self._loop.time()
        while queue:
            deadline, waiter = queue[0]
            if not waiter.done():
                if deadline > now:
                    self._timer = self._loop.call_at(deadline, self._expire)
                    return
                waiter.set_exception(_Expired(silent=False))
            queue.popleft()
        self._close()

    def _close(self) -> None:
        """Empty: forget the lane (a later call with this timeout makes a new one)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lanes.get(self._timeout) is self:
            del self._lanes[self._timeout]


class _Timer:
    """Fails ``waiter`` with :class:`_Expired` at the deadline or once silent
    (calls with a call monitor: their wake-up time moves with the heartbeats)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any],
                 timeout: float | None, silence: Silence) -> None:
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
        seconds, last = self._silence
        quiet_until = last() + seconds
        if now >= quiet_until:
            return self._expire(silent=True)
        wake_at = quiet_until if wake_at is None else min(wake_at, quiet_until)
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
        self._items: deque[tuple[asyncio.Future[Any], Future[Any] | BaseException]] = deque()
        self._scheduled = False

    def put(self, waiter: asyncio.Future[Any], done: Future[Any] | BaseException) -> None:
        """A done callback, on whatever thread completed ``done`` (or a sender
        thread's, with the error its send raised)."""
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


_STATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
    weakref.WeakKeyDictionary())


def _settle(waiter: asyncio.Future[T], done: Future[T] | BaseException) -> None:
    if waiter.done():  # timed out or cancelled meanwhile
        return
    if isinstance(done, BaseException):  # the send itself raised: as it would inline
        waiter.set_exception(done)
        return
    try:
        waiter.set_result(_outcome(done))
    except Exception as exc:  # handed to the awaiting task
        waiter.set_exception(exc)


def _outcome(future: Future[T]) -> T:
    """``future.result()`` of a done future, driver errors wrapped as the sync side does."""
    try:
        return future.result()
    except FutureCancelled:
        raise MessageDeliveryFailure("the driver cancelled the send") from None
    except MessagingError:
        raise
    except Exception as exc:
        raise MessageDeliveryFailure(f"the driver failed to deliver: {exc}") from exc
