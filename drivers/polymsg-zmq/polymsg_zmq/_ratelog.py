"""Rate-limited logging of what strangers send: a flood of garbage must not flood the log.

polymsg core has no such helper yet; this small one serves the driver. Each
:class:`RateLimited` logs the first ``detail`` events of every ``interval``
in full, counts the rest, and reports the count in one line when the next
interval starts (or at :meth:`RateLimited.summary`). Values taken from the
wire are shortened with :func:`clip` before they reach a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimited", "clip"]

#: Longest text a log line quotes from the wire.
CLIP = 120


def clip(value: Any, limit: int = CLIP) -> str:
    """``repr``-like text of ``value``, at most ``limit`` characters."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class RateLimited:
    """One kind of event, logged at most ``detail`` times per ``interval`` seconds.

    Thread-safe. ``count`` is every event since creation.
    """

    def __init__(self, logger: logging.Logger, what: str, *, level: int = logging.WARNING,
                 interval: float = 10.0, detail: int = 5) -> None:
        self._logger = logger
        self._what = what
        self._level = level
        self._interval = interval
        self._detail = detail
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._in_window = 0
        self.count = 0

    def log(self, message: str, *args: Any) -> None:
        """Record one event; log it if this interval has room for details."""
        now = time.monotonic()
        with self._lock:
            self.count += 1
            suppressed = self._roll(now)
            self._in_window += 1
            detailed = self._in_window <= self._detail
        if suppressed:
            self._report(suppressed)
        if detailed and self._logger.isEnabledFor(self._level):
            self._logger.log(self._level, message, *args)

    def _roll(self, now: float) -> int:
        """Start a new interval if the last one is over; events it did not detail."""
        if now - self._window_start < self._interval:
            return 0
        suppressed = max(0, self._in_window - self._detail)
        self._window_start, self._in_window = now, 0
        return suppressed

    def summary(self) -> None:
        """Log the count of events not detailed in an interval that has ended."""
        with self._lock:
            suppressed = self._roll(time.monotonic())
        if suppressed:
            self._report(suppressed)

    def _report(self, suppressed: int) -> None:
        self._logger.log(self._level, "%s: %d more in the last %gs not logged (%d in all)",
                         self._what, suppressed, self._interval, self.count)
