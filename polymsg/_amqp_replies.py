"""The reply table: calls waiting for their reply, matched by message id.

Each transport has one reply queue; every reply on it names the call it
answers (``_msg_id``). A reply may come in several frames: call-monitor
heartbeats and the first half of a reply from an old sender are interim
(``ending`` false), and the final frame may carry nothing, in which case the
result of the interim frame holding one is the reply. A heartbeat (interim,
no result, no failure) calls the call's ``heartbeat`` callback and never
completes it. A reply for a call
nobody waits for any more (it timed out) is dropped; a malformed one is
logged at a bounded rate (:class:`~polymsg.driver.LogLimiter`) and dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from functools import partial

from polymsg._amqp import ReplyFrame, decode_reply
from polymsg._exceptions import SerializationError
from polymsg._ratelimit import LogLimiter
from polymsg.driver import Reply

__all__ = ["ReplyTable", "settle"]

LOG = logging.getLogger(__name__)

#: Malformed replies, counted across every transport of the process.
GARBAGE = LogLimiter(LOG, "malformed replies")


def settle(future: Future[Reply], outcome: Reply | BaseException) -> None:
    """Complete ``future`` unless it is done already (cancelled by a timeout)."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass


class ReplyTable:
    """The calls of one transport waiting for replies; thread-safe."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[Reply]] = {}
        self._interim: dict[str, ReplyFrame] = {}
        self._heartbeats: dict[str, Callable[[], None]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, msg_id: str, future: Future[Reply],
               heartbeat: Callable[[], None] | None = None) -> None:
        """Route the reply to ``msg_id`` to ``future`` and its call-monitor
        heartbeats to ``heartbeat``; forgotten once the future is done."""
        with self._lock:
            self._waiting[msg_id] = future
            if heartbeat is not None:
                self._heartbeats[msg_id] = heartbeat
        future.add_done_callback(partial(self._forget, msg_id))

    def waiting(self) -> list[Future[Reply]]:
        """The futures of the calls still waiting."""
        with self._lock:
            return list(self._waiting.values())

    def fail(self, msg_id: str, error: BaseException) -> bool:
        """Fail the call ``msg_id`` (its request could not be delivered); False
        when no call of that id waits."""
        with self._lock:
            future = self._waiting.pop(msg_id, None)
        if future is None:
            return False
        settle(future, error)
        return True

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiting call (the transport is closing)."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
            self._interim.clear()
            self._heartbeats.clear()
        for future in waiting.values():
            settle(future, error)

    def deliver(self, body: bytes | bytearray | memoryview) -> None:
        """Handle one message of the reply queue (any thread)."""
        try:
            frame = decode_reply(body)
        except SerializationError as exc:
            GARBAGE.log("dropping a malformed message from reply queue %r: %s", self.queue, exc)
            return
        heartbeat = None
        with self._lock:
            if frame.msg_id not in self._waiting:
                future = None
            elif frame.heartbeat:
                heartbeat = self._heartbeats.get(frame.msg_id)
            elif not frame.ending:
                self._interim[frame.msg_id] = frame  # the first half of an old reply
                return
            else:
                earlier = self._interim.pop(frame.msg_id, None)
                future = self._waiting.pop(frame.msg_id)
                self._heartbeats.pop(frame.msg_id, None)
        if frame.heartbeat:
            if heartbeat is not None:
                heartbeat()
            return
        if future is None:
            LOG.info("reply to call %s dropped: nobody waits for it any more", frame.msg_id)
            return
        if earlier is not None and frame.result is None and frame.failure is None:
            frame = earlier
        settle(future, Reply(result=frame.result, failure=frame.failure))

    def _forget(self, msg_id: str, _future: Future[Reply]) -> None:
        with self._lock:
            self._waiting.pop(msg_id, None)
            self._interim.pop(msg_id, None)
            self._heartbeats.pop(msg_id, None)
