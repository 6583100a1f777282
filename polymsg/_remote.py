"""Exceptions across the wire, as data: never pickled, never imported on the wire's say-so."""

from __future__ import annotations

import builtins
import logging
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from polymsg import _json
from polymsg._exceptions import RemoteError, SerializationError

__all__ = ["exception_from_failure", "failure_from_exception"]

LOG = logging.getLogger(__name__)

_REMOTE_SUFFIX = "_Remote"


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
                           allowed_modules: Iterable[str]) -> BaseException:
    """Rebuild the remote exception, or a :class:`RemoteError` when its class is not allowed.

    A class is rebuilt only when its module is ``builtins``, ``polymsg`` (or a
    submodule) or one of ``allowed_modules``, and it is already imported or
    importable from an allowed module. Its ``str()`` equals the remote
    message and ``remote_traceback`` holds the remote traceback text.
    """
    name = str(failure.get("class", "Exception"))
    module = str(failure.get("module", ""))
    message = str(failure.get("message", ""))
    tb = failure.get("tb") or []
    tb_text = "".join(tb) if isinstance(tb, list) else str(tb)
    cls = _allowed_class(module, name, allowed_modules)
    if cls is None:
        return RemoteError(name, message, tb_text)
    exc = _instantiate(cls, failure.get("args") or [], failure.get("kwargs") or {}, message)
    try:
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
    except AttributeError:  # a class with __slots__: wrap, so the traceback is not lost
        exc = _with_message(cls, exc, message)
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
    return exc


def _allowed_class(module: str, name: str,
                   allowed_modules: Iterable[str]) -> type[BaseException] | None:
    if module in ("builtins", "exceptions"):
        candidate = getattr(builtins, name, None)
    elif module == "polymsg" or module.startswith("polymsg.") or module in allowed_modules:
        candidate = _import_attr(module, name)
    else:
        return None
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        return candidate
    return None


def _import_attr(module: str, name: str) -> Any:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:
            LOG.debug("allowed remote exception module %s is not importable", module)
            return None
    return getattr(mod, name, None)


def _instantiate(cls: type[BaseException], args: Any, kwargs: Any,
                 message: str) -> BaseException:
    exc: BaseException
    try:
        exc = cls(*args, **kwargs) if isinstance(kwargs, dict) else cls(*args)
    except Exception:
        exc = cls.__new__(cls)
        exc.args = (message,)
    if str(exc) != message:
        exc = _with_message(cls, exc, message)
    return exc


def _with_message(cls: type[BaseException], exc: BaseException, message: str) -> BaseException:
    """An instance of a subclass of ``cls`` whose ``str()`` is the remote message."""
    remote_cls: type[BaseException] = type(cls.__name__ + _REMOTE_SUFFIX, (cls,), {
        "__str__": lambda self: message,
        "__module__": cls.__module__,
    })
    new: BaseException = remote_cls.__new__(remote_cls)
    new.args = exc.args
    new.__dict__.update(getattr(exc, "__dict__", {}))
    return new
