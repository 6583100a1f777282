"""Target (where a message goes, or what a server listens to) and the facade's checks of
names, timeouts and contexts, the same for every transport."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polymsg._exceptions import InvalidTarget, SerializationError

__all__ = [
    "MAX_NAME_BYTES", "Target", "check_context", "check_name", "check_notification_size",
    "check_routing_size", "check_timeout", "check_ttl", "parse_version", "version_is_compatible",
]

_VERSION = re.compile(r"^\d+\.\d+$")

#: The longest name, in bytes of UTF-8: AMQP carries names as short strings.
MAX_NAME_BYTES = 255
#: Characters that are routing syntax on some transport, and why.
_SYNTAX = {
    "#": "an AMQP wildcard (matches any words) and the zmq driver's hashed-name marker",
    "*": "an AMQP wildcard (matches one word) and the zmq ring file's catch-all key",
    "/": "a path and key separator (zmq IPC paths, matchmaker keys, scoped queue names)",
    "\\": "a path separator on Windows",
}
#: Fields that name an AMQP queue or exchange by themselves (``amq.`` is reserved there).
_QUEUE_NAMES = frozenset({"topic", "exchange", "pool"})
#: Bytes a server's fanout queue adds to its topic: ``_fanout_`` and 32 hex digits.
_FANOUT_SUFFIX = 40
#: Bytes a notification's routing key adds to its topic: ``.`` and the longest priority.
_PRIORITY_SUFFIX = 1 + len("critical")


@dataclass(frozen=True)
class Target:
    """Names a destination (for clients) or a subscription (for servers).

    A sender needs ``topic``; ``server`` pins one server of the topic and
    ``fanout=True`` reaches every server of it (casts only). A server needs
    ``topic`` and ``server``. ``exchange`` isolates (``None`` means the
    configured ``control_exchange``); ``namespace`` and ``version``
    (``"MAJOR.MINOR"``) select endpoints.

    ``topic``, ``server`` and ``exchange`` are checked at once, the same way
    for every transport (the security page has the rules): at most 255 bytes,
    no ``#``, ``*``, ``/``, ``\\``, whitespace or control characters;
    anything else raises :class:`~polymsg.InvalidTarget` naming the field
    and the character.
    """

    topic: str | None = None
    server: str | None = None
    exchange: str | None = None
    namespace: str | None = None
    version: str | None = None
    fanout: bool = False

    def __post_init__(self) -> None:
        for name in ("topic", "server", "exchange"):
            value = getattr(self, name)
            if value is not None:
                check_name(name, value)
        if self.namespace is not None and (not isinstance(self.namespace, str)
                                           or not self.namespace):
            raise InvalidTarget(f"Target namespace must be a non-empty string, "
                                f"got {self.namespace!r}")
        if self.version is not None:
            parse_version(self.version)
        if not isinstance(self.fanout, bool):
            raise InvalidTarget(f"Target fanout must be a bool, got {self.fanout!r}")

    def replace(self, **changes: Any) -> Target:
        """A copy with ``changes`` applied."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise InvalidTarget(f"invalid Target field: {exc}") from exc


