"""The one place polymsg-kombu reaches into py-amqp's private transport, for speed.

py-amqp reads each frame with three exact-size ``recv`` calls and writes each
frame with its own ``send``. Two private hooks of its transport
(``_quick_recv`` and ``_write``, with its ``_read_buffer``) let the I/O
thread read a burst of frames with one system call, and send every frame a
batch of work wrote (publishes and acknowledgements of many threads) with
one. They are used only on the py-amqp versions this driver was tested with
(:data:`TESTED`) and only when the transport has them; anywhere else, or
with ``POLYMSG_KOMBU_FASTPATH=0`` in the environment, the driver takes
py-amqp's public path (each frame read and written as it comes), which the
test suite also runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from polymsg import amqp

__all__ = ["TESTED", "Hooks", "enabled"]

#: py-amqp versions the hooks were tested with: [low, high).
TESTED = ((5, 2), (5, 5))
#: Bytes asked of the socket at once.
_READ_CHUNK = 65536
#: Bytes of written frames held before they are sent, whatever the batch.
_WRITE_CHUNK = 262144


def enabled() -> bool:
    """True when the private hooks may be used (a tested version, not switched off)."""
    return amqp.private_hooks_allowed("amqp", TESTED, "POLYMSG_KOMBU_FASTPATH")


class Hooks:
    """The hooks on one open connection's py-amqp transport, or the public path."""

    def __init__(self, transport: Any) -> None:
        self._transport: Any = None
        self._write: Any = None
        self._chunks: list[bytes] = []
        self._size = 0
        recv = getattr(transport, "_quick_recv", None)
        if enabled() and recv is not None and hasattr(transport, "_read_buffer") \
                and hasattr(transport, "_write"):
            # Asking for more than a frame makes py-amqp keep the surplus in its
            # buffer: one system call per burst of frames instead of three per frame.
            transport._quick_recv = lambda size: recv(max(size, _READ_CHUNK))
            self._write = transport._write
            transport._write = self._hold
            self._transport = transport

    @property
    def active(self) -> bool:
        """True when the hooks are in use on this connection."""
        return self._transport is not None

    def buffered(self) -> bool:
        """True when bytes read ahead wait in py-amqp's buffer."""
        return self._transport is not None and bool(self._transport._read_buffer)

    def flush(self) -> None:
        """Send the frames held since the last flush, with one system call."""
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            self._write(data)

    @contextlib.contextmanager
    def direct(self) -> Iterator[None]:
        """Frames written inside the block go out at once (a step that waits
        for the broker's answer must have sent its question)."""
        transport = self._transport
        if transport is None:
            yield
            return
        self.flush()
        transport._write = self._write
        try:
            yield
        finally:
            transport._write = self._hold

    def _hold(self, data: Any) -> None:
        # py-amqp hands over a view of a buffer it reuses for the next frame.
        self._chunks.append(bytes(data))
        self._size += len(data)
        if self._size >= _WRITE_CHUNK:
            self.flush()
