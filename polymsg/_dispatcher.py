"""RPC dispatch: from a request dict to the endpoint method that serves it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from polymsg._exceptions import InvalidTarget, NoSuchMethod, UnsupportedVersion
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import Target, parse_version

__all__ = ["RPCDispatcher", "expected_exceptions"]

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULT_VERSION = (1, 0)


def expected_exceptions(*exceptions: type[BaseException]) -> Callable[[F], F]:
    """Mark ``exceptions`` as expected from an endpoint method.

    They still reach the caller; the server just does not log them with a
    traceback, because they are part of the method's contract.
    """
    def decorate(func: F) -> F:
        func.__polymsg_expected__ = tuple(exceptions)  # type: ignore[attr-defined]
        return func
    return decorate


def is_expected(method: Callable[..., Any], exc: BaseException) -> bool:
    """True when ``method`` declared ``exc``'s class with :func:`expected_exceptions`."""
    expected = getattr(method, "__polymsg_expected__", ())
    return isinstance(exc, expected) if expected else False


class EndpointTargetError(InvalidTarget, TypeError):
    """An endpoint's ``target`` attribute is not a Target: an InvalidTarget, and a
    TypeError as oslo.messaging raises there."""


class _Endpoint:
    __slots__ = ("namespace", "obj", "version")

    def __init__(self, obj: Any) -> None:
        target = getattr(obj, "target", None)
        if target is not None and not isinstance(target, Target):
            raise EndpointTargetError(
                f"endpoint {obj!r} has a 'target' that is not a polymsg.Target: {target!r}")
        self.obj = obj
        self.namespace = target.namespace if target is not None else None
        version = target.version if target is not None else None
        self.version = parse_version(version) if version else _DEFAULT_VERSION


#: Resolved (method, namespace, version) requests kept by a dispatcher; past that,
#: the cache starts over (keys come from the wire).
_CACHE_SIZE = 1024


class RPCDispatcher:
    """Finds the endpoint method for a request and runs it."""

    def __init__(self, endpoints: Sequence[Any], serializer: Serializer) -> None:
        self._endpoints = [_Endpoint(e) for e in endpoints]
        self._serializer = serializer
        # The default serializer changes nothing: skip its calls per argument.
        self._no_op = type(serializer) is NoOpSerializer
        # Which endpoint serves a request; its method is still looked up on every call,
        # so an endpoint whose attributes change is called as it is now.
        self._served_by: dict[tuple[Any, Any, Any], Any] = {}

    def find(self, method: str, namespace: str | None, version: str | None
             ) -> Callable[..., Any]:
        """The bound method serving ``method``, or NoSuchMethod / UnsupportedVersion."""
        try:
            obj = self._served_by.get((method, namespace, version))
        except TypeError:  # unhashable junk from the wire: _resolve says what is wrong
            obj = None
        if obj is not None:
            func = getattr(obj, method, None)
            if func is not None and callable(func):
                return func  # type: ignore[no-any-return]
        return self._resolve(method, namespace, version)

    def _resolve(self, method: str, namespace: str | None, version: str | None
                 ) -> Callable[..., Any]:
        if not isinstance(method, str) or not method or method.startswith("_"):
            raise NoSuchMethod(f"Endpoint does not support RPC method {method!r}")
        try:
            wanted = parse_version(version) if version else _DEFAULT_VERSION
        except InvalidTarget:
            raise UnsupportedVersion(f"Endpoint does not support RPC version {version!r}") from None
        compatible = False
        for endpoint in self._endpoints:
            if endpoint.namespace != namespace:
                continue
            major, minor = endpoint.version
            if major != wanted[0] or minor < wanted[1]:
                continue
            compatible = True
            func = getattr(endpoint.obj, method, None)
            if func is not None and callable(func):
                if len(self._served_by) >= _CACHE_SIZE:
                    self._served_by.clear()
                self._served_by[(method, namespace, version)] = endpoint.obj
                return func  # type: ignore[no-any-return]
        if compatible:
            raise NoSuchMethod(f"Endpoint does not support RPC method {method!r}")
        raise UnsupportedVersion(
            f"Endpoint does not support RPC version {version or '1.0'}"
            + (f" in namespace {namespace!r}" if namespace else "")
        )

    def invoke(self, func: Callable[..., Any], ctxt: dict[str, Any],
               message: dict[str, Any]) -> Any:
        """Run ``func`` for the request; returns the serialized result and raises
        whatever the method raises."""
        if self._no_op:
            return func(ctxt, **_args(message))
        user_ctxt, kwargs = self.arguments(ctxt, message)
        return self.result(user_ctxt, func(user_ctxt, **kwargs))

    def arguments(self, ctxt: dict[str, Any], message: dict[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The context and keyword arguments a method is called with (deserialized)."""
        if self._no_op:
            return ctxt, _args(message)
        serializer = self._serializer
        user_ctxt = serializer.deserialize_context(ctxt)
        return user_ctxt, {k: serializer.deserialize_entity(user_ctxt, v)
                           for k, v in _args(message).items()}

    def result(self, user_ctxt: dict[str, Any], value: Any) -> Any:
        """A method's return value, serialized for the reply."""
        return value if self._no_op else self._serializer.serialize_entity(user_ctxt, value)


def _args(message: dict[str, Any]) -> dict[str, Any]:
    args = message.get("args") or {}
    if not isinstance(args, dict):
        raise TypeError(f"RPC arguments must be a JSON object, got {type(args).__name__}")
    return args
