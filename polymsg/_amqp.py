"""The AMQP 0-9-1 wire format of polymsg's RabbitMQ drivers.

Both RabbitMQ drivers (``rabbit+kombu`` and ``rabbit+pika``) speak the format
oslo.messaging's ``rabbit`` driver uses, so a polymsg service and an
oslo.messaging service on the same broker call each other and read each
other's notifications, and a client of one polymsg driver talks to a server
of the other. This module holds that format once, free of any broker client:
drivers get plain values (:class:`ExchangeSpec`, :class:`QueueSpec`,
:class:`Route`, bytes and a properties dict) and turn them into calls of
their own library. Drivers reach it as ``polymsg.amqp``.

Bodies
======
Every body is the JSON "2.0 envelope"::

    {"oslo.version": "2.0", "oslo.message": "<the message, as JSON text>"}

published with ``content_type="application/json"`` and
``content_encoding="utf-8"``. Inside, a message is a flat JSON object:

* request: ``method``, ``args`` and, when set, ``namespace`` and
  ``version``; a call adds ``_msg_id`` (the reply's correlation id),
  ``_reply_q`` (the caller's reply queue) and ``_timeout`` (its call-monitor
  timeout in seconds, or ``null``);
* notification: ``message_id``, ``publisher_id``, ``event_type``,
  ``priority`` (upper case), ``payload`` and ``timestamp``;
* reply: ``result``, ``failure`` (the failure dict as JSON *text*, or
  ``null``), ``ending`` (``true`` on the final reply) and ``_msg_id``; a
  call-monitor heartbeat is a reply with ``result`` and ``failure``
  ``null`` and ``ending`` ``false``, sent every ``_timeout / 2`` seconds
  while the call runs.

Requests and notifications carry the caller's context flattened into
``_context_<key>`` fields, and every message a ``_unique_id`` (hex) that
receivers may use to drop duplicates. A body without the envelope is read as
the bare message (what older senders and oslo.messaging's ``messaging``
notification driver publish).

Names and declarations
======================
========================  =========================================  ==============================
what                      exchange (type)                            queue (routing key)
========================  =========================================  ==============================
RPC to a topic            ``<exchange>`` (topic)                     ``<topic>`` (``<topic>``)
RPC to one server         ``<exchange>`` (topic)                     ``<topic>.<server>`` (same)
fanout cast               ``<topic>_fanout`` (fanout, auto-delete)   ``<topic>_fanout_<hex>`` (one
                                                                     per server, ``x-expires``), or
                                                                     the stream ``<topic>_fanout``
reply                     the default exchange ``""``                ``reply_<hex>`` (one per
                                                                     transport, ``x-expires``)
notification              ``<exchange>`` (topic)                     ``<topic>.<priority>``, or the
                                                                     pool's name (routing key
                                                                     ``<topic>.<priority>``)
========================  =========================================  ==============================

RPC queues and fanout exchanges of targets on an exchange other than the
control exchange get the prefix ``<exchange>/`` (see :meth:`Layout.scoped`),
so exchanges isolate as polymsg promises; oslo.messaging services share the
control exchange, where the names above apply unchanged. With the option
``exchange_scoped_names = false`` the names above apply on every exchange
(oslo.messaging's naming; exchanges then no longer isolate RPC). Notification queues
keep oslo.messaging's names on every exchange, so a listener can collect the
notifications other services publish on their own exchanges.

Every queue is durable and none exclusive: RabbitMQ 4.3 refuses
non-durable non-exclusive queues, and an exclusive queue dies with its
connection (a reply in flight would be lost, a fast reconnect would meet
``RESOURCE_LOCKED``). Reply and fanout queues expire after
:attr:`Layout.transient_queue_ttl` without a consumer; topic, server and
notification queues store messages until a consumer takes them. Which queue
type each role gets under oslo.messaging's ``rabbit_quorum_queue``,
``rabbit_transient_quorum_queue`` and ``rabbit_stream_fanout`` is in
:class:`Layout`; ``use_queue_manager`` names reply and fanout queues
``reply_<host>:<process>:<n>`` and ``<topic>_fanout_<host>:<process>:<n>``.

Garbage on the wire
===================
Every ``decode_*`` function raises :class:`~polymsg.SerializationError`
naming what is wrong (not JSON, not an object, an unknown envelope version,
a missing or mistyped field); drivers log it and drop the message.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polymsg._amqp_layout import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    PERSISTENT,
    TRANSIENT,
    ExchangeSpec,
    Layout,
    QueueSpec,
    Route,
    expiration,
    fanout_queue_name,
    properties,
    queue_arguments,
    reply_queue_name,
)
from polymsg._exceptions import SerializationError
from polymsg._json import dumps, dumps_str, loads

__all__ = [
    "CONTENT_ENCODING",
    "CONTENT_TYPE",
    "ENVELOPE_VERSION",
    "PERSISTENT",
    "TRANSIENT",
    "ExchangeSpec",
    "Layout",
    "Notification",
    "QueueSpec",
    "ReplyFrame",
    "Request",
    "Route",
    "conflict_error",
    "consume_arguments",
    "decode_notification",
    "decode_reply",
    "decode_request",
    "encode_heartbeat",
    "encode_notification",
    "encode_reply",
    "encode_request",
    "expiration",
    "fanout_queue_name",
    "for_broker",
    "layout_from_options",
    "new_id",
    "next_stream_offset",
    "properties",
    "queue_arguments",
    "rabbit_opts",
    "reply_queue_name",
    "requeue_warning",
]

ENVELOPE_VERSION = "2.0"

_VERSION_KEY = "oslo.version"
_MESSAGE_KEY = "oslo.message"
_CONTEXT_PREFIX = "_context_"
_UNIQUE_ID = "_unique_id"
_MSG_ID = "_msg_id"
_REPLY_Q = "_reply_q"
_TIMEOUT = "_timeout"



class _Ids:
    """Message ids: a random per-process prefix and a counter. As unique as
    uuid4 for this purpose, without a system call per message."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


