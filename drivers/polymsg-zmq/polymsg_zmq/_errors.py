"""Translation of pyzmq's errors into polymsg's, at the driver's boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from polymsg import MessageDeliveryFailure

__all__ = ["translated"]


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise a :class:`zmq.ZMQError` as :class:`polymsg.MessageDeliveryFailure`
    (the original kept as ``__cause__``); polymsg's own errors pass through."""
    try:
        yield
    except zmq.ZMQError as exc:
        raise MessageDeliveryFailure(f"zmq: {what} failed: {exc}") from exc
