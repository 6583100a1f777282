"""The one place polymsg-kombu reaches into py-amqp's private transport, for speed.

py-amqp reads each frame with three exact-size ``recv`` calls, writes each
frame with its own ``send``, and reads the socket before every publish while
the broker may send ``connection.blocked``. Private hooks of its transport
(``_quick_recv`` and ``_write``, with its ``_read_buffer``) let the driver
read a burst of frames with one system call and write every queued publish
and acknowledgement with one; turning off the ``connection.blocked`` flag in
the connection's ``client_properties`` once connected skips the read before
each publish (the driver's I/O threads read every frame anyway). They are
used only on the py-amqp versions this driver was tested with
(:data:`TESTED`) and only when the transport has them; anywhere else, or
with ``POLYMSG_KOMBU_FASTPATH=0`` in the environment, the driver takes
py-amqp's public path (one frame at a time), which the test suite also runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from polymsg import amqp

__all__ = ["TESTED", "Fastpath", "Hooks", "enabled"]

#: py-amqp versions the hooks were tested with: [low, high).
TESTED = ((5, 2), (5, 5))
#: Bytes asked of the socket at once.
_READ_CHUNK = 16384
#: Bytes of written frames held before they are sent, whatever the batch.
_WRITE_CHUNK = 262144


def enabled() -> bool:
    """True when the private hooks may be used (a tested version, not switched off)."""
    return amqp.private_hooks_allowed("amqp", TESTED, "POLYMSG_KOMBU_FASTPATH")


class Fastpath:
    """The hooks on one connection's py-amqp transport, or the public path."""

    def __init__(self, connection: Any) -> None:
        self._transport: Any = None
        transport: Any = getattr(connection, "transport", None)
        recv = getattr(transport, "_quick_recv", None)
        if enabled() and recv is not None and hasattr(transport, "_read_buffer") \
                and hasattr(transport, "_write"):
            # Asking for more than a frame makes py-amqp keep the surplus in its
            # buffer: one system call per burst of frames instead of three per frame.
            transport._quick_recv = lambda size: recv(max(size, _READ_CHUNK))
            self._transport = transport
            capabilities = getattr(connection, "client_properties", {}).get("capabilities")
            if isinstance(capabilities, dict):
                capabilities["connection.blocked"] = False

    @property
    def active(self) -> bool:
        """True when the hooks are in use on this connection."""
        return self._transport is not None

    def buffered(self) -> bool:
        """True when bytes read ahead wait in py-amqp's buffer."""
        return self._transport is not None and bool(self._transport._read_buffer)

    @contextlib.contextmanager
    def batched_writes(self) -> Iterator[None]:
        """Collect the frames written inside the block and send them with one
        system call at its end (the public path: each frame as it comes)."""
        transport = self._transport
        if transport is None:
            yield
            return
        write = transport._write
        chunks: list[bytes] = []
        # py-amqp hands over a view of a buffer it reuses for the next frame.
        transport._write = lambda data: chunks.append(bytes(data))
        try:
            yield
        finally:
            transport._write = write
        if chunks:
            write(b"".join(chunks))


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
