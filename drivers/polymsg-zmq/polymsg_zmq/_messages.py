"""Incoming messages, decoded where they are handled.

The thread that takes a batch from the receiver only cuts it into bodies (bytes):
each body is decoded on first use of ``ctxt`` or ``message``, on the worker
thread that handles it. Messages waiting for a worker are then one small
object and a bytes each, rather than a tree of dicts, which keeps the garbage
collector off a server's backlog. A body that is not a valid message raises
:class:`polymsg.SerializationError` when it is first read (the facade logs
and drops it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from polymsg.driver import IncomingMessage, SerializationError, dumps, loads
from polymsg_zmq._ratelog import clip

if TYPE_CHECKING:
    from polymsg_zmq._outbox import Outbox

__all__ = ["Batch", "NoteMessage", "RpcMessage"]


class Batch:
    """What the messages of one batch share: where they came from and how to send back
    (the transport's :class:`~polymsg_zmq._outbox.Outbox`)."""

    __slots__ = ("deadline", "header", "outbox", "picked", "pool", "topic")

    def __init__(self, outbox: Outbox, header: dict[str, Any], deadline: float | None,
                 pool: str, picked: deque[int]) -> None:
        self.outbox = outbox
        self.header = header
        self.deadline = deadline
        self.pool = pool
        self.picked = picked  # the sizes of messages a worker picked up (the listener's)
        self.topic = header.get("t")


class _Lazy(IncomingMessage):
    """A body decoded on first use of :attr:`ctxt` or :attr:`message`."""

    __slots__ = ("_batch", "_body", "_ctxt", "_message")

    def __init__(self, batch: Batch, body: bytes) -> None:
        self._batch = batch
        self._body = body
        self._message: dict[str, Any] | None = None

    @property
    def message(self) -> dict[str, Any]:
        """The RPC or notification dict."""
        message = self._message
        return message if message is not None else self._decode()

    @message.setter
    def message(self, value: dict[str, Any]) -> None:
        self._message = value

    @property
    def ctxt(self) -> dict[str, Any]:
        """The caller's context dict."""
        if self._message is None:
            self._decode()
        return self._ctxt

    @ctxt.setter
    def ctxt(self, value: dict[str, Any]) -> None:
        self._ctxt = value

    def _decode(self) -> dict[str, Any]:
        """Decode the body; :class:`SerializationError` when it is not a valid message.
        The first use is when a worker picks the message up: it no longer counts in the
        listener's backlog."""
        self._batch.picked.append(len(self._body))
        try:
            body = loads(self._body)
            ctxt, message = body["c"], body["m"]
            if not isinstance(ctxt, dict) or not isinstance(message, dict):
                raise ValueError("context and message must be JSON objects")
        except Exception as exc:
            raise self._malformed(exc) from None
        self._ctxt, self._message = ctxt, message
        return message

    def _malformed(self, exc: Exception) -> SerializationError:
        return SerializationError(f"zmq: malformed message on topic "
                                  f"{clip(self._batch.topic)}: {clip(exc)}")

    def acknowledge(self) -> None:
        """Nothing to do: the receiver forgot the message when it handed it over."""


class RpcMessage(_Lazy):
    """An RPC request; :meth:`reply` sends the outcome straight to the caller."""

    __slots__ = ("_id", "_reply_to")

    def _decode(self) -> dict[str, Any]:
        self._batch.picked.append(len(self._body))
        try:
            body = loads(self._body)
            ctxt, message, msg_id, reply_to = body["c"], body["m"], body["i"], body.get("r")
            if not isinstance(ctxt, dict) or not isinstance(message, dict) \
                    or not isinstance(msg_id, str) \
                    or not (reply_to is None or isinstance(reply_to, str)):
                raise ValueError("bad context, message, id or reply address")
        except Exception as exc:
            raise self._malformed(exc) from None
        self._ctxt, self._message, self._id, self._reply_to = ctxt, message, msg_id, reply_to
        return message

    def requeue(self) -> None:
        """Send the request again through this host's receiver, as it came."""
        batch = self._batch
        batch.outbox.resend(batch.header, self._body, batch.deadline)

    def reply(self, result: Any = None, failure: Mapping[str, Any] | None = None) -> None:
        """Send the reply to the caller's reply socket (casts have none)."""
        if self._message is None:  # the facade reads the message first; just in case
            self._decode()
        reply_to = self._reply_to
        if reply_to is None:
            return
        payload = dumps({"r": result, "f": failure})  # SerializationError before sending
        self._batch.outbox.send_reply(reply_to, self._id, payload)


class NoteMessage(_Lazy):
    """A notification; :meth:`requeue` hands it back to this listener's pool."""

    __slots__ = ()

    def requeue(self) -> None:
        """Send the notification again, to this listener's pool on this host."""
        batch = self._batch
        batch.outbox.resend(dict(batch.header, pools=[batch.pool]), self._body, batch.deadline)
