"""A small worker pool for the threading executor: a deque and lazily started threads.

Lighter than ``concurrent.futures.ThreadPoolExecutor`` on the per-message
path: no Future per item (servers never need a result back from a worker)
and no wake-up per item. An awake worker takes items one after the other
until none is left; a submit wakes a worker only when none is awake.

Python runs one thread at a time (the GIL), so more workers only help while
the busy ones are *blocked* (I/O, sleeps, waiting for another message);
while they compute, every extra runnable worker just contends for the GIL
and for the handlers' own locks, and a backlog served by many workers gets
slower, not faster. So when items wait and every awake worker is busy, one
more worker becomes a *watchdog*: it takes short naps and joins in only when
the busy ones look blocked, that is when it gets the GIL back at once after
each of a few naps (nobody is computing), or when nobody has taken an item for
a while. Blocked handlers thus still get up to ``max_workers`` threads (one
more every few milliseconds), and a message that waits for another one to
arrive in the same batch is never stuck behind it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool"]

#: Seconds a watchdog naps between looks at the busy workers.
_WATCH = 0.001
#: Waking from a nap takes the GIL back: within this many seconds means no thread
#: was computing (one that computes keeps the GIL until the switch interval, 5 ms).
_GIL_FREE = 0.001
#: Naps in a row after which the GIL was free at once: the busy workers are blocked.
_QUICK = 3
#: Seconds without any item taken after which a watchdog joins regardless (a busy
#: machine can make every nap slow).
_STALLED = 0.05


class _Worker:
    """A worker thread's parking lock (held while it runs), its role when woken, and
    whether someone released the lock to cut a watchdog's nap short."""

    __slots__ = ("lock", "poked", "watch")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.watch = False
        self.poked = False


