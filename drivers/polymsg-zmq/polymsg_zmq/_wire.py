"""Frames between processes, and where the IPC sockets live.

Every payload is JSON (:func:`polymsg.driver.dumps`); frames are zmq
multipart messages. Three conversations exist:

**Sender -> receiver** (TCP, sender DEALER -> receiver ROUTER)::

    [b"PZ1" + header, bodies]

One header routes one or more bodies (a batch), packed in one frame: each
body preceded by its length (4 bytes, big-endian), so a batch costs two
frames whatever its size. ``header`` is a JSON object:
``k`` kind (``"rpc"`` one server of the topic, or the server ``s`` when set;
``"fan"`` every server of the topic; ``"note"`` a notification of priority
``p`` for the pools ``pools``, ``null`` meaning every pool on that host),
``x`` exchange, ``t`` topic, ``ttl`` message TTL in seconds counted from the
receiver's arrival time (a call's is its remaining timeout), ``q`` the queue
TTL hint, and ``u`` true when the sender knew no host for the topic and
handed the message to its own receiver to hold and route later. Two
optional RPC fields: ``cm`` the caller's call-monitor timeout in seconds,
and ``a`` at least once (``1`` a call, ``2`` a cast): the receiver refuses
the message when no local consumer serves it, and confirms a cast it took.
An RPC body is ``{"i": message id, "c": ctxt, "m": message, "r": reply
endpoint or null}``, with ``"a": reply endpoint`` for at-least-once
messages; a notification body is ``{"c": ctxt, "m": message}``.

**Reply** (TCP, server or receiver DEALER -> the caller's reply ROUTER)::

    [b"PZR" + message id, {"r": result, "f": failure or null}]    (not packed)
    [b"PZR" + message id, {"u": reason}]     at least once: nothing serves it here
    [b"PZB" + message id, b""]               call-monitor heartbeat: still running

A receiver confirms an at-least-once cast it took with ``{"r": null, "f":
null}``.

**Receiver <-> local consumers** (IPC, one ROUTER per exchange and topic at
``<ipc_dir>/t/<exchange>/<topic>``; consumers connect a DEALER)::

    consumer -> receiver: [b"REG", {"kind": "rpc", "server": S, "qttl": ...}]
                          [b"REG", {"kind": "note", "pool": P, "priorities": [...]}]
                          [b"UNREG"]
                          [b"RET", group, deadline, header, bodies]
                          [b"FOK"]
    receiver -> consumer: [b"M", deadline, header, bodies]  [b"ROK"]  [b"UOK"]

``REG`` is repeated every heartbeat interval and answered with ``ROK``;
``RET`` gives undelivered (or requeued) messages back; ``deadline`` is a
``time.monotonic()`` value (8-byte big-endian double, empty when none),
meaningful because receiver and consumers share the host's clock. Fanout
goes out over the receiver's PUB socket at ``<ipc_dir>/fanout``::

    [prefix, b"M", deadline, header, bodies]     prefix = exchange \\0 topic \\0
    [prefix, b"P", consumer id]                     probe: the subscription is in place

The receiver's control socket (``<ipc_dir>/control``, ROUTER) answers
``[b"OPEN", [[exchange, topic], ...]]`` with ``[b"OK"]`` once those topic
sockets are bound, and ``[b"PING"]`` with ``[b"PONG", {"address": ...}]``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
from typing import Any

from polymsg import InvalidTarget
from polymsg.driver import SerializationError, dumps, loads

__all__ = [
    "AT_LEAST_ONCE_CALL", "AT_LEAST_ONCE_CAST", "BEAT_MAGIC", "MAGIC", "REPLY_MAGIC", "Header",
    "InvalidFrame", "deal_packed", "decode_deadline",
    "decode_header",
    "encode_deadline", "encode_header", "fanout_prefix", "ipc_endpoint", "ipc_path",
    "message_ids", "pack", "prepare_dir", "unpack", "validate_name",
]

MAGIC = b"PZ1"
REPLY_MAGIC = b"PZR"
#: A call-monitor heartbeat: an interim frame on the reply path, the call still runs.
BEAT_MAGIC = b"PZB"
#: Header ``a`` values: an at-least-once call (the receiver refuses it when nothing
#: here serves it) or cast (the receiver also confirms that it took it).
AT_LEAST_ONCE_CALL = 1
AT_LEAST_ONCE_CAST = 2

KINDS = frozenset({"rpc", "fan", "note"})
#: Pools one notification may name (each becomes a copy on the receiving host).
MAX_POOLS = 256

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_IPC_PATH = 107
_HASHED = 16

Header = dict[str, Any]


class InvalidFrame(ValueError):
    """Frames that do not follow the wire format."""


def validate_name(name: str, what: str) -> str:
    """Return ``name`` if it is safe as a path component of the IPC directory.

    Topic and exchange names become file names: ``/``, NUL, ``.`` and ``..``
    could name something outside the directory, so they are refused with
    :class:`polymsg.InvalidTarget`.
    """
    if not isinstance(name, str) or not name:
        raise InvalidTarget(f"zmq: {what} must be a non-empty string, got {name!r}")
    if "/" in name or "\0" in name or name in (".", ".."):
        raise InvalidTarget(
            f"zmq: {what} {name!r} cannot be used: names with '/' or NUL, and '.' or '..', "
            "would reach outside the receiver's IPC directory")
    return name


def _hashed(name: str) -> str:
    return "#" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASHED]


def ipc_path(ipc_dir: str, exchange: str, topic: str) -> str:
    """The IPC socket path of ``exchange``/``topic`` (names hashed if the path is too long)."""
    validate_name(exchange, "exchange")
    validate_name(topic, "topic")
    base = os.path.join(ipc_dir, "t")
    exch = _hashed(exchange) if exchange.startswith("#") else exchange
    top = _hashed(topic) if topic.startswith("#") else topic
    for candidate in ((exch, top), (exch, _hashed(topic)), (_hashed(exchange), _hashed(topic))):
        path = os.path.join(base, *candidate)
        if len(path.encode("utf-8")) <= _MAX_IPC_PATH:
            return path
    raise InvalidTarget(f"zmq: ipc_dir {ipc_dir!r} is too long for IPC socket paths "
                        f"(at most {_MAX_IPC_PATH} bytes); configure a shorter one")


def ipc_endpoint(path: str) -> str:
    """``ipc://`` endpoint of ``path``."""
    return f"ipc://{path}"


