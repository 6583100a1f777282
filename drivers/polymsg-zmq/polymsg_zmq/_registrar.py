"""A receiver's registrations with its matchmaker (Redis): what this host serves.

The receiver counts its local consumers per key. A key's first consumer is
registered at once (so a server is routable when ``start()`` returns), its
last consumer's departure unregisters it, and a background thread refreshes
every key each ``matchmaker_ttl / 3``. While the matchmaker is unreachable
nothing blocks the receiver: new keys wait for the thread, which retries.
Static matchmakers (local, ring) register nothing and start no thread.
"""

from __future__ import annotations

import logging
import threading
import time

from polymsg import MessagingError
from polymsg_zmq._matchmaker import Matchmaker, RegKey

__all__ = ["Registrations"]

LOG = logging.getLogger("polymsg_zmq.receiver")

_RETRY = 1.0


class Registrations:
    """Reference-counted matchmaker keys of one receiver. Not thread-safe: the
    receiver's thread calls :meth:`add` and :meth:`remove`."""

    def __init__(self, matchmaker: Matchmaker, ttl: float) -> None:
        self._matchmaker = matchmaker
        self._period = ttl / 3
        self._counts: dict[RegKey, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending_gone: list[RegKey] = []
        self._healthy = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        if matchmaker.dynamic:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="polymsg-zmq-registrar")
            self._thread.start()

    def add(self, keys: set[RegKey]) -> None:
        """One more consumer serves ``keys``."""
        if self._thread is None:
            return
        with self._lock:
            new = [key for key in keys if not self._counts.get(key)]
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1
            healthy = self._healthy
        if not new:
            return
        if healthy and self._call(self._matchmaker.register, new):
            return
        with self._lock:  # the thread registers it when the matchmaker is back
            self._wake.notify()

    def remove(self, keys: set[RegKey]) -> None:
        """A consumer of ``keys`` left; keys nobody serves any more are withdrawn."""
        if self._thread is None:
            return
        with self._lock:
            for key in keys:
                count = self._counts.get(key, 0) - 1
                if count > 0:
                    self._counts[key] = count
                else:
                    self._counts.pop(key, None)
                    self._pending_gone.append(key)
            self._wake.notify()

    def _call(self, method: object, keys: list[RegKey]) -> bool:
        try:
            method(keys)  # type: ignore[operator]
        except MessagingError as exc:
            with self._lock:
                if self._healthy:
                    LOG.warning("zmq receiver: matchmaker update failed (retrying): %s", exc)
                self._healthy = False
            return False
        with self._lock:
            if not self._healthy:
                LOG.info("zmq receiver: the matchmaker answers again")
            self._healthy = True
        return True

    def _run(self) -> None:
        due = time.monotonic() + self._period
        while True:
            with self._lock:
                if not self._stopping and (not self._pending_gone or not self._healthy):
                    wait = due - time.monotonic() if self._healthy else _RETRY
                    if wait > 0:
                        self._wake.wait(wait)
                if self._stopping:
                    return
                gone, self._pending_gone = self._pending_gone, []
                current, healthy = list(self._counts), self._healthy
            if gone and not self._call(self._matchmaker.unregister, gone):
                with self._lock:
                    self._pending_gone.extend(k for k in gone if k not in self._counts)
            now = time.monotonic()
            if current and (not healthy or now >= due):
                if self._call(self._matchmaker.register, current):
                    due = time.monotonic() + self._period
            elif now >= due:
                due = now + self._period

    def close(self) -> None:
        """Stop the thread and withdraw every key (best effort)."""
        if self._thread is None:
            return
        with self._lock:
            self._stopping = True
            self._wake.notify()
            keys = list(self._counts) + self._pending_gone
            self._counts, self._pending_gone = {}, []
        self._thread.join()
        if keys:
            self._call(self._matchmaker.unregister, keys)