class WorkerPool:
    """Runs ``handler(item)`` for each submitted item on up to ``max_workers`` threads.

    Items are taken in submission order; at most ``max_workers`` handlers run
    at once. :meth:`shutdown` runs every item submitted before it.
    """

    def __init__(self, max_workers: int, handler: Callable[[Any], None], name: str) -> None:
        self._max = max_workers
        self._handler = handler
        self._name = name
        self._items: deque[Any] = deque()
        # One token per awake worker that is not running a handler ("free"): such a
        # worker takes the next item without being woken. deque.append/pop are atomic
        # under the GIL, so tokens need no lock on the per-item path.
        self._free: deque[None] = deque()
        self._watching = False  # a watchdog is on duty (see the module docstring)
        # Guarded by _lock:
        self._watcher: _Worker | None = None
        self._parked: list[_Worker] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, item: Any) -> None:
        """Queue ``item``; wake a worker if none is awake to take it."""
        if self._closed:
            raise RuntimeError("worker pool is shut down")
        self._items.append(item)
        if not self._free and not self._watching \
                and (self._parked or len(self._threads) < self._max):
            self._wake()

    def _busy(self) -> int:
        """Workers running a handler (lock held)."""
        return (len(self._threads) - len(self._parked) - len(self._free)
                - (self._watcher is not None))

    def _wake(self) -> None:
        """Items wait and no worker is free: wake (or start) one when none is busy,
        else put a watchdog on duty."""
        with self._lock:
            if self._free or self._watching or not self._items:
                return
            watch = self._busy() > 0
            if self._parked:
                self._unpark(self._parked.pop(), watch)
            elif len(self._threads) < self._max:  # also while shutting down: items wait
                worker = _Worker()
                self._enlist(worker, watch)
                thread = threading.Thread(target=self._run, args=(worker,), daemon=True,
                                          name=f"{self._name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            # else: all busy and no room for more; the first one done takes it

    def _enlist(self, worker: _Worker, watch: bool) -> None:
        """Give a worker about to run its role (lock held)."""
        worker.watch = watch
        if watch:
            self._watching, self._watcher = True, worker
        else:
            self._free.append(None)

    def _unpark(self, worker: _Worker, watch: bool) -> None:
        """Wake a parked worker with a role (lock held). ``poked`` stays set until it has
        the lock back, so that nobody releases it twice."""
        self._enlist(worker, watch)
        worker.poked = True
        worker.lock.release()

    def _parking(self, me: _Worker) -> None:
        """Sleep until :meth:`_unpark` (lock not held)."""
        me.lock.acquire()
        with self._lock:
            me.poked = False

    def _poke(self) -> None:
        """Cut the watchdog's nap short: things changed (lock held)."""
        watcher = self._watcher
        if watcher is not None and not watcher.poked:
            watcher.poked = True
            watcher.lock.release()

    def _run(self, me: _Worker) -> None:
        items, free, handler = self._items, self._free, self._handler
        while True:
            if me.watch:
                self._watch(me)
                continue
            try:
                item = items.popleft()
            except IndexError:
                if not self._park(me):
                    return
                continue
            free.pop()  # busy now
            if items and not free and not self._watching \
                    and (self._parked or len(self._threads) < self._max):
                self._wake()  # more wait and nobody is free: a watchdog looks after them
            try:
                handler(item)
            except BaseException:  # the handler catches Exception: this ends the thread
                self._retire()
                raise
            free.append(None)

    def _park(self, me: _Worker) -> bool:
        """Sleep until woken with a role; False when shut down with nothing left."""
        with self._lock:
            self._free.pop()
            if self._items:  # submitted after our last look: it saw us free
                self._free.append(None)
                return True
            if self._closed:
                return False
            self._parked.append(me)
            self._poke()  # maybe nobody is busy any more: no need to watch
        self._parking(me)  # woken by _wake or shutdown, who set our role
        return True

    def _watch(self, me: _Worker) -> None:
        """Watchdog duty, until the busy workers look blocked or none is left (then
        join as a free worker), nothing waits or a free worker shows up (then park),
        or shutdown."""
        items, clock = self._items, time.monotonic
        head: Any = None
        since = clock()
        quick = 0  # naps in a row after which the GIL was free at once
        free_within = _WATCH + min(_GIL_FREE, sys.getswitchinterval() / 2)
        while True:
            started = clock()
            woken = me.lock.acquire(timeout=_WATCH)  # a nap, unless poked
            now = clock()
            try:
                first = items[0]
            except IndexError:
                first = None
            if first is not head:
                head, since = first, now
            with self._lock:
                if me.poked:
                    if not woken:  # poked after the nap ended: take the lock back
                        me.lock.acquire()
                    me.poked, woken = False, True
                quick = 0 if woken or now - started >= free_within else quick + 1
                idle = self._busy() == 0  # while we are the watchdog: not counting us
                self._watching, self._watcher = False, None  # off duty, then look
                waiting = bool(items) and not self._free
                if self._closed or (waiting and (idle or quick >= _QUICK
                                                 or now - since >= _STALLED)):
                    me.watch = False
                    self._free.append(None)  # join (or help drain before shutdown)
                    return
                if waiting:
                    self._watching, self._watcher = True, me  # they compute: keep watching
                    continue
                me.watch = False
                self._parked.append(me)
            self._parking(me)  # woken by _wake or shutdown, who set our role
            return

    def _retire(self) -> None:
        """The current worker dies: free its place and hand its work on."""
        with self._lock:
            self._threads.remove(threading.current_thread())
            self._poke()
        if self._items and not self._free:
            self._wake()

    def shutdown(self) -> None:
        """Run every item submitted so far, then stop and join the workers."""
        with self._lock:
            self._closed = True
            parked, self._parked = self._parked, []
            for worker in parked:
                self._unpark(worker, False)
            self._poke()
        joined: set[threading.Thread] = set()
        while True:  # workers may start more workers for what is left
            with self._lock:
                threads = [t for t in self._threads if t not in joined]
            if not threads:
                break
            for thread in threads:
                thread.join()
                joined.add(thread)
        while self._items:  # only when submit raced with shutdown: run them here
            self._handler(self._items.popleft())