def parse_version(version: str) -> tuple[int, int]:
    """``"1.3"`` -> ``(1, 3)``; anything else raises :class:`InvalidTarget`."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidTarget(f"version must look like 'MAJOR.MINOR', got {version!r}")
    major, minor = version.split(".")
    return int(major), int(minor)


def version_is_compatible(available: str, wanted: str) -> bool:
    """True when ``available`` can serve ``wanted``: same major, minor at least as high."""
    have, want = parse_version(available), parse_version(wanted)
    return have[0] == want[0] and have[1] >= want[1]


def check_ttl(name: str, value: float | None) -> float | None:
    """Validate a TTL hint: ``None`` or a positive number of seconds (as float)."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def check_name(field: str, value: object) -> str:
    """Validate a routing name (topic, server, exchange, pool, publisher id).

    The same rules hold on every transport: a non-empty string of at most
    :data:`MAX_NAME_BYTES` bytes of UTF-8, without ``#``, ``*``, ``/`` or
    ``\\``, whitespace or control characters, and not ``.`` or ``..``; a
    topic, exchange or pool does not start with ``amq.`` (reserved by RabbitMQ).
    Dots, dashes, ``@`` and ``:`` are fine (``compute``, ``host.example.com``,
    ``host@backend``). Raises :class:`InvalidTarget` naming the field and the
    character.
    """
    if not isinstance(value, str) or not value:
        raise InvalidTarget(f"Target {field} must be a non-empty string, got {value!r}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise InvalidTarget(f"{field} {_shorten(value)} is too long: {size} bytes of UTF-8; "
                            f"names are at most {MAX_NAME_BYTES} (an AMQP short string)")
    for index, char in enumerate(value):
        reason = _SYNTAX.get(char)
        if reason is None and (char.isspace() or not char.isprintable()):
            reason = "whitespace or an unprintable (control or format) character"
        if reason is not None:
            raise InvalidTarget(f"{field} {_shorten(value)} contains {char!r} at position "
                                f"{index}: {reason}, so it cannot be part of a name")
    if field in _QUEUE_NAMES and value.startswith("amq."):
        raise InvalidTarget(f"{field} {_shorten(value)} starts with 'amq.', which RabbitMQ "
                            "reserves for its own queues and exchanges")
    if value in (".", ".."):
        raise InvalidTarget(f"{field} cannot be {value!r}: it names a directory on the zmq "
                            "transport")
    return value


def check_routing_size(target: Target, default_exchange: str) -> None:
    """Refuse an RPC target whose longest derived queue name exceeds 255 bytes.

    A server of ``topic`` consumes ``<topic>.<server>`` and
    ``<topic>_fanout_<32 hex digits>``; on an exchange other than the
    configured one both get the prefix ``<exchange>/``. Checking this in the
    facade keeps a name that works on one transport working on all.
    """
    if target.topic is None:
        return
    size = len(target.topic.encode("utf-8"))
    if target.exchange is not None and target.exchange != default_exchange:
        size += len(target.exchange.encode("utf-8")) + 1
    server = 1 + len(target.server.encode("utf-8")) if target.server else 0
    size += max(server, _FANOUT_SUFFIX)
    if size > MAX_NAME_BYTES:
        raise InvalidTarget(
            f"target {target} is too long: it makes a queue name of {size} bytes; the longest "
            f"name a target "
            f"derives ([exchange/]topic.server, or topic plus {_FANOUT_SUFFIX} bytes of fanout "
            f"queue suffix) must fit in {MAX_NAME_BYTES} bytes")


def check_notification_size(topic: str) -> None:
    """Refuse a notification topic whose routing key (``<topic>.<priority>``,
    at most 9 bytes longer) would exceed 255 bytes."""
    size = len(topic.encode("utf-8")) + _PRIORITY_SUFFIX
    if size > MAX_NAME_BYTES:
        raise InvalidTarget(
            f"notification topic {_shorten(topic)} is too long: its routing key "
            f"<topic>.<priority> takes up to {size} bytes, more than {MAX_NAME_BYTES}")


def check_timeout(name: str, value: object) -> float | None:
    """Validate a timeout: ``None`` or a finite number of seconds, not negative."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be None or a finite, non-negative number of seconds, "
                         f"got {value!r}")
    return value


def check_context(ctxt: object) -> dict[str, Any]:
    """The context as the serializer made it must be a dict with string keys
    (what every transport carries); anything else is a :class:`SerializationError`."""
    if not isinstance(ctxt, Mapping):
        raise SerializationError(f"the context must be a dict (after the serializer), "
                                 f"not {type(ctxt).__name__}")
    ctxt = dict(ctxt)
    for key in ctxt:
        if not isinstance(key, str):
            raise SerializationError(f"context keys must be strings, got {key!r}")
    return ctxt


def _shorten(value: str, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile name may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} characters)"
