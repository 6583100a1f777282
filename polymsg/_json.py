"""JSON encoding shared by the facade and every driver (orjson: strict and fast).

Two steps, as on oslo.messaging's wire:

* :func:`to_primitive` turns what users send (arguments, results, payloads,
  contexts) into JSON types, converting the types oslo.messaging converts
  (datetimes, UUIDs, sets, ...) to the same text oslo.messaging sends. The
  facade applies it, so every transport sends the same thing. A value it
  cannot convert raises :class:`~polymsg.SerializationError` naming where the
  value sits (``args.instance.created_at``) and its type.
* :func:`dumps` encodes JSON types; it converts nothing.

NaN and infinities are refused by :func:`to_primitive` (JSON has no such
numbers; orjson would send ``null`` and Python's json module a non-standard
``NaN`` token). :func:`loads` still reads the ``NaN``/``Infinity`` tokens an
oslo.messaging peer may send.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import io
import ipaddress
import itertools
import json
import math
import sys
import uuid
import xmlrpc.client
from collections.abc import Callable
from typing import Any

import orjson

from polymsg._exceptions import SerializationError

__all__ = ["DATETIME_FORMAT", "dumps", "dumps_str", "loads", "to_primitive"]

# Strict: str keys only, and no silent conversion of datetimes or dataclasses
# (orjson would otherwise encode them; the stdlib json module would refuse).
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

#: How a datetime is sent: oslo.messaging's format (microseconds always present,
#: no offset). Aware datetimes are converted to UTC first.
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_DATE_FORMAT = "%Y-%m-%d"

#: Nesting beyond this is refused (a structure that contains itself never ends).
_MAX_NESTING = 200

_PLAIN = (str, int, bool, type(None))
_AS_TEXT = (uuid.UUID, decimal.Decimal, ipaddress.IPv4Address, ipaddress.IPv6Address)
_NOT_DATA: tuple[Callable[[Any], bool], ...] = (
    inspect.ismodule, inspect.isclass, inspect.isroutine, inspect.isgenerator,
    inspect.isgeneratorfunction, inspect.istraceback, inspect.isframe, inspect.iscode,
    inspect.isabstract, inspect.isawaitable, inspect.isasyncgen,
)


def to_primitive(value: Any, path: str = "value", *, convert_instances: bool = False) -> Any:
    """``value`` as JSON types, converted the way oslo.messaging converts it.

    * ``datetime`` -> ``"2026-01-01T12:00:00.000000"`` (UTC when aware),
      ``date`` -> ``"2026-01-01"``;
    * ``UUID``, ``Decimal``, IP addresses (``ipaddress``, and ``netaddr`` when
      it is in use) -> their text; ``bytes`` -> UTF-8 text; an exception ->
      its ``repr``;
    * tuples, sets and other iterables -> lists; mappings -> dicts; dict keys
      of type int, float, bool or None -> their JSON text;
    * with ``convert_instances``, other objects -> their ``__dict__``
      (what oslo.messaging's JSON payload serializer does).

    Anything else, NaN and infinities raise :class:`~polymsg.SerializationError`
    naming ``path`` (the location of the bad value, e.g. ``args.when``) and
    its type. Values already JSON types are returned as they are (no copy).
    """
    try:
        return _convert(value, 0, convert_instances)
    except _Refused as exc:
        where = _short(path + "".join(reversed(exc.where)))
        raise SerializationError(f"cannot send {where}: {exc.reason}") from None


class _Refused(Exception):
    """A value that cannot be sent; ``where`` collects the path, innermost first."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []


def _convert(value: Any, depth: int, instances: bool) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise _Refused(f"{value!r} is not a JSON number (NaN and infinities have no JSON "
                       "form; send None or a string instead)")
    if depth > _MAX_NESTING:
        raise _Refused(f"nested more than {_MAX_NESTING} levels deep (does it contain itself?)")
    if kind is dict:
        return _convert_dict(value, depth, instances) if value else value
    if kind is list or kind is tuple:
        return _convert_list(value, depth, instances) if value else value
    return _convert_other(value, depth, instances)


def _convert_dict(value: dict[Any, Any], depth: int, instances: bool) -> Any:
    out: dict[str, Any] | None = None
    key: Any = None
    try:
        for index, (key, item) in enumerate(value.items()):
            text = key if type(key) is str else _key(key)
            converted = _convert(item, depth + 1, instances)
            if out is None and (converted is not item or text is not key):
                out = dict(itertools.islice(value.items(), index))
            if out is not None:
                out[text] = converted
    except _Refused as exc:
        exc.where.append(f".{key}")
        raise
    return value if out is None else out


def _convert_list(value: list[Any] | tuple[Any, ...], depth: int, instances: bool) -> Any:
    out: list[Any] | None = None
    index = 0
    try:
        for index, item in enumerate(value):
            converted = _convert(item, depth + 1, instances)
            if out is None and converted is not item:
                out = list(value[:index])
            if out is not None:
                out.append(converted)
    except _Refused as exc:
        exc.where.append(f"[{index}]")
        raise
    return value if out is None else out


def _key(key: Any) -> str:
    """A dict key as JSON text: JSON's rules for numbers, booleans and None."""
    if isinstance(key, str):
        return str(key)
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        return repr(_convert(float(key), 0, False))
    text = _convert_other(key, 0, False)
    if not isinstance(text, str):
        raise _Refused(f"a dict key of type {_type_name(key)} is not a string")
    return text


def _convert_other(value: Any, depth: int, instances: bool) -> Any:
    if isinstance(value, _PLAIN):  # subclasses: enums, ...
        return value
    if isinstance(value, float):
        return _convert(float(value), depth, instances)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("bytes that are not UTF-8 text; encode them (e.g. base64) "
                           "first") from None
    if isinstance(value, xmlrpc.client.DateTime):
        value = datetime.datetime(*value.timetuple()[:6])
    if isinstance(value, datetime.datetime):
        if value.utcoffset() is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime(DATETIME_FORMAT)
    if isinstance(value, datetime.date):
        return value.strftime(_DATE_FORMAT)
    if isinstance(value, _AS_TEXT) or _is_netaddr(value):
        return str(value)
    if isinstance(value, BaseException):
        return repr(value)
    if type(value) is itertools.count or any(test(value) for test in _NOT_DATA):
        raise _cannot(value)
    items = getattr(value, "items", None)
    if items is not None and callable(items):
        try:
            mapping = dict(items())
        except (TypeError, ValueError):
            raise _cannot(value) from None
        return _convert_dict(mapping, depth, instances)
    if hasattr(value, "__iter__") and not isinstance(value, io.IOBase):
        try:
            elements = list(value)
        except TypeError:
            raise _cannot(value) from None
        return _convert_list(elements, depth, instances)
    if instances and hasattr(value, "__dict__"):
        return _convert_dict(dict(vars(value)), depth, instances)
    raise _cannot(value)


def _is_netaddr(value: Any) -> bool:
    netaddr = sys.modules.get("netaddr")  # only when the caller uses it: never imported here
    if netaddr is None:
        return False
    classes = tuple(getattr(netaddr, name) for name in ("IPAddress", "IPNetwork", "IPRange")
                    if hasattr(netaddr, name))
    return isinstance(value, classes)


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def _short(path: str) -> str:
    return path if len(path) <= 200 else f"{path[:100]}...{path[-60:]}"


def _cannot(value: Any) -> _Refused:
    return _Refused(
        f"type {_type_name(value)} is not JSON-serializable; convert it to JSON types "
        "(dict, list, str, int, float, bool, None) first, or pass a "
        "polymsg.Serializer that does")


def dumps(value: Any) -> bytes:
    """Encode ``value`` as JSON bytes; non-JSON types raise :class:`SerializationError`.

    Only JSON types are accepted: dict (str keys), list, tuple, str, int
    (64-bit), float, bool and None. Nothing is converted behind the caller's
    back (the facade converts with :func:`to_primitive` before a driver
    encodes), so what arrives is what was sent.
    """
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        raise _locate(value, exc) from exc


def _locate(value: Any, exc: TypeError) -> SerializationError:
    """The error for a value orjson refused, naming where the bad part is when
    :func:`to_primitive` can find it."""
    try:
        to_primitive(value)
    except SerializationError as located:
        return located
    return SerializationError(f"value is not JSON-serializable: {exc}")


def dumps_str(value: Any) -> str:
    """Like :func:`dumps` but returns ``str``."""
    return dumps(value).decode("utf-8")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON; invalid input raises :class:`SerializationError`.

    The ``NaN``, ``Infinity`` and ``-Infinity`` tokens Python's json module
    writes (oslo.messaging peers send them) are read as floats.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        fallback = _loads_non_finite(data)
        if fallback is not _INVALID:
            return fallback
        raise SerializationError(f"invalid JSON: {exc}") from exc


_INVALID: Any = object()


def _loads_non_finite(data: bytes | bytearray | memoryview | str) -> Any:
    raw = data if isinstance(data, str) else bytes(data)
    probe = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    if "NaN" not in probe and "Infinity" not in probe:
        return _INVALID
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _INVALID
