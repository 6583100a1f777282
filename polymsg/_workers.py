"""A small worker pool for the threading executor: a queue and lazily started threads.

Lighter than ``concurrent.futures.ThreadPoolExecutor`` on the per-message
path (no Future per item): servers never need a result back from a worker.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

__all__ = ["WorkerPool"]

_STOP: Any = object()


class WorkerPool:
    """Runs ``handler(item)`` for each submitted item on up to ``max_workers`` threads."""

    def __init__(self, max_workers: int, handler: Callable[[Any], None], name: str) -> None:
        self._max = max_workers
        self._handler = handler
        self._name = name
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        # One token per idle worker. deque.append/pop are atomic under the GIL:
        # a lock-free non-blocking semaphore, far cheaper than threading.Semaphore.
        self._idle: deque[None] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, item: Any) -> None:
        """Queue ``item``; start a worker when none is idle and the pool is not full."""
        if self._closed:
            raise RuntimeError("worker pool is shut down")
        self._queue.put(item)
        try:
            self._idle.pop()
        except IndexError:
            if len(self._threads) < self._max:
                self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            if len(self._threads) >= self._max or self._closed:
                return
            thread = threading.Thread(target=self._run, daemon=True,
                                      name=f"{self._name}-{len(self._threads)}")
            self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        get, handler, idle = self._queue.get, self._handler, self._idle.append
        while True:
            item = get()
            if item is _STOP:
                return
            handler(item)
            idle(None)

    def shutdown(self) -> None:
        """Finish every queued item, then stop and join the workers."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join()
