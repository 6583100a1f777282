"""Exceptions across the wire, as data: never pickled, never imported on the wire's say-so."""

from __future__ import annotations

import builtins
import importlib
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from polymsg import _exceptions, _json
from polymsg._exceptions import RemoteError, SerializationError

__all__ = ["allowed_class", "exception_from_failure", "failure_from_exception"]

LOG = logging.getLogger(__name__)

_REMOTE_SUFFIX = "_Remote"
_UNIMPORTABLE: set[str] = set()
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def failure_from_exception(exc: BaseException) -> dict[str, Any]:
    """Describe ``exc`` as a JSON-able failure dict (class, module, message, tb, args, kwargs)."""
    cls = type(exc)
    name, module = cls.__name__, cls.__module__
    if name.endswith(_REMOTE_SUFFIX):  # a re-raised remote error travels under its real name
        name = name[: -len(_REMOTE_SUFFIX)]
    tb = traceback.format_exception(cls, exc, exc.__traceback__)
    return {
        "class": name,
        "module": module,
        "message": str(exc),
        "tb": tb,
        "args": _jsonable(list(exc.args)),
        "kwargs": _jsonable(getattr(exc, "kwargs", {})) or {},
    }


def _jsonable(value: Any) -> Any:
    try:
        _json.dumps(value)
    except SerializationError:
        return [str(v) for v in value] if isinstance(value, list) else {}
    return value


def exception_from_failure(failure: Mapping[str, Any],
                           allowed_modules: Iterable[str]) -> Exception:
    """Rebuild the remote exception, or a :class:`RemoteError` when its class is not allowed.

    The class is looked up in an explicit table, never imported because the
    wire named it: polymsg's exception classes (module ``polymsg`` or
    ``polymsg._exceptions``), the exception classes of ``builtins``, and the
    classes of a module listed in ``allowed_modules`` (taken from
    ``sys.modules``, or imported because the caller listed it). Only
    subclasses of :class:`Exception` qualify: ``SystemExit``,
    ``KeyboardInterrupt`` and other ``BaseException`` classes always arrive
    as :class:`RemoteError`. The rebuilt exception's ``str()`` equals the
    remote message and ``remote_traceback`` holds the remote traceback text.
    """
    name = str(failure.get("class", "Exception"))
    module = str(failure.get("module", ""))
    message = str(failure.get("message", ""))
    tb = failure.get("tb") or []
    tb_text = "".join(str(line) for line in tb) if isinstance(tb, list) else str(tb)
    cls = allowed_class(module, name, allowed_modules)
    if cls is None:
        return RemoteError(name, message, tb_text)
    try:
        return _rebuild(cls, failure.get("args"), failure.get("kwargs"), message, tb_text)
    except Exception as exc:  # a class that cannot be rebuilt from these args
        LOG.debug("cannot rebuild remote %s.%s: %s", module, name, exc)
        return RemoteError(name, message, tb_text)


def _rebuild(cls: type[Exception], args: Any, kwargs: Any, message: str,
             tb_text: str) -> Exception:
    exc = _instantiate(cls, args if isinstance(args, list) else [],
                       kwargs if isinstance(kwargs, dict) else {}, message)
    try:
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
    except AttributeError:  # a class with __slots__: wrap, so the traceback is not lost
        exc = _with_message(cls, exc, message)
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
    return exc


def _exception_table(namespace: Mapping[str, Any]) -> dict[str, type[Exception]]:
    return {name: value for name, value in namespace.items()
            if isinstance(value, type) and issubclass(value, Exception)}


#: module name on the wire -> the classes a reply may name in it.
_TABLE: dict[str, dict[str, type[Exception]]] = {
    "builtins": _exception_table(vars(builtins)),
    "exceptions": _exception_table(vars(builtins)),  # what Python 2 services send
    "polymsg": _exception_table(vars(_exceptions)),
    _exceptions.__name__: _exception_table(vars(_exceptions)),
}


def allowed_class(module: str, name: str,
                  allowed_modules: Iterable[str]) -> type[Exception] | None:
    """The exception class ``module.name`` a reply may be rebuilt as, or ``None``.

    Nothing is imported unless ``module`` is one of ``allowed_modules``.
    """
    table = _TABLE.get(module)
    if table is not None:
        return table.get(name)
    if module not in allowed_modules or not _IDENTIFIER.match(name):
        return None
    candidate = getattr(_allowed_module(module), name, None)
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        return candidate
    return None


def _allowed_module(module: str) -> Any:
    """A module the caller listed in ``allowed_remote_exmods``: imported at
    most because the caller named it, never because a reply did."""
    mod = sys.modules.get(module)
    if mod is not None:
        return mod
    try:
        return importlib.import_module(module)
    except Exception as exc:  # a listed module that cannot be imported: RemoteError
        if module not in _UNIMPORTABLE:  # once: replies naming it must not flood the log
            _UNIMPORTABLE.add(module)
            LOG.warning("allowed remote exception module %s cannot be imported: %s",
                        module, exc)
        return None


def _instantiate(cls: type[Exception], args: list[Any], kwargs: dict[str, Any],
                 message: str) -> Exception:
    exc: Exception
    try:
        exc = cls(*args, **kwargs)
    except Exception:
        exc = cls.__new__(cls)
        exc.args = (message,)
    if str(exc) != message:
        exc = _with_message(cls, exc, message)
    return exc


def _with_message(cls: type[Exception], exc: Exception, message: str) -> Exception:
    """An instance of a subclass of ``cls`` whose ``str()`` is the remote message."""
    remote_cls: type[Exception] = type(cls.__name__ + _REMOTE_SUFFIX, (cls,), {
        "__str__": lambda self: message,
        "__module__": cls.__module__,
    })
    new: Exception = remote_cls.__new__(remote_cls)
    new.args = exc.args
    new.__dict__.update(getattr(exc, "__dict__", {}))
    return new
