"""The one place polymsg-pika reaches into pika's private transport, for speed.

pika's select transport queues each frame (a publish is three) and sends
them one ``send()`` each on a later turn of the loop, once the socket
reports writable. After a batch of work the driver joins the queued frames
and, on a plain TCP connection, hands them to the socket at once: one system
call and one loop turn less per batch. That needs pika's private
``_transport``, ``_tx_buffers``, ``_on_socket_writable`` and
``_AsyncPlaintextTransport``; it is done only on the pika versions this
driver was tested with (:data:`TESTED`) and only when they are there.
Anywhere else, or with ``POLYMSG_PIKA_FASTPATH=0`` in the environment, pika
sends as it always does (the public path, which the test suite also runs).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from polymsg import amqp

__all__ = ["TESTED", "enabled", "flush"]

#: pika versions the hooks were tested with: [low, high).
TESTED = ((1, 3), (1, 5))

try:  # the plain TCP transport of pika 1.x
    from pika.adapters.utils.io_services_utils import (
        _AsyncPlaintextTransport as _PLAIN_TRANSPORT,
    )
except ImportError:  # another pika: frames are only joined
    _PLAIN_TRANSPORT = None


def enabled() -> bool:
    """True when the private hooks may be used (a tested version, not switched off)."""
    return amqp.private_hooks_allowed("pika", TESTED, "POLYMSG_PIKA_FASTPATH")


_ENABLED = enabled()


def flush(connection: Any) -> bool:
    """Send what the last batch of work queued on ``connection`` in one ``send()``;
    False when the public path is taken (pika sends on its own)."""
    if not _ENABLED:
        return False
    transport: Any = getattr(connection, "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    if not buffers or not isinstance(buffers, deque):
        return False
    if len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)
    if _PLAIN_TRANSPORT is not None and type(transport) is _PLAIN_TRANSPORT:
        transport._on_socket_writable()
    return True
