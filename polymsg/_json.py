"""JSON encoding shared by the facade and every driver (orjson: strict and fast)."""

from __future__ import annotations

from typing import Any

import orjson

from polymsg._exceptions import SerializationError

__all__ = ["dumps", "dumps_str", "loads"]

# Strict: str keys only, and no silent conversion of datetimes or dataclasses
# (orjson would otherwise encode them; the stdlib json module would refuse).
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> bytes:
    """Encode ``value`` as JSON bytes; non-JSON types raise :class:`SerializationError`.

    Only JSON types are accepted: dict (str keys), list, tuple, str, int
    (64-bit), float, bool and None. Nothing is converted behind the caller's
    back (no ``default=str``), so what arrives is what was sent.
    """
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from exc


def dumps_str(value: Any) -> str:
    """Like :func:`dumps` but returns ``str``."""
    return dumps(value).decode("utf-8")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON; invalid input raises :class:`SerializationError`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"invalid JSON: {exc}") from exc