def prepare_dir(path: str) -> None:
    """Create ``path`` (and parents) with mode 0700, or tighten one we own.

    Refuses a directory owned by another user: its sockets could be
    replaced by that user.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise PermissionError(f"zmq: IPC directory {path!r} belongs to another user "
                              f"(uid {info.st_uid})")
    if info.st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


def fanout_prefix(exchange: str, topic: str) -> bytes:
    """The PUB/SUB subscription prefix of a topic's fanout."""
    return f"{exchange}\0{topic}\0".encode()


def encode_header(header: Header) -> bytes:
    """JSON-encode a routing header."""
    return dumps(header)


def decode_header(data: bytes) -> Header:
    """Parse and check a routing header; raise :class:`InvalidFrame` when it is wrong."""
    try:
        header = loads(data)
    except SerializationError as exc:
        raise InvalidFrame(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidFrame("header is not a JSON object")
    kind = header.get("k")
    if kind not in KINDS:
        raise InvalidFrame(f"unknown kind {kind!r}")
    for key in ("x", "t"):
        value = header.get(key)
        try:
            validate_name(value, key)  # type: ignore[arg-type]  # checked inside
        except InvalidTarget as exc:
            raise InvalidFrame(str(exc)) from None
    for key in ("ttl", "q", "cm"):
        value = header.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise InvalidFrame(f"{key} must be a non-negative number")
    server = header.get("s")
    if server is not None and not isinstance(server, str):
        raise InvalidFrame("server must be a string")
    confirm = header.get("a")
    if confirm is not None and (kind != "rpc" or confirm not in (AT_LEAST_ONCE_CALL,
                                                                  AT_LEAST_ONCE_CAST)
                                or isinstance(confirm, bool)):
        raise InvalidFrame("a must be 1 (at-least-once call) or 2 (cast) on an RPC message")
    if kind == "note":
        if not isinstance(header.get("p"), str):
            raise InvalidFrame("a notification needs a priority")
        pools = header.get("pools")
        if pools is not None and not (isinstance(pools, list) and len(pools) <= MAX_POOLS
                                      and all(isinstance(p, str) for p in pools)):
            raise InvalidFrame(f"pools must be a list of at most {MAX_POOLS} strings")
    return header


_LENGTH = struct.Struct("!I")


def pack(body: bytes) -> bytes:
    """One body as a packed frame (concatenated packed frames are a packed batch)."""
    return _LENGTH.pack(len(body)) + body


def _offsets(frame: bytes) -> list[int]:
    """Where each body of a packed frame starts (its length prefix); InvalidFrame if bad."""
    starts, pos, end = [], 0, len(frame)
    while pos < end:
        if pos + 4 > end:
            raise InvalidFrame("truncated length prefix in a packed frame")
        starts.append(pos)
        pos += 4 + _LENGTH.unpack_from(frame, pos)[0]
    if pos != end or not starts:
        raise InvalidFrame("packed frame lengths do not add up")
    return starts


def count_packed(frame: bytes) -> int:
    """How many bodies a packed frame holds (1 for a malformed one)."""
    try:
        return len(_offsets(frame))
    except InvalidFrame:
        return 1


def unpack(frame: bytes) -> list[bytes]:
    """The bodies of a packed frame; :class:`InvalidFrame` when it is malformed."""
    starts = _offsets(frame)
    return [frame[s + 4:e] for s, e in itertools.pairwise([*starts, len(frame)])]


def deal_packed(frame: bytes, hands: int) -> list[list[bytes]]:
    """Deal the bodies of a packed batch into ``hands`` hands, one body at a time:
    hand ``j`` gets bodies ``j``, ``j + hands``, ... (each body with its length
    prefix, in order). :class:`InvalidFrame` when the batch is malformed."""
    starts = _offsets(frame)
    dealt: list[list[bytes]] = [[] for _ in range(min(hands, len(starts)))]
    for index, (start, end) in enumerate(itertools.pairwise([*starts, len(frame)])):
        dealt[index % len(dealt)].append(frame[start:end])
    return dealt


_DEADLINE = struct.Struct("!d")
_LOGGED_IDS = 20


def message_ids(kind: str, packed: bytes, limit: int | None = None) -> list[str]:
    """The message ids in a packed batch (for log lines; the first 20 unless ``limit``
    says otherwise, ``0`` for all); garbage yields ``"?"``."""
    try:
        bodies = unpack(packed)
    except InvalidFrame:
        return ["?"]
    ids = []
    limit = _LOGGED_IDS if limit is None else limit or len(bodies)
    if len(bodies) > limit:
        ids.append(f"(the first {limit} of {len(bodies)})")
    for body in bodies[:limit]:
        try:
            data = loads(body)
            ids.append(str(data["i"] if kind != "note" else data["m"]["message_id"])[:64])
        except Exception:
            ids.append("?")
    return ids


def encode_deadline(deadline: float | None) -> bytes:
    """A monotonic deadline as a frame (empty when none)."""
    return b"" if deadline is None else _DEADLINE.pack(deadline)


def decode_deadline(frame: bytes) -> float | None:
    """The inverse of :func:`encode_deadline`; :class:`InvalidFrame` on bad input."""
    if not frame:
        return None
    if len(frame) != _DEADLINE.size:
        raise InvalidFrame("bad deadline frame")
    value: float = _DEADLINE.unpack(frame)[0]
    return value
