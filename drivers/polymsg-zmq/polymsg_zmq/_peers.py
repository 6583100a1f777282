"""Outgoing connections: one DEALER socket per remote endpoint (a receiver or a reply socket).

Sockets connect with ``ZMQ_IMMEDIATE``: a message is only queued on a
completed connection, so "the peer is unreachable" shows up as a send that
cannot proceed rather than a message silently parked in a queue. A send
waits up to ``retry_interval`` per attempt; ``retry`` more attempts follow
(``None``: keep trying), then :class:`polymsg.MessageDeliveryFailure`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import zmq

from polymsg import MessageDeliveryFailure, MessagingTimeout
from polymsg_zmq._curve import make_client
from polymsg_zmq._options import Settings

__all__ = ["Peer", "Peers"]

LOG = logging.getLogger(__name__)

_IDLE_CLOSE = 300.0


class Peer:
    """A connection to one endpoint; thread-safe (a lock guards the socket)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 settings: Settings) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        sock.immediate = True
        sock.linger = int(settings.linger * 1000)
        sock.sndhwm = 100000
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 1000
        sock.heartbeat_ivl = 2000
        sock.heartbeat_timeout = 6000
        make_client(sock, settings.curve)
        sock.connect(endpoint)
        self._sock = sock
        self._closed = False

    def try_send(self, frames: Sequence[bytes]) -> bool:
        """Send without waiting; False when the peer cannot take it now."""
        with self.lock:
            if self._closed:
                return False
            self.last_used = time.monotonic()
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK)
                return True
            except zmq.Again:
                return False

    def send(self, frames: Sequence[bytes], *, retry: int | None, interval: float,
             deadline: float | None = None) -> None:
        """Send ``frames``, waiting for the connection per the retry policy.

        Raises :class:`MessageDeliveryFailure` when the attempts run out and
        :class:`MessagingTimeout` when ``deadline`` (monotonic) passes first.
        """
        attempt = 0
        while True:
            if self._attempt(frames, interval, deadline):
                return
            attempt += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise MessagingTimeout(f"zmq: the receiver at {self.endpoint} was not "
                                       "reachable before the call timed out")
            if retry is not None and attempt > retry:
                raise MessageDeliveryFailure(
                    f"zmq: the receiver at {self.endpoint} is unreachable "
                    f"({attempt} attempt(s) of {interval:g}s)")
            LOG.warning("zmq: %s unreachable (attempt %d); retrying", self.endpoint, attempt)

    def _attempt(self, frames: Sequence[bytes], interval: float,
                 deadline: float | None) -> bool:
        with self.lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            self.last_used = time.monotonic()
            sock = self._sock
            try:
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                    return True
                except zmq.Again:
                    pass
                wait = interval if deadline is None else min(interval, deadline -
                                                              time.monotonic())
                if wait > 0 and sock.poll(int(wait * 1000) or 1, zmq.POLLOUT):
                    sock.send_multipart(frames, zmq.NOBLOCK)
                    return True
                return False
            except zmq.Again:
                return False
            except zmq.ZMQError as exc:
                raise MessageDeliveryFailure(f"zmq: cannot send to {self.endpoint}: "
                                             f"{exc}") from exc

    def close(self) -> None:
        """Close the socket (pending messages get ``linger`` to go out)."""
        with self.lock:
            if not self._closed:
                self._closed = True
                self._sock.close()


class Peers:
    """The :class:`Peer` of each endpoint, created on first use."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], settings: Settings) -> None:
        self._context = context
        self._settings = settings
        self._peers: dict[str, Peer] = {}
        self._lock = threading.Lock()
        self._pruned = time.monotonic()
        self._closed = False

    def get(self, endpoint: str) -> Peer:
        """The peer for ``endpoint``."""
        peer = self._peers.get(endpoint)
        if peer is not None:
            return peer
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            peer = self._peers.get(endpoint)
            if peer is None:
                self._prune()
                peer = self._peers[endpoint] = Peer(self._context, endpoint, self._settings)
            return peer

    def _prune(self) -> None:
        """Close connections unused for a long time (callers that went away)."""
        now = time.monotonic()
        if now - self._pruned < 60.0:
            return
        self._pruned = now
        for endpoint, peer in list(self._peers.items()):
            if now - peer.last_used > _IDLE_CLOSE:
                del self._peers[endpoint]
                peer.close()

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            self._closed = True
            peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            peer.close()
