"""Rate-limited logging of what strangers send: a flood of garbage must not flood the log.

The limiter is core's :class:`polymsg.driver.LogLimiter` (the first ``detail``
events of every ``interval`` logged in full, the rest counted);
:class:`RateLimited` only keeps the driver's argument names. Values taken from
the wire are shortened with :func:`clip` before they reach a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from polymsg.driver import LogLimiter

__all__ = ["RateLimited", "clip"]

#: Longest text a log line quotes from the wire.
CLIP = 120


def clip(value: Any, limit: int = CLIP) -> str:
    """``repr``-like text of ``value``, at most ``limit`` characters."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class RateLimited(LogLimiter):
    """One kind of event, logged at most ``detail`` times per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, what: str, *, level: int = logging.WARNING,
                 interval: float = 10.0, detail: int = 5) -> None:
        super().__init__(logger, what, interval=interval, burst=detail, level=level)
