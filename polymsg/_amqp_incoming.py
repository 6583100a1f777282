"""Deliveries: decoding what a server or listener consumed, and replying to calls.

Both RabbitMQ drivers decode a delivery with :func:`decode` (garbage is
logged at a bounded rate and reported as ``None``, for the driver to drop)
and hand the facade a :class:`Delivery`, which knows how to reply; the
driver's subclass only says how to acknowledge or requeue on its connection.
A :class:`QueueWatch` keeps what a consumer must remember of its deliveries
(where a stream resumes, which requeue passes a quorum queue's delivery limit).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

from polymsg._amqp import (
    Notification,
    Request,
    decode_notification,
    decode_request,
    encode_heartbeat,
    encode_reply,
)
from polymsg._amqp_layout import QueueSpec
from polymsg._amqp_topology import consume_arguments, next_stream_offset, requeue_warning
from polymsg._exceptions import MessageDeliveryFailure, SerializationError
from polymsg._ratelimit import LogLimiter
from polymsg.driver import IncomingMessage

__all__ = ["GARBAGE", "Delivery", "QueueWatch", "SendReply", "decode"]

LOG = logging.getLogger(__name__)

#: Malformed requests and notifications, counted across every transport: a
#: flood of garbage logs a few lines a minute, not a line per message.
GARBAGE = LogLimiter(LOG, "malformed messages")

#: Sends a reply: ``send_reply(reply queue, message id, encoded body)``.
SendReply = Callable[[str, str, bytes], None]


def decode(kind: Literal["request", "notification"], body: bytes | bytearray | memoryview,
           exchange: str | None, routing_key: str | None) -> Request | Notification | None:
    """The decoded request or notification, or ``None`` (logged) for garbage."""
    try:
        if kind == "request":
            return decode_request(body)
        return decode_notification(body)
    except SerializationError as exc:
        GARBAGE.log("dropping a malformed %s from exchange %r, routing key %r: %s", kind,
                    exchange, routing_key, exc)
        return None


class Delivery(IncomingMessage):
    """A delivered request or notification, acknowledged once by the facade."""

    def __init__(self, decoded: Request | Notification,
                 send_reply: SendReply | None = None) -> None:
        self.ctxt = decoded.ctxt
        self.message = decoded.message
        self._send_reply = send_reply
        self._msg_id = decoded.msg_id if isinstance(decoded, Request) else None
        self._reply_q = decoded.reply_q if isinstance(decoded, Request) else None
        if isinstance(decoded, Request):
            self.call_monitor_timeout = decoded.call_monitor_timeout

    @abc.abstractmethod
    def settle(self, requeue: bool) -> None:
        """Acknowledge the delivery (``requeue``: give it back), from any thread."""

    def acknowledge(self) -> None:
        self.settle(requeue=False)

    def requeue(self) -> None:
        self.settle(requeue=True)

    def reply(self, result: Any = None, failure: Mapping[str, Any] | None = None) -> None:
        if self._msg_id is None or self._reply_q is None or self._send_reply is None:
            return
        body = encode_reply(self._msg_id, result, failure)  # SerializationError: nothing sent
        try:
            self._send_reply(self._reply_q, self._msg_id, body)
        except MessageDeliveryFailure as exc:
            LOG.warning("could not send the reply to call %s: %s", self._msg_id, exc)

    def heartbeat(self) -> None:
        """Send a call-monitor heartbeat to the caller's reply queue (the
        driver's reply path: bounded retries, errors logged)."""
        if self._msg_id is None or self._reply_q is None or self._send_reply is None:
            return
        try:
            self._send_reply(self._reply_q, self._msg_id, encode_heartbeat(self._msg_id))
        except MessageDeliveryFailure as exc:
            LOG.debug("could not send a call-monitor heartbeat for call %s: %s", self._msg_id, exc)


class QueueWatch:
    """What a consumer notes of its deliveries: where each stream resumes after
    a reconnect, and which deliveries a requeue would push past their quorum
    queue's delivery limit (logged when that requeue happens). Deliveries are
    keyed by what the driver settles them with (a delivery tag, with its
    connection where tags repeat)."""

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {}
        self._near_limit: dict[Hashable, str] = {}

    @staticmethod
    def watches(queue: QueueSpec) -> bool:
        """True when deliveries from ``queue`` need :meth:`delivered` (a stream, a quorum queue)."""
        return bool(queue.consume_arguments) or queue.arguments.get("x-queue-type") == "quorum"

    def consume_arguments(self, queue: QueueSpec) -> dict[str, Any] | None:
        """``basic.consume`` arguments for ``queue``: a stream resumes after what it gave."""
        return consume_arguments(queue, self._offsets.get(queue.name))

    def delivered(self, queue: QueueSpec, key: Hashable, headers: Mapping[str, Any] | None,
                  body: bytes | bytearray | memoryview | str, *, acked: bool = True) -> None:
        """Note a delivery from ``queue`` (``acked``: it will be settled under ``key``)."""
        if queue.consume_arguments:
            offset = next_stream_offset(headers)
            if offset is not None:
                self._offsets[queue.name] = offset
        if acked:
            note = requeue_warning(queue, headers, body)
            if note is not None:
                self._near_limit[key] = note

    def settled(self, key: Hashable, requeue: bool, prefix: str = "") -> None:
        """The delivery ``key`` was acknowledged or (``requeue``) given back."""
        note = self._near_limit.pop(key, None)
        if note is not None and requeue:
            LOG.warning("%s%s", prefix, note)

    def lost(self) -> None:
        """The connection is gone: its unsettled deliveries come again."""
        self._near_limit.clear()
