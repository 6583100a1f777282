"""The caller's side of a call: a reply socket and the futures waiting on it.

One ROUTER per transport, bound to an ephemeral TCP port of this host and
named in each request; servers send ``[b"PZR", message id, reply]`` to it.
A thread matches replies to futures by message id; a reply nobody waits for
any more (the call timed out) is logged and dropped.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future

import zmq

from polymsg import MessageDeliveryFailure
from polymsg.driver import Reply, loads
from polymsg_zmq._curve import ZapHandler, make_server
from polymsg_zmq._options import Settings, join_address
from polymsg_zmq._wire import REPLY_MAGIC

__all__ = ["ReplyWaiter"]

LOG = logging.getLogger(__name__)


class ReplyWaiter:
    """Receives replies for one transport on a thread of its own."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], settings: Settings) -> None:
        self._pending: dict[bytes, Future[Reply]] = {}
        self._lock = threading.Lock()
        self._zap = ZapHandler(context, settings.curve) if settings.curve else None
        sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.rcvhwm = 100000
        sock.maxmsgsize = settings.max_message_size
        make_server(sock, settings.curve)
        try:
            port = sock.bind_to_random_port(f"tcp://{settings.bind_address}")
        except zmq.ZMQError as exc:
            sock.close()
            raise MessageDeliveryFailure(f"zmq: cannot bind a reply socket: {exc}") from exc
        self.endpoint = f"tcp://{join_address(settings.host, port)}"
        self._sock = sock
        self._wake_in: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        wake = f"inproc://replies-{uuid.uuid4().hex}"
        self._wake_in.bind(wake)
        self._wake_out: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        self._wake_out.connect(wake)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="polymsg-zmq-replies",
                                        daemon=True)
        self._thread.start()

    def expect(self, msg_id: str) -> Future[Reply]:
        """A future for the reply to ``msg_id``; cancelling it forgets the call."""
        key = msg_id.encode()
        future: Future[Reply] = Future()
        with self._lock:
            self._pending[key] = future
        future.add_done_callback(lambda _: self._forget(key))
        return future

    def _forget(self, key: bytes) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap.socket, zmq.POLLIN)
        while not self._stopping:
            try:
                events = dict(poller.poll())
            except zmq.ZMQError:
                break
            if self._zap is not None and self._zap.socket in events:
                self._zap.handle()
            if self._sock in events:
                self._drain()

    def _drain(self) -> None:
        for _ in range(1024):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 4 or frames[1] != REPLY_MAGIC:
                LOG.warning("zmq: dropped a malformed message on the reply socket")
                continue
            with self._lock:
                future = self._pending.pop(frames[2], None)
            if future is None:
                LOG.info("zmq: reply to call %s came after the caller gave up",
                         frames[2].decode(errors="replace"))
                continue
            try:
                data = loads(frames[3])
                reply = Reply(result=data.get("r"), failure=data.get("f"))
            except Exception as exc:
                LOG.warning("zmq: malformed reply to call %s: %s", frames[2], exc)
                future.set_exception(MessageDeliveryFailure(f"zmq: malformed reply: {exc}"))
                continue
            if future.set_running_or_notify_cancel():
                future.set_result(reply)

    def close(self) -> None:
        """Stop the thread, fail calls still waiting, close the sockets."""
        self._stopping = True
        self._wake_out.send(b"")
        self._thread.join()
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(MessageDeliveryFailure("zmq: the transport was closed"))
        for sock in (self._sock, self._wake_in, self._wake_out):
            sock.close(linger=0)
        if self._zap is not None:
            self._zap.close()