_new_id = _Ids()


def new_id() -> str:
    """A fresh message id (32 hex digits), unique across processes."""
    return _new_id()


# -- encoding -----------------------------------------------------------------

def _envelope(raw: dict[str, Any]) -> bytes:
    return dumps({_VERSION_KEY: ENVELOPE_VERSION, _MESSAGE_KEY: dumps_str(raw)})


def _with_context(raw: dict[str, Any], ctxt: Mapping[str, Any],
                  unique_id: str | None = None) -> dict[str, Any]:
    if not isinstance(ctxt, Mapping):
        raise SerializationError(f"the context must be a dict, not {type(ctxt).__name__}")
    for key, value in ctxt.items():
        if not isinstance(key, str):
            raise SerializationError(f"context keys must be strings, got {key!r}")
        raw[_CONTEXT_PREFIX + key] = value
    raw[_UNIQUE_ID] = unique_id or new_id()
    return raw


def encode_request(ctxt: Mapping[str, Any], message: Mapping[str, Any], *,
                   msg_id: str | None = None, reply_q: str | None = None,
                   unique_id: str | None = None,
                   call_monitor_timeout: float | None = None) -> bytes:
    """The body of an RPC request; a call passes ``msg_id`` and ``reply_q``.

    ``unique_id`` (default: a new one) lets a sender name the message in
    its logs by the id receivers see. ``call_monitor_timeout`` (calls only)
    goes out as ``_timeout``: the server then sends a heartbeat frame
    (:func:`encode_heartbeat`) every ``_timeout / 2`` seconds while the
    call runs; ``null`` asks for none.

    ``namespace`` and ``version`` are left out when ``None``, as
    oslo.messaging's servers read a missing version as ``"1.0"``.
    """
    raw: dict[str, Any] = {"method": message["method"], "args": message.get("args") or {}}
    for key in ("namespace", "version"):
        if message.get(key) is not None:
            raw[key] = message[key]
    if msg_id is not None:
        raw[_MSG_ID] = msg_id
        raw[_REPLY_Q] = reply_q
        raw[_TIMEOUT] = call_monitor_timeout
    return _envelope(_with_context(raw, ctxt, unique_id))


def encode_notification(ctxt: Mapping[str, Any], message: Mapping[str, Any], *,
                        unique_id: str | None = None) -> bytes:
    """The body of a notification (the message dict of the driver SPI)."""
    raw = {key: message.get(key) for key in _NOTIFICATION_FIELDS}
    return _envelope(_with_context(raw, ctxt, unique_id))


def encode_reply(msg_id: str, result: Any = None, failure: Mapping[str, Any] | None = None,
                 *, ending: bool = True) -> bytes:
    """The body of a call's reply; ``failure`` is carried as JSON text."""
    raw = {
        "result": result,
        "failure": dumps_str(dict(failure)) if failure is not None else None,
        "ending": ending,
        _MSG_ID: msg_id,
        _UNIQUE_ID: new_id(),
    }
    return _envelope(raw)


def encode_heartbeat(msg_id: str) -> bytes:
    """The body of a call-monitor heartbeat for call ``msg_id``: a reply frame
    with no result, no failure and ``ending`` false."""
    return encode_reply(msg_id, None, None, ending=False)


# -- decoding -----------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """A decoded RPC request: the SPI's ``ctxt`` and ``message``, plus the reply
    address (``msg_id`` and ``reply_q`` are ``None`` for casts)."""

    ctxt: dict[str, Any]
    message: dict[str, Any]
    msg_id: str | None
    reply_q: str | None
    unique_id: str | None
    #: The caller's ``_timeout`` (seconds between heartbeats it tolerates),
    #: ``None`` unless a positive finite number.
    call_monitor_timeout: float | None = None


@dataclass(frozen=True)
class Notification:
    """A decoded notification: the SPI's ``ctxt`` and ``message``."""

    ctxt: dict[str, Any]
    message: dict[str, Any]
    unique_id: str | None


