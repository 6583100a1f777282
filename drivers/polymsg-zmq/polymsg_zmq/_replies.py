"""The caller's side of a call: a reply socket and the futures waiting on it.

One ROUTER per transport, bound to an ephemeral TCP port of this host and
named in each request; servers send ``[b"PZR" + message id, reply]`` to it.

A caller blocked in ``future.result()`` becomes the *leader* and polls the
socket itself, handing each reply to the future it belongs to; other callers
wait on their future and one of them takes over when the leader's own reply
has come. A sequential caller thus gets its reply without a thread switch.
A future waited for with ``add_done_callback`` (``asyncio.wrap_future``…)
instead has a reader thread, started on first such use, poll for it
whenever no caller leads. A reply nobody waits for any more (the call timed
out) is logged and dropped; with CURVE, the leader also answers the
context's ZAP requests.

Two more frames arrive here: a call-monitor heartbeat (``PZB``) calls the
call's ``heartbeat`` callback and leaves its future pending; a refusal
(``{"u": reason}``) from the receiver of an at-least-once send fails the
future with :class:`polymsg.MessageUndeliverable`. A future with a ``limit``
(an at-least-once cast waiting for its confirmation) fails with
:class:`polymsg.MessageDeliveryFailure` when ``result()`` has waited that
long for nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import zmq

from polymsg import MessageDeliveryFailure, MessageUndeliverable
from polymsg.driver import Reply, loads
from polymsg_zmq._curve import ZapHandler, make_server
from polymsg_zmq._options import Settings, join_address
from polymsg_zmq._ratelog import RateLimited, clip
from polymsg_zmq._wire import BEAT_MAGIC, REPLY_MAGIC

__all__ = ["ReplyFuture", "ReplyWaiter"]

LOG = logging.getLogger(__name__)

_POLL_SLICE = 0.1

#: Anyone who reaches the reply port can send garbage or replies to calls long gone.
_MALFORMED = RateLimited(LOG, "zmq: malformed messages on reply sockets")
_LATE = RateLimited(LOG, "zmq: replies to calls no one waits for", level=logging.INFO)


class ReplyFuture(Future[Reply]):
    """A call's future: waiting for its result reads the reply socket when no one else is."""

    def __init__(self, waiter: ReplyWaiter, key: bytes,
                 heartbeat: Callable[[], None] | None = None,
                 limit: float | None = None) -> None:
        super().__init__()
        self.waiter = waiter
        self.key = key
        self.wake = threading.Event()
        self.heartbeat = heartbeat
        self.limit = limit

    def result(self, timeout: float | None = None) -> Reply:
        limit = self.limit
        if limit is not None and (timeout is None or timeout > limit):
            if not self.done():
                self.waiter.wait(self, limit)
            if not self.done() and self.set_running_or_notify_cancel():
                self.set_exception(MessageDeliveryFailure(
                    f"zmq: no receiver confirmed the message within {limit:g}s"))
            return super().result(0)
        if not self.done():
            self.waiter.wait(self, timeout)
        return super().result(0 if timeout is not None else None)

    def add_done_callback(self, fn: Callable[[Future[Reply]], object]) -> None:
        super().add_done_callback(fn)
        if not self.done():
            self.waiter.watch(self)


