"""Sends a driver may block on, run off the event loop by a few threads.

A driver lists in :attr:`polymsg.driver.Driver.blocking_sends` the send
methods that may hold the calling thread (while it connects, reconnects or
waits for its I/O thread). ``polymsg.aio`` hands those to the transport's
:class:`Senders`: at most :data:`MAX_THREADS` threads, started when needed
and gone after :data:`IDLE_SECONDS` without work, take the sends in order;
what each returns (the driver's future) comes back to the loop through its
inbox, one wake-up per burst. A send abandoned before a thread took it (its
call timed out, its task was cancelled) is never made.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from polymsg._transport import Transport

__all__ = ["Send", "Senders", "senders_for"]

#: Threads per transport: enough for sends to overlap while some are held
#: (a call's request waiting for the connection), bounded so an outage does
#: not grow a thread per message.
MAX_THREADS = 8
IDLE_SECONDS = 10.0

#: ``(waiter, done)`` goes to the loop's inbox; ``done`` is the driver's
#: future, or the exception the send raised.
Deliver = Callable[[Any, "Future[Any] | BaseException"], None]


class Send:
    """One send waiting for (or made by) a sender thread."""

    __slots__ = ("abandoned", "context", "deliver", "future", "start", "waiter")

    def __init__(self, start: Callable[[], Future[Any]], waiter: Any, deliver: Deliver) -> None:
        self.start = start
        # the caller's context variables (a trace's current span...) go with it
        self.context = contextvars.copy_context()
        self.waiter = waiter
        self.deliver = deliver
        self.future: Future[Any] | None = None
        self.abandoned = False

    def abandon(self) -> None:
        """The caller stopped waiting (on the loop): skip the send, or cancel its
        future so the driver drops its bookkeeping."""
        self.abandoned = True
        future = self.future
        if future is not None:
            future.cancel()

    def run(self) -> None:
        """On a sender thread."""
        if self.abandoned:
            return
        try:
            future = self.context.run(self.start)
        except Exception as exc:  # validation or delivery errors: the caller's to raise
            self.deliver(self.waiter, exc)
            return
        self.future = future
        if self.abandoned:  # given up while the driver held us
            future.cancel()
        future.add_done_callback(lambda done: self.deliver(self.waiter, done))


class Senders:
    """The sender threads of one transport."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: deque[Send] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._threads = 0
        self._idle = 0

    def submit(self, send: Send) -> None:
        with self._ready:
            queue = self._queue
            queue.append(send)
            if self._idle:
                self._ready.notify()
            # a thread more while sends outnumber idle threads (busy ones may be held)
            if len(queue) <= self._idle or self._threads >= MAX_THREADS:
                return
            self._threads += 1
        threading.Thread(target=self._work, name=f"polymsg-aio-send-{self._name}",
                         daemon=True).start()

    def _work(self) -> None:
        queue = self._queue
        while True:
            with self._ready:
                while not queue:
                    self._idle += 1
                    try:
                        woken = self._ready.wait(IDLE_SECONDS)
                    finally:
                        self._idle -= 1
                    if not woken and not queue:
                        self._threads -= 1
                        return
                send = queue.popleft()
            send.run()


_SENDERS: weakref.WeakKeyDictionary[Transport, Senders] = weakref.WeakKeyDictionary()
_SENDERS_LOCK = threading.Lock()


def senders_for(transport: Transport, method: str) -> Senders | None:
    """The transport's sender threads when its driver may block in ``method``
    (``"call"``, ``"cast"`` or ``"notify"``), else None: call it on the loop."""
    if method not in type(transport._driver).blocking_sends:
        return None
    senders = _SENDERS.get(transport)
    if senders is None:
        with _SENDERS_LOCK:
            senders = _SENDERS.get(transport)
            if senders is None:
                senders = _SENDERS[transport] = Senders(type(transport._driver).__name__)
    return senders