@dataclass(frozen=True)
class ReplyFrame:
    """A decoded reply. ``ending`` is false on interim frames (oslo.messaging's
    call-monitor heartbeats, and the first half of replies from old senders)."""

    msg_id: str
    result: Any
    failure: dict[str, Any] | None
    ending: bool

    @property
    def heartbeat(self) -> bool:
        """True for a call-monitor heartbeat: interim, with no result and no failure."""
        return not self.ending and self.result is None and self.failure is None


_NOTIFICATION_FIELDS = ("message_id", "publisher_id", "event_type", "priority", "payload",
                        "timestamp")


def _open(body: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Body -> the flat message object, through the envelope when there is one."""
    data = loads(body)
    if not isinstance(data, dict):
        raise SerializationError(f"message body is a JSON {type(data).__name__}, not an object")
    if _VERSION_KEY not in data and _MESSAGE_KEY not in data:
        return data
    version = data.get(_VERSION_KEY)
    if not isinstance(version, str) or version.split(".")[0] != "2":
        raise SerializationError(f"unsupported message envelope version {version!r}")
    inner = data.get(_MESSAGE_KEY)
    if not isinstance(inner, str):
        raise SerializationError("message envelope has no 'oslo.message' text")
    raw = loads(inner)
    if not isinstance(raw, dict):
        raise SerializationError(f"enveloped message is a JSON {type(raw).__name__}, not an object")
    return raw


def _context(raw: Mapping[str, Any]) -> dict[str, Any]:
    start = len(_CONTEXT_PREFIX)
    return {key[start:]: value for key, value in raw.items() if key.startswith(_CONTEXT_PREFIX)}


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise SerializationError(f"message field {key!r} must be a string, got {value!r}")
    return value


def _required_str(raw: Mapping[str, Any], key: str) -> str:
    value = _optional_str(raw, key)
    if not value:
        raise SerializationError(f"message has no {key!r}")
    return value


def decode_request(body: bytes | bytearray | memoryview | str) -> Request:
    """Read an RPC request body; garbage raises :class:`~polymsg.SerializationError`."""
    raw = _open(body)
    method = _required_str(raw, "method")
    args = raw.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise SerializationError(f"message field 'args' must be an object, got {args!r}")
    message = {"method": method, "args": args, "namespace": _optional_str(raw, "namespace"),
               "version": _optional_str(raw, "version")}
    msg_id = _optional_str(raw, _MSG_ID)
    reply_q = _optional_str(raw, _REPLY_Q)
    if msg_id and not reply_q:
        raise SerializationError(f"call {msg_id} names no reply queue")
    monitor = _call_monitor_timeout(raw.get(_TIMEOUT)) if msg_id else None
    return Request(_context(raw), message, msg_id or None, reply_q, _unique_id(raw), monitor)


def _call_monitor_timeout(value: Any) -> float | None:
    """A request's ``_timeout`` as seconds; ``None`` unless a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if 0 < seconds < math.inf else None


def decode_notification(body: bytes | bytearray | memoryview | str) -> Notification:
    """Read a notification body; garbage raises :class:`~polymsg.SerializationError`."""
    raw = _open(body)
    for key in ("publisher_id", "event_type"):
        _required_str(raw, key)
    if "payload" not in raw:
        raise SerializationError("notification has no 'payload'")
    message = {key: raw.get(key) for key in _NOTIFICATION_FIELDS}
    message["priority"] = _required_str(raw, "priority").upper()
    for key in ("message_id", "timestamp"):
        if message[key] is not None and not isinstance(message[key], str):
            message[key] = str(message[key])
    return Notification(_context(raw), message, _unique_id(raw))


def decode_reply(body: bytes | bytearray | memoryview | str) -> ReplyFrame:
    """Read a reply body; garbage raises :class:`~polymsg.SerializationError`."""
    raw = _open(body)
    msg_id = _required_str(raw, _MSG_ID)
    ending = raw.get("ending", False)
    if not isinstance(ending, bool):
        raise SerializationError(f"reply field 'ending' must be a boolean, got {ending!r}")
    return ReplyFrame(msg_id, raw.get("result"), _failure(raw.get("failure")), ending)


def _failure(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    data = loads(value) if isinstance(value, str) else value
    if not isinstance(data, dict):
        raise SerializationError(f"reply failure must be a JSON object, got {data!r}")
    args, kwargs, tb = data.get("args"), data.get("kwargs"), data.get("tb")
    return {
        "class": str(data.get("class") or "Exception"),
        "module": str(data.get("module") or ""),
        "message": str(data.get("message") or ""),
        "tb": [str(line) for line in tb] if isinstance(tb, list) else [],
        "args": list(args) if isinstance(args, list) else [],
        "kwargs": dict(kwargs) if isinstance(kwargs, dict) else {},
    }


def _unique_id(raw: Mapping[str, Any]) -> str | None:
    value = raw.get(_UNIQUE_ID)
    return value if isinstance(value, str) else None


# Options and layout shared by the RabbitMQ drivers (kept in their own module).
from polymsg._amqp_options import layout_from_options, rabbit_opts  # noqa: E402
from polymsg._amqp_topology import (  # noqa: E402
    conflict_error,
    consume_arguments,
    for_broker,
    next_stream_offset,
    requeue_warning,
)