class ReplyWaiter:
    """The reply socket of one transport and the calls waiting for replies."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], settings: Settings) -> None:
        self._pending: dict[bytes, ReplyFuture] = {}
        self._waiting: set[ReplyFuture] = set()
        self._lock = threading.Lock()
        self._leader = threading.Lock()
        self._watched = threading.Condition(self._lock)
        self._reader: threading.Thread | None = None
        self._closed = False
        self._zap = ZapHandler(context, settings.curve) if settings.curve else None
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.rcvhwm = 100000
        sock.maxmsgsize = settings.max_message_size
        make_server(sock, settings.curve)
        try:
            port = sock.bind_to_random_port(f"tcp://{settings.bind_interface()}")
        except MessageDeliveryFailure:
            sock.close()
            raise
        except zmq.ZMQError as exc:
            sock.close()
            raise MessageDeliveryFailure(f"zmq: cannot bind a reply socket: {exc}") from exc
        self.endpoint = f"tcp://{join_address(settings.host, port)}"
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        if self._zap is not None:
            self._poller.register(self._zap.socket, zmq.POLLIN)

    def expect(self, msg_id: str, heartbeat: Callable[[], None] | None = None,
               limit: float | None = None) -> ReplyFuture:
        """A future for the reply to ``msg_id``; cancelling it forgets the call.
        ``heartbeat`` is called for each call-monitor heartbeat of the call;
        ``limit`` bounds how long ``result()`` waits (see the module docstring)."""
        key = msg_id.encode()
        future = ReplyFuture(self, key, heartbeat, limit)
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            self._pending[key] = future
        Future.add_done_callback(future, self._forget)
        return future

    def _forget(self, future: Future[Reply]) -> None:
        assert isinstance(future, ReplyFuture)
        with self._lock:
            self._pending.pop(future.key, None)

    def wait(self, future: ReplyFuture, timeout: float | None) -> None:
        """Block until ``future`` is done or ``timeout`` passes, reading the socket
        while no other caller does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._waiting.add(future)
        try:
            while not future.done() and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                if self._leader.acquire(blocking=False):
                    try:
                        self._lead(future, deadline)
                    finally:
                        self._leader.release()
                        self._pass_on()
                else:
                    future.wake.wait(_POLL_SLICE if remaining is None
                                     else min(remaining, _POLL_SLICE))
                    future.wake.clear()
        finally:
            with self._lock:
                self._waiting.discard(future)
                if self._reader is not None:
                    self._watched.notify()  # replies others await may need the reader

    def _lead(self, future: ReplyFuture, deadline: float | None) -> None:
        while not future.done() and not self._closed:
            remaining = _POLL_SLICE if deadline is None else min(
                _POLL_SLICE, deadline - time.monotonic())
            if remaining <= 0 or not self._poll(remaining):
                return

    def _poll(self, timeout: float) -> bool:
        """Read the socket for up to ``timeout`` seconds; False once it is closed."""
        try:
            events = dict(self._poller.poll(int(timeout * 1000) or 1))
        except zmq.ZMQError:
            return False
        if self._zap is not None and self._zap.socket in events:
            self._zap.handle()
        if self._sock in events:
            self._drain()
        return True

    def watch(self, future: ReplyFuture) -> None:
        """``future`` is waited for without ``result()``: make sure someone reads."""
        with self._lock:
            if self._closed:
                return
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="polymsg-zmq-replies",
                                                daemon=True)
                self._reader.start()
            self._watched.notify()

    def _orphans(self) -> bool:
        """Replies are awaited and no caller reads the socket (lock held)."""
        return bool(self._pending) and not self._waiting

    def _read(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._orphans():
                    self._watched.wait()
                if self._closed:
                    return
            if not self._leader.acquire(timeout=_POLL_SLICE):
                continue  # a caller leads; it reads every reply
            try:
                while True:
                    with self._lock:
                        if self._closed or not self._orphans():
                            break
                    self._poll(_POLL_SLICE)
            finally:
                self._leader.release()
                self._pass_on()

    def _pass_on(self) -> None:
        """Wake a waiting caller so that it takes over reading the socket."""
        with self._lock:
            waiting = [f for f in self._waiting if not f.done()]
        if waiting:
            waiting[0].wake.set()

    def _drain(self) -> None:
        for _ in range(1024):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3:
                _MALFORMED.log("zmq: dropped a malformed message on the reply socket")
                continue
            if frames[1].startswith(BEAT_MAGIC):
                self._beat(frames[1][len(BEAT_MAGIC):], frames[2])
                continue
            if not frames[1].startswith(REPLY_MAGIC):
                _MALFORMED.log("zmq: dropped a malformed message on the reply socket")
                continue
            key = frames[1][len(REPLY_MAGIC):]
            with self._lock:
                future = self._pending.pop(key, None)
            if future is None:
                _LATE.log("zmq: reply to call %s came after the caller gave up", clip(key))
                continue
            self._resolve(future, frames[2])

    def _beat(self, key: bytes, data: bytes) -> None:
        """A call-monitor heartbeat: the call runs on; its future stays pending."""
        with self._lock:
            future = self._pending.get(key)
        if data or future is None or future.heartbeat is None:
            _LATE.log("zmq: heartbeat for call %s that no one monitors", clip(key))
            return
        try:
            future.heartbeat()
        except Exception as exc:
            LOG.debug("zmq: call-monitor heartbeat callback failed: %s", exc)

    def _resolve(self, future: ReplyFuture, data: bytes) -> None:
        try:
            decoded = loads(data)
            refused = decoded.get("u")
            if refused is not None:
                self._refused(future, refused)
                return
            reply = Reply(result=decoded.get("r"), failure=decoded.get("f"))
        except Exception as exc:
            _MALFORMED.log("zmq: malformed reply to call %s: %s", clip(future.key), clip(exc))
            if future.set_running_or_notify_cancel():
                future.set_exception(MessageDeliveryFailure(f"zmq: malformed reply: {exc}"))
            future.wake.set()
            return
        if future.set_running_or_notify_cancel():
            future.set_result(reply)
        future.wake.set()

    def _refused(self, future: ReplyFuture, reason: object) -> None:
        """A receiver said nothing on its host serves an at-least-once message."""
        if future.set_running_or_notify_cancel():
            future.set_exception(MessageUndeliverable(f"zmq: {clip(reason)}"))
        future.wake.set()

    def close(self) -> None:
        """Fail calls still waiting, stop the reader thread and close the socket once no
        caller reads it."""
        with self._lock:
            self._closed = True
            self._watched.notify_all()
            reader = self._reader
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(MessageDeliveryFailure("zmq: the transport was closed"))
            future.wake.set()
        if reader is not None:
            reader.join()
        with self._leader:  # a leader polls for at most _POLL_SLICE more
            self._sock.close(linger=0)
            if self._zap is not None:
                self._zap.close()
