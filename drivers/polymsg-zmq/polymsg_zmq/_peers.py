"""Outgoing connections: one DEALER socket per remote endpoint (a receiver or a reply socket).

Sockets connect with ``ZMQ_IMMEDIATE``: a message is only queued on a
completed connection, so "the peer is unreachable" shows up as a send that
cannot proceed rather than a message silently parked in a queue. A send
waits up to ``retry_interval`` per attempt; ``retry`` more attempts follow
(``None``: keep trying), then :class:`polymsg.MessageDeliveryFailure`.

Once a connection works, one-way messages are *posted*: queued on the peer
and sent by one flusher thread per transport, which sends a run of messages
with the same routing header as one multipart message. Under load that
batches many casts per zmq message (and per receiver wake-up); when idle, a
message leaves at once. A peer that stops taking messages gets its queue
retried for ``_GIVE_UP`` seconds, then the messages are dropped with a
warning naming their ids; new messages meanwhile take the waiting path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

import zmq

from polymsg import MessageDeliveryFailure, MessagingTimeout
from polymsg_zmq._curve import make_client
from polymsg_zmq._errors import translated
from polymsg_zmq._options import Settings
from polymsg_zmq._ratelog import RateLimited
from polymsg_zmq._watch import WINDOW, Recent, Watcher
from polymsg_zmq._wire import MAGIC, REPLY_MAGIC, message_ids

__all__ = ["Peer", "Peers"]

LOG = logging.getLogger(__name__)
#: Warnings about queued messages given up on (a flood of forged reply addresses must not
#: flood the log).
_STALLED = RateLimited(LOG, "zmq: connections that stopped taking messages")
_DROPPED = RateLimited(LOG, "zmq: queued messages dropped")

_IDLE_CLOSE = 300.0
_BATCH = 512
_BATCH_BYTES = 1 << 20  # and well below any sane max_message_size
_STALL_RETRY = 0.05
#: The first moments of a stall (a connection still being made: a caller's first
#: reply) are retried sooner.
_FRESH_STALL = 0.1
_FRESH_RETRY = 0.005
_GIVE_UP = 10.0
#: Connections one transport keeps; past that the least useful are closed first.
MAX_PEERS = 512
#: Replies queued for one caller that is not taking them.
_MAX_QUEUED_REPLIES = 10000

Frames = Sequence[bytes]


class Peer:
    """A connection to one endpoint; thread-safe (a lock guards the socket)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 settings: Settings, flusher: Flusher, watcher: Watcher | None = None
                 ) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.up = False  # a send worked and none failed since
        self.scheduled = False
        self.stalled_since: float | None = None
        self._outbox: deque[Frames] = deque()
        self._flusher = flusher
        self._batch_bytes = min(_BATCH_BYTES, settings.max_message_size // 2)
        sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        sock.immediate = True
        sock.linger = int(settings.linger * 1000)
        sock.sndhwm = 100000
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 1000
        sock.heartbeat_ivl = 2000
        sock.heartbeat_timeout = 6000
        make_client(sock, settings.curve)
        self._sock = sock
        self._closed = False
        #: What went out lately, reported if the connection drops (receivers only).
        self.recent: Recent | None = None
        if watcher is not None:
            self.recent = Recent()
            watcher.watch(sock, self._connection_lost, lambda: self._closed)
        sock.connect(endpoint)

    def post(self, frames: Frames) -> bool:
        """Queue a one-way message for the flusher; False when the connection is not
        known to work (the caller then sends and waits itself)."""
        if not self.up or self._closed:
            return False
        self._outbox.append(frames)
        if not self.scheduled:
            self._flusher.schedule(self)
        return True

    def post_reply(self, frames: Frames) -> None:
        """Queue a reply for the flusher, whether or not the connection works yet: a
        worker never waits for a caller (one that never takes it is given up on
        after a while, with a warning naming the call)."""
        with self.lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            self.last_used = time.monotonic()
            if not self._outbox and self._send_now(frames):
                return
            if len(self._outbox) >= _MAX_QUEUED_REPLIES:
                raise MessageDeliveryFailure(f"zmq: {len(self._outbox)} replies already wait "
                                             f"for {self.endpoint}")
            self._outbox.append(frames)
        self._flusher.schedule(self)

    @property
    def idle(self) -> bool:
        """Nothing queued and no send in progress."""
        return not self._outbox and not self.scheduled

    def try_send(self, frames: Frames) -> bool:
        """Send without waiting (behind anything queued); False when the peer cannot
        take it now."""
        with self.lock:
            if self._closed:
                return False
            self.last_used = time.monotonic()
            if self._outbox:
                if not self.up:
                    return False
                self._outbox.append(frames)
                self._flusher.schedule(self)
                return True
            with translated(f"sending to {self.endpoint}"):
                return self._send_now(frames)

    def send(self, frames: Frames, *, retry: int | None, interval: float,
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

    def _attempt(self, frames: Frames, interval: float, deadline: float | None) -> bool:
        with self.lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            self.last_used = time.monotonic()
            sock = self._sock
            try:
                if self._drain() and self._send_now(frames):
                    return True
                wait = interval if deadline is None else min(interval, deadline -
                                                              time.monotonic())
                if wait > 0 and sock.poll(int(wait * 1000) or 1, zmq.POLLOUT):
                    return self._drain() and self._send_now(frames)
                return False
            except zmq.ZMQError as exc:
                raise MessageDeliveryFailure(f"zmq: cannot send to {self.endpoint}: "
                                             f"{exc}") from exc

    def _send_now(self, frames: Frames) -> bool:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.up = False
            return False
        self.up = True
        if self.recent is not None:
            self.recent.add(frames)
        return True

    def _connection_lost(self) -> None:
        """The connection dropped: name what was sent on it lately (it may be lost)."""
        with self.lock:
            batches = self.recent.take() if self.recent is not None else []
        ids = [i for batch in batches for i in message_ids("rpc", batch, limit=0)]
        if ids:
            LOG.warning("zmq: the connection to %s was lost; %d message(s) sent on it in "
                        "the last %gs may not have been delivered: ids %s",
                        self.endpoint, len(ids), WINDOW, " ".join(ids))

    def _drain(self) -> bool:
        """Send queued messages, batching runs with one header; True when all went.
        Called with the lock held."""
        outbox = self._outbox
        while outbox:
            first = outbox.popleft()
            batch: list[Frames] = [first]
            if len(first) != 2 or not first[0].startswith(MAGIC):
                frames = list(first)
            else:
                header, size = first[0], len(first[1])
                while outbox and len(batch) < _BATCH and len(outbox[0]) == 2 \
                        and outbox[0][0] == header \
                        and size + len(outbox[0][1]) <= self._batch_bytes:
                    size += len(outbox[0][1])
                    batch.append(outbox.popleft())
                frames = [header, b"".join(item[1] for item in batch)]
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                outbox.extendleft(reversed(batch))
                self.up = False
                return False
            if self.recent is not None:
                self.recent.add(frames)
        self.up = True
        return True

    def flush(self) -> bool:
        """The flusher's turn: send what is queued; True when nothing is left."""
        with self.lock:
            if self._closed:
                return True
            try:
                done = self._drain()
            except zmq.ZMQError as exc:
                LOG.warning("zmq: cannot send to %s: %s", self.endpoint, exc)
                done = False
            if done:
                self.stalled_since = None
            return done

    def drop_queued(self, why: str) -> None:
        """Give up on queued messages, logging their ids."""
        with self.lock:
            queued, self._outbox = list(self._outbox), deque()
            self.stalled_since = None
        if queued:
            ids = [i for frames in queued[:20] for i in _ids(frames)]
            _DROPPED.log("zmq: dropped %d message(s) queued for %s (%s): ids %s",
                         len(queued), self.endpoint, why, ids)

    def close(self) -> None:
        """Close the socket (pending messages get ``linger`` to go out)."""
        with self.lock:
            if not self._closed:
                self._closed = True
                self._sock.close()


def _ids(frames: Frames) -> list[str]:
    """The message ids of queued frames, for log lines."""
    if len(frames) == 2 and frames[0].startswith(REPLY_MAGIC):
        return ["reply to " + frames[0][len(REPLY_MAGIC):][:64].decode(errors="replace")]
    if len(frames) == 2:
        return message_ids("rpc", frames[1])
    return ["?"]


class Flusher:
    """The thread sending posted messages, started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: deque[Peer] = deque()
        self._stalled: set[Peer] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def schedule(self, peer: Peer) -> None:
        """Have ``peer``'s queue sent soon."""
        peer.scheduled = True
        with self._cond:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="polymsg-zmq-flusher",
                                                daemon=True)
                self._thread.start()
            self._ready.append(peer)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopping:
                    if not self._cond.wait(self._retry_in()):
                        break
                if self._stopping and not self._ready:
                    return
                ready, self._ready = self._ready, deque()
            for peer in {*ready, *self._stalled}:
                self._flush(peer)

    def _retry_in(self) -> float | None:
        """Seconds until stalled peers are tried again (None: none is stalled)."""
        if not self._stalled:
            return None
        now = time.monotonic()
        fresh = any(now - (peer.stalled_since or now) < _FRESH_STALL for peer in self._stalled)
        return _FRESH_RETRY if fresh else _STALL_RETRY

    def _flush(self, peer: Peer) -> None:
        peer.scheduled = False
        if peer.flush():
            self._stalled.discard(peer)
            return
        now = time.monotonic()
        if peer.stalled_since is None:
            peer.stalled_since = now
            _STALLED.log("zmq: %s stopped taking messages; retrying for %gs",
                         peer.endpoint, _GIVE_UP)
        elif now - peer.stalled_since > _GIVE_UP:
            peer.drop_queued(f"unreachable for {_GIVE_UP:g}s")
            self._stalled.discard(peer)
            return
        self._stalled.add(peer)

    def stop(self, peers: list[Peer]) -> None:
        """Send what can go now, drop the rest with a warning, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        for peer in peers:
            if not peer.flush():
                peer.drop_queued("the transport was closed")


class Peers:
    """The :class:`Peer` of each endpoint, created on first use."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], settings: Settings) -> None:
        self._context = context
        self._settings = settings
        self._peers: dict[str, Peer] = {}
        self._lock = threading.Lock()
        self._pruned = time.monotonic()
        self._closed = False
        self._flusher = Flusher()
        self._watcher = Watcher()

    def get(self, endpoint: str, watch: bool = False) -> Peer:
        """The peer for ``endpoint``; ``watch`` (a receiver's): report what may be lost
        when its connection drops."""
        peer = self._peers.get(endpoint)
        if peer is not None:
            return peer
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            peer = self._peers.get(endpoint)
            if peer is None:
                self._prune()
                if len(self._peers) >= MAX_PEERS:
                    self._evict()
                with translated(f"connecting to {endpoint}"):
                    peer = Peer(self._context, endpoint, self._settings, self._flusher,
                                self._watcher if watch else None)
                self._peers[endpoint] = peer
            return peer

    def _prune(self) -> None:
        """Close connections unused for a long time (callers that went away)."""
        now = time.monotonic()
        if now - self._pruned < 60.0:
            return
        self._pruned = now
        for endpoint, peer in list(self._peers.items()):
            if now - peer.last_used > _IDLE_CLOSE and not peer.scheduled:
                del self._peers[endpoint]
                peer.close()

    def _evict(self) -> None:
        """Close a quarter of the connections: those not known to work first, then the
        least recently used; what they had queued is dropped with a warning."""
        ranked = sorted(self._peers.items(), key=lambda item: (item[1].up, item[1].last_used))
        for endpoint, peer in ranked[:max(1, len(ranked) // 4)]:
            del self._peers[endpoint]
            peer.drop_queued(f"more than {MAX_PEERS} connections")
            peer.close()

    def __len__(self) -> int:
        return len(self._peers)

    def close(self) -> None:
        """Flush and close every connection; stop the flusher thread."""
        with self._lock:
            self._closed = True
            peers, self._peers = list(self._peers.values()), {}
        self._flusher.stop(peers)
        self._watcher.stop()  # closing our own connections loses nothing to report
        for peer in peers:
            peer.close()
