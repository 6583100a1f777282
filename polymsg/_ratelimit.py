"""Rate-limited logging, for what the network sends that polymsg must drop.

A peer that sends a million malformed messages must not write a million log
lines: :class:`LogLimiter` logs the first few of each interval in full (each
argument cut to a bounded length), counts the rest, and logs that count once
the interval is over. Any driver can use it (the RabbitMQ drivers do for
malformed requests, notifications and replies).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["LogLimiter", "truncate"]

#: Longest text of one logged argument (the bytes of a garbled body, say).
MAX_FIELD = 200


def truncate(value: Any, limit: int = MAX_FIELD) -> Any:
    """``value`` for a log line: texts and bytes longer than ``limit`` are cut,
    saying how long they were; exceptions are cut as their text."""
    if isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value[: limit + 1])
        return value if len(value) <= limit else value[:limit] + b"..."
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value)} characters)"
    return value


class LogLimiter:
    """Logs at most ``burst`` records per ``interval`` seconds on ``logger``, then
    one line per interval counting those it left out. Thread-safe."""

    def __init__(self, logger: logging.Logger, what: str, *, interval: float = 10.0,
                 burst: int = 5, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self.burst = burst
        self.level = level
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._logged = 0
        self._suppressed = 0
        #: Every record offered, logged or not (for tests and diagnostics).
        self.total = 0

    @property
    def count(self) -> int:
        """Every record offered (the same as :attr:`total`)."""
        return self.total

    def log(self, msg: str, *args: Any) -> None:
        """Log ``msg % args`` unless this interval's burst is used up."""
        with self._lock:
            self.total += 1
            self._roll(time.monotonic())
            if self._logged >= self.burst:
                self._suppressed += 1
                return
            self._logged += 1
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, msg, *(truncate(arg) for arg in args))

    def summary(self) -> None:
        """Log the count of records left out in an interval that is over (a
        component that stops calls it, so the last count is not lost)."""
        with self._lock:
            self._roll(time.monotonic())

    def _roll(self, now: float) -> None:
        """Start a new interval when this one is over, logging what it left out."""
        if now - self._started < self.interval:
            return
        suppressed, self._suppressed = self._suppressed, 0
        elapsed, self._started, self._logged = now - self._started, now, 0
        if suppressed:
            self.logger.log(self.level, "%d more %s in the last %.0f s were not "
                            "logged one by one", suppressed, self.what, elapsed)
