"""Local consumers: a server's or notification listener's connection to the host's receiver.

A listener connects one DEALER to the receiver's socket of each topic it
consumes and registers there (``REG``, repeated as a heartbeat); an RPC
server also subscribes to the topic's fanout. :meth:`ZmqListener.start`
returns once the receiver has confirmed every registration and the fanout
subscription is seen to work, so nothing sent afterwards misses it.

When heartbeats go unanswered (the receiver was restarted) the listener asks
again to open its topics and re-registers; messages resume without a
restart of the service. ``stop()`` unregisters, and gives back to the
receiver whatever arrived after it stopped taking messages.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq

from polymsg import MessageDeliveryFailure
from polymsg.driver import Listener, OnMessage, dumps, loads
from polymsg_zmq._local import registry
from polymsg_zmq._messages import Batch, NoteMessage, RpcMessage
from polymsg_zmq._ratelog import RateLimited, clip
from polymsg_zmq._wire import (
    InvalidFrame,
    decode_deadline,
    fanout_prefix,
    ipc_endpoint,
    ipc_path,
    message_ids,
    unpack,
)

if TYPE_CHECKING:
    from polymsg_zmq._driver import ZmqDriver

__all__ = ["Subscription", "ZmqListener"]

LOG = logging.getLogger(__name__)

_STOP_GRACE = 1.0

#: Messages (and bytes of them) a listener may have handed to the facade that no
#: worker has picked up yet. Past either it is *congested*: it takes nothing more
#: until its backlog is down to half, so a server that cannot keep up makes senders
#: wait instead of queueing without bound (memory, and garbage-collector time that
#: grows with it): the receiver holds what comes meanwhile (within max_held_bytes),
#: as it does for a full IPC consumer.
MAX_BACKLOG = 4096
MAX_BACKLOG_BYTES = 64 * 1024 * 1024

#: Malformed frames from the receiver (only a broken or hostile local process sends them).
_MALFORMED = RateLimited(LOG, "zmq: malformed messages from the receiver")
#: Messages whose TTL passed between the receiver and the listener (any sender can
#: set a TTL of zero).
_EXPIRED = RateLimited(LOG, "zmq: expired messages")


class Subscription:
    """What a listener consumes on one exchange/topic: a registration and maybe fanout."""

    def __init__(self, exchange: str, topic: str, registration: dict[str, Any],
                 fanout: bool) -> None:
        self.exchange = exchange
        self.topic = topic
        self.registration = registration
        self.fanout = fanout
        self.sock: zmq.Socket[bytes] | None = None
        self.last_ok = 0.0


class ZmqListener(Listener):
    """Consumes from the local receiver on a thread of its own."""

    def __init__(self, driver: ZmqDriver, subscriptions: Sequence[Subscription],
                 on_message: OnMessage, pool: str = "") -> None:
        self._driver = driver
        self._settings = driver.settings
        self._subs = list(subscriptions)
        self._on_message = on_message
        self._pool = pool
        self._identity = b"c" + uuid.uuid4().bytes
        self._stopping = threading.Event()
        self._delivering = threading.RLock()  # held while a callback runs
        self._thread: threading.Thread | None = None
        self._early: list[list[bytes]] = []
        self._lost_since: float | None = None
        ctx = driver.context
        self._control = self._socket(zmq.DEALER)
        self._control.connect(ipc_endpoint(f"{self._settings.ipc_dir}/control"))
        self._wake_in = self._socket(zmq.PAIR)
        wake = f"inproc://listener-{uuid.uuid4().hex}"
        self._wake_in.bind(wake)
        self._wake_out = ctx.socket(zmq.PAIR)
        self._wake_out.linger = 0
        self._wake_out.connect(wake)
        self._wake_lock = threading.Lock()
        self._sub: zmq.Socket[bytes] | None = None
        self._by_socket: dict[zmq.Socket[bytes], Subscription] = {}
        self._headers: dict[bytes, dict[str, Any]] = {}
        self._backlog = 0  # handed over, minus picked up (below); under _delivering
        self._backlog_bytes = 0
        self._picked: deque[int] = deque()  # the size of each message a worker picked up
        self._local = registry(self._settings.ipc_dir)

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._driver.context.socket(kind)
        sock.linger = 0
        return sock

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the topics, register, check fanout, then start the consumer thread."""
        try:
            self._handshake()
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"polymsg-zmq-listener-{self._subs[0].topic}")
        self._thread.start()

    def _handshake(self) -> None:
        deadline = time.monotonic() + self._settings.receiver_timeout
        self._local.add(self._identity, self)
        self._open_topics()
        self._await(self._control, {b"OK"}, deadline, "open its topics")
        for sub in self._subs:
            sub.sock = self._socket(zmq.DEALER)
            sub.sock.identity = self._identity
            sub.sock.reconnect_ivl = 50
            sub.sock.connect(ipc_endpoint(ipc_path(self._settings.ipc_dir, sub.exchange,
                                                   sub.topic)))
            self._by_socket[sub.sock] = sub
        fanouts = [sub for sub in self._subs if sub.fanout]
        if fanouts:
            self._sub = self._socket(zmq.SUB)
            self._sub.rcvhwm = 100000
            for sub in fanouts:
                self._sub.subscribe(fanout_prefix(sub.exchange, sub.topic))
            self._sub.connect(ipc_endpoint(f"{self._settings.ipc_dir}/fanout"))
        for sub in self._subs:
            assert sub.sock is not None
            self._register(sub, probe=sub.fanout)
            self._await(sub.sock, {b"ROK"}, deadline, "accept the subscription")
            sub.last_ok = time.monotonic()
        for sub in fanouts:
            self._await_probe(sub, deadline)

    def _open_topics(self) -> None:
        names = sorted({(sub.exchange, sub.topic) for sub in self._subs})
        self._control.send_multipart([b"OPEN", dumps([list(n) for n in names])])

    def _register(self, sub: Subscription, probe: bool = False) -> None:
        info = dict(sub.registration, hb=self._settings.heartbeat_interval)
        if probe:
            info["probe"] = True
        assert sub.sock is not None
        sub.sock.send_multipart([b"REG", dumps(info)], zmq.NOBLOCK)

    def _await(self, sock: zmq.Socket[bytes], wanted: set[bytes], deadline: float,
               what: str) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(int(remaining * 1000) or 1):
                raise MessageDeliveryFailure(
                    f"zmq: the receiver of {self._settings.address} (IPC directory "
                    f"{self._settings.ipc_dir}) did not {what} within "
                    f"{self._settings.receiver_timeout:g}s; is it running?")
            frames = sock.recv_multipart()
            if frames[0] in wanted:
                return
            if frames[0] == b"ERR":
                raise MessageDeliveryFailure(f"zmq: the receiver refused: "
                                             f"{frames[-1].decode(errors='replace')}")
            if frames[0] == b"M":
                self._early.append(frames)

    def _await_probe(self, sub: Subscription, deadline: float) -> None:
        assert self._sub is not None and sub.sock is not None
        prefix = fanout_prefix(sub.exchange, sub.topic)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sub.poll(int(remaining * 1000) or 1):
                raise MessageDeliveryFailure(
                    f"zmq: the fanout subscription to topic {sub.topic!r} did not take "
                    f"effect within {self._settings.receiver_timeout:g}s")
            frames = self._sub.recv_multipart()
            if frames[0] == prefix and frames[1:3] == [b"P", self._identity]:
                sub.sock.send(b"FOK")
                return
            if len(frames) > 1 and frames[1] == b"M":
                self._early.append(frames[1:])

    # -- thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        poller, paused = zmq.Poller(), zmq.Poller()  # paused: not the topic sockets
        for sock in (*self._by_socket, self._control, self._wake_in):
            poller.register(sock, zmq.POLLIN)
        for sock in (self._control, self._wake_in):
            paused.register(sock, zmq.POLLIN)
        if self._sub is not None:
            poller.register(self._sub, zmq.POLLIN)
            paused.register(self._sub, zmq.POLLIN)
        for frames in self._early:
            self._deliver(frames)
        self._early.clear()
        interval = self._settings.heartbeat_interval
        next_beat = time.monotonic() + interval
        congested = False
        try:
            while not self._stopping.is_set():
                congested = self.congested(resume=congested)
                if congested:  # leave messages with the receiver until workers catch up
                    events = paused.poll(1)
                    for sub in self._subs:  # its answers wait in the sockets not read
                        sub.last_ok = time.monotonic()
                else:
                    events = poller.poll(int(interval * 1000))
                for sock, _ in events:
                    self._drain(sock)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + interval
                    self._heartbeat(now)
            self._give_back()
        except zmq.ZMQError as exc:
            if not self._stopping.is_set():
                LOG.error("zmq: listener on %s failed: %s", self._subs[0].topic, exc)
        finally:
            self._close()

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        for _ in range(256):
            if self._stopping.is_set():
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if sock is self._sub:
                if len(frames) > 1 and frames[1] == b"M":
                    self._deliver(frames[1:])
            elif sock in self._by_socket:
                if frames[0] == b"M":
                    self._deliver(frames)
                    if self.congested():
                        return  # leave the rest with the receiver
                elif frames[0] == b"ROK":
                    self._by_socket[sock].last_ok = time.monotonic()

    def deliver_direct(self, frames: list[bytes]) -> bool:
        """Take ``[b"M", deadline, header, bodies]`` from a receiver in this process;
        False once stopping (the receiver keeps the message)."""
        with self._delivering:
            if self._stopping.is_set():
                return False
            self._deliver(frames)
            return True

    def _deliver(self, frames: list[bytes]) -> None:
        """Hand ``[b"M", deadline, header, bodies]`` to the callback, body by body."""
        with self._delivering:
            self._deliver_now(frames)

    def _deliver_now(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 4:
                raise InvalidFrame(f"{len(frames)} frames")
            deadline = decode_deadline(frames[1])
            header = self._header(frames[2])
            kind = header["k"]
            bodies = unpack(frames[3])
        except Exception as exc:
            _MALFORMED.log("zmq: dropped a malformed message from the receiver: %s", exc)
            return
        if deadline is not None and time.monotonic() >= deadline:
            _EXPIRED.log("zmq: dropped expired message(s) %s on topic %s",
                         message_ids(kind, frames[3]), clip(header.get("t")))
            return
        batch = Batch(self._driver.outbox, header, deadline, self._pool, self._picked)
        make = NoteMessage if kind == "note" else RpcMessage
        on_message = self._on_message
        handed = size = 0
        for body in bodies:  # decoded by whoever handles them (see _messages)
            try:
                on_message(make(batch, body))
                handed += 1
                size += len(body)
            except Exception:
                LOG.exception("zmq: the listener callback failed")
        self._backlog += handed
        self._backlog_bytes += size

    def congested(self, resume: bool = False) -> bool:
        """True when the facade holds :data:`MAX_BACKLOG` of our messages (or
        :data:`MAX_BACKLOG_BYTES` of them) that no worker has picked up yet (with
        ``resume``: still half as many)."""
        if not self._over(resume) or self._stopping.is_set():
            return False  # _backlog less what was picked up is the real backlog
        with self._delivering:
            picked = self._picked
            count, size = len(picked), 0
            for _ in range(count):
                size += picked.pop()
            self._backlog -= count
            self._backlog_bytes -= size
            return self._over(resume)

    def _over(self, resume: bool) -> bool:
        share = 2 if resume else 1
        return self._backlog >= MAX_BACKLOG // share \
            or self._backlog_bytes >= MAX_BACKLOG_BYTES // share

    def _header(self, raw: bytes) -> dict[str, Any]:
        """The decoded routing header (the few distinct ones are cached)."""
        header = self._headers.get(raw)
        if header is None:
            header = loads(raw)
            if not isinstance(header, dict):
                raise InvalidFrame("header is not a JSON object")
            if len(raw) <= 1024:
                if len(self._headers) >= 64:
                    self._headers.clear()
                self._headers[raw] = header
        return header

    def _heartbeat(self, now: float) -> None:
        interval = self._settings.heartbeat_interval
        lost = [sub for sub in self._subs if now - sub.last_ok > 2.5 * interval]
        if lost and self._lost_since is None:
            self._lost_since = now
            LOG.warning("zmq: the receiver of %s stopped answering; re-subscribing",
                        self._settings.address)
        elif not lost and self._lost_since is not None:
            LOG.info("zmq: re-subscribed to the receiver of %s after %.1fs",
                     self._settings.address, now - self._lost_since)
            self._lost_since = None
        if lost:
            self._driver.ensure_receiver(quiet=True)
            self._open_topics()
        for sub in self._subs:
            with contextlib.suppress(zmq.Again):  # not connected: the next beat tries again
                self._register(sub)

    def _give_back(self) -> None:
        """Unregister, and return messages that arrived after stop() to the receiver."""
        deadline = time.monotonic() + _STOP_GRACE
        for sub in self._subs:
            sock = sub.sock
            assert sock is not None
            try:
                sock.send(b"UNREG", zmq.NOBLOCK)
            except zmq.Again:
                continue
            while (remaining := deadline - time.monotonic()) > 0 \
                    and sock.poll(int(remaining * 1000) or 1):
                frames = sock.recv_multipart()
                if frames[0] == b"UOK":
                    break
                if frames[0] == b"M":
                    group = dumps(self._pool) if _kind(frames[2]) == "note" else b""
                    sock.send_multipart([b"RET", group, *frames[1:]])

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking messages; returns once no callback runs or will start."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        with self._delivering:  # a callback running on the receiver's thread ends first
            self._local.remove(self._identity)
        # (The thread also wakes on its heartbeat timer should this fail.)
        with self._wake_lock, contextlib.suppress(zmq.ZMQError):
            self._wake_out.send(b"", zmq.NOBLOCK)
        if thread is not threading.current_thread():
            thread.join()
            self._thread = None
        self._driver.forget(self)

    def _close(self) -> None:
        self._local.remove(self._identity)
        for sock in (*self._by_socket, self._control, self._wake_in, self._sub):
            if sock is not None:
                sock.close(linger=0)
        with self._wake_lock:
            self._wake_out.close(linger=0)


def _kind(raw_header: bytes) -> str | None:
    try:
        kind = loads(raw_header).get("k")
    except Exception:
        return None
    return kind if isinstance(kind, str) else None
