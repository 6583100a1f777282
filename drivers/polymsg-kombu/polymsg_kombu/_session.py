"""A Session: one established AMQP connection and what was set up on it."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import ssl
from typing import Any

from polymsg import amqp
from polymsg_kombu._declare import DeclareChannel
from polymsg_kombu._errors import BACKEND_ERRORS, describe
from polymsg_kombu._fastpath import Fastpath

__all__ = ["SOCKET_TIMEOUT", "Session"]

LOG = logging.getLogger(__name__)

#: The socket's timeout, for reads (only started once poll() says a frame is
#: arriving, so they wait only for the rest of a frame) and writes (a broker
#: blocking publishers for longer breaks the connection). Kept constant so
#: py-amqp does not switch the socket's mode around every read.
SOCKET_TIMEOUT = 10.0
#: How long a clean shutdown may wait for the broker's Connection.Close-Ok.
_CLOSE_TIMEOUT = 2.0


class Session:
    """One established connection: its main channel, a channel for
    declarations, and what has been declared on it.

    ``state`` holds what the owner keeps per connection (pending confirms,
    consumer tags). ``broken`` is set (to the cause) once the session must
    not be used any more.
    """

    def __init__(self, conn: Any, generation: int, host: amqp.Endpoint) -> None:
        self.conn = conn
        self.generation = generation
        self.host = host
        self.raw: Any = conn.connection
        self.sock: Any = self.raw.sock
        self.sock.settimeout(SOCKET_TIMEOUT)
        self.heartbeat = float(self.raw.heartbeat or 0)
        self.channel: Any = conn.channel()
        self._declare_channel: Any = None
        self.broken: BaseException | None = None
        channel = DeclareChannel(self)
        self.declarer = amqp.Declarer(lambda: channel)
        self.state: dict[str, Any] = {}
        self._tls = isinstance(self.sock, ssl.SSLSocket)
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        self._leader_poller = select.poll()  # poll objects refuse concurrent use
        self._leader_poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        # Another thread that read what the leader waits for wakes it through this
        # pipe (made when a caller first leads).
        self._wake_r = self._wake_w = -1
        self.fast = Fastpath(self.raw)

    def batched_writes(self) -> contextlib.AbstractContextManager[None]:
        """Collect the frames written inside the block and send them with one
        system call at its end, where :mod:`polymsg_kombu._fastpath` may."""
        return self.fast.batched_writes()

    def declare_channel(self) -> Any:
        """A channel for declarations, whose errors must not kill :attr:`channel`."""
        channel = self._declare_channel
        if channel is None or not channel.is_open:
            channel = self._declare_channel = self.conn.channel()
        return channel

    def buffered(self) -> bool:
        """True when received bytes wait in py-amqp's or the TLS layer's buffer."""
        return self.fast.buffered() or bool(self._tls and self.sock.pending())

    def wait_readable(self, timeout: float) -> bool:
        """Block until bytes can be read (or ``timeout`` s passed), without the lock.

        For the one thread at a time that reads a connection other than through
        its I/O thread (the caller leading the reply queue's reads)."""
        if self.buffered():
            return True
        if self._wake_r < 0:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._leader_poller.register(self._wake_r, select.POLLIN)
        readable = False
        for fd, _ in self._leader_poller.poll(max(0, int(timeout * 1000))):
            if fd != self._wake_r:
                readable = True
            else:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
        return readable

    def wake_leader(self) -> None:
        """End a :meth:`wait_readable` in progress (what it waited for came another way)."""
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def readable(self) -> bool:
        """True when a frame (or part of one) can be read without waiting."""
        return self.buffered() or bool(self._poller.poll(0))

    def close(self) -> None:
        """Close the connection: politely when it still works, else just the socket."""
        try:
            self._close()
        finally:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _close(self) -> None:
        try:
            if self.broken is None:
                self.sock.settimeout(_CLOSE_TIMEOUT)
                self.conn.close()
                return
        except BACKEND_ERRORS as exc:
            LOG.debug("closing the connection to %s: %s", self.host.label, describe(exc))
        with contextlib.suppress(*BACKEND_ERRORS):
            self.conn.collect()
