"""Endpoints, recorders and serializers the conformance tests run against.

Everything here is thread-safe: endpoint methods run on server threads
while the test thread waits on a :class:`Recorder`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

import polymsg
from polymsg.testing._remote_errors import ConformanceError, UnlistedError

__all__ = [
    "NOTIFICATION_PRIORITIES",
    "AlwaysRequeueEndpoint",
    "Invocation",
    "Notification",
    "NotificationEndpoint",
    "Point",
    "PointSerializer",
    "RPCEndpoint",
    "Recorder",
    "RequeueOnceEndpoint",
    "expect_timeout",
    "is_iso8601",
]

#: The endpoint method names of the notification priorities
#: (``Notifier.warning`` is delivered to ``warn``).
NOTIFICATION_PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")

_ISO8601 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
)


def is_iso8601(text: object) -> bool:
    """True when ``text`` is an ISO 8601 date and time string."""
    return isinstance(text, str) and bool(_ISO8601.match(text))


def expect_timeout(client: polymsg.RPCClient, timeout: float, margin: float,
                   method: str = "whoami", **kwargs: Any) -> float:
    """Call ``method`` expecting :class:`polymsg.MessagingTimeout` after about
    ``timeout`` seconds (not early, at most ``margin`` late); returns the delay."""
    started = time.monotonic()
    with pytest.raises(polymsg.MessagingTimeout):
        client.call({}, method, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed >= timeout * 0.9, f"a {timeout}s timeout fired early, after {elapsed:.2f}s"
    assert elapsed < timeout + margin, f"a {timeout}s timeout fired after {elapsed:.2f}s"
    return elapsed


class Recorder:
    """A thread-safe list of events a test can wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[Any] = []

    def add(self, event: Any) -> None:
        """Append ``event`` and wake waiters."""
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    @property
    def events(self) -> list[Any]:
        """A snapshot of the events so far."""
        with self._cond:
            return list(self._events)

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float,
                 what: str = "the expected events") -> list[Any]:
        """Block until ``predicate(events)`` holds; fail the test after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._events), timeout):
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; got {self._events!r}"
                )
            return list(self._events)

    def wait_for_count(self, count: int, timeout: float) -> list[Any]:
        """Block until at least ``count`` events were recorded."""
        return self.wait_for(lambda events: len(events) >= count, timeout,
                             f"{count} event(s)")


@dataclass(frozen=True)
class Invocation:
    """One execution of an RPC endpoint method."""

    server: str
    method: str
    ctxt: Any
    kwargs: Mapping[str, Any]


class RPCEndpoint:
    """The endpoint every conformance RPC server exposes.

    Each execution is recorded as an :class:`Invocation` on ``recorder``.
    ``block`` holds its caller until ``release`` is set (or ``ceiling``
    seconds pass, so a broken test never hangs a server). ``target`` sets the
    endpoint's namespace and version (default: none, version 1.0).
    """

    def __init__(self, server: str, recorder: Recorder, release: threading.Event,
                 ceiling: float = 30.0, target: polymsg.Target | None = None) -> None:
        self.server = server
        self.recorder = recorder
        self.release = release
        self.ceiling = ceiling
        if target is not None:
            self.target = target

    def _record(self, method: str, ctxt: Any, **kwargs: Any) -> None:
        self.recorder.add(Invocation(self.server, method, ctxt, kwargs))

    def echo(self, ctxt: Any, value: Any = None) -> Any:
        """Return ``value``."""
        self._record("echo", ctxt, value=value)
        return value

    def echo_kwargs(self, ctxt: Any, **kwargs: Any) -> Any:
        """Return all keyword arguments as a dict."""
        self._record("echo_kwargs", ctxt, **kwargs)
        return kwargs

    def get_ctxt(self, ctxt: Any) -> Any:
        """Return the context the server received."""
        self._record("get_ctxt", ctxt)
        return ctxt

    def note(self, ctxt: Any, value: Any = None) -> None:
        """Record ``value`` (the cast target)."""
        self._record("note", ctxt, value=value)

    def whoami(self, ctxt: Any) -> str:
        """Return this server's name."""
        self._record("whoami", ctxt)
        return self.server

    def block(self, ctxt: Any, value: Any = None) -> Any:
        """Wait for ``release``, then return ``value``."""
        self._record("block", ctxt, value=value)
        self.release.wait(self.ceiling)
        return value

    def fail(self, ctxt: Any, kind: str, message: str) -> None:
        """Raise the exception named by ``kind`` with ``message``."""
        self._record("fail", ctxt, kind=kind, message=message)
        raise _exception(kind, message)

    @polymsg.expected_exceptions(KeyError, ConformanceError)
    def fail_expected(self, ctxt: Any, message: str) -> None:
        """Raise a ``KeyError`` the endpoint declares as expected."""
        self._record("fail_expected", ctxt, message=message)
        raise KeyError(message)

    def bad_result(self, ctxt: Any) -> Any:
        """Return something that is not JSON."""
        self._record("bad_result", ctxt)
        return object()

    def _private(self, ctxt: Any) -> str:
        self._record("_private", ctxt)
        return "private"


def _exception(kind: str, message: str) -> Exception:
    classes: dict[str, Callable[[str], Exception]] = {
        "ValueError": ValueError,
        "KeyError": KeyError,
        "InvalidTarget": polymsg.InvalidTarget,
        "ConformanceError": ConformanceError,
        "UnlistedError": UnlistedError,
    }
    return classes[kind](message)


@dataclass(frozen=True)
class Notification:
    """One notification as an endpoint received it."""

    endpoint: str
    priority: str
    ctxt: Any
    publisher_id: str
    event_type: str
    payload: Any
    metadata: Mapping[str, Any]


class NotificationEndpoint:
    """Records every notification, of every priority, on ``recorder``."""

    def __init__(self, name: str, recorder: Recorder,
                 filter_rule: polymsg.NotificationFilter | None = None) -> None:
        self.name = name
        self.recorder = recorder
        if filter_rule is not None:
            self.filter_rule = filter_rule

    def handle(self, note: Notification) -> polymsg.NotificationResult | None:
        """What to answer for ``note``; acknowledged (``None``) here."""
        return None

    def _got(self, priority: str, ctxt: Any, publisher_id: str, event_type: str,
             payload: Any, metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        note = Notification(self.name, priority, ctxt, publisher_id, event_type, payload,
                            dict(metadata))
        self.recorder.add(note)
        return self.handle(note)

    def audit(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
              metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Audit priority."""
        return self._got("audit", ctxt, publisher_id, event_type, payload, metadata)

    def debug(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
              metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Debug priority."""
        return self._got("debug", ctxt, publisher_id, event_type, payload, metadata)

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Info priority."""
        return self._got("info", ctxt, publisher_id, event_type, payload, metadata)

    def warn(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Warn priority (``Notifier.warn`` and ``Notifier.warning``)."""
        return self._got("warn", ctxt, publisher_id, event_type, payload, metadata)

    def error(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
              metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Error priority."""
        return self._got("error", ctxt, publisher_id, event_type, payload, metadata)

    def critical(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
                 metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Critical priority."""
        return self._got("critical", ctxt, publisher_id, event_type, payload, metadata)

    def sample(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
               metadata: Mapping[str, Any]) -> polymsg.NotificationResult | None:
        """Sample priority."""
        return self._got("sample", ctxt, publisher_id, event_type, payload, metadata)


class RequeueOnceEndpoint(NotificationEndpoint):
    """Answers ``REQUEUE`` the first time it sees a message id, ``HANDLED`` after."""

    def __init__(self, name: str, recorder: Recorder) -> None:
        super().__init__(name, recorder)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, note: Notification) -> polymsg.NotificationResult | None:
        """REQUEUE on first sight of ``note``'s message id."""
        message_id = str(note.metadata.get("message_id"))
        with self._lock:
            first = message_id not in self._seen
            self._seen.add(message_id)
        return polymsg.NotificationResult.REQUEUE if first else polymsg.NotificationResult.HANDLED


class AlwaysRequeueEndpoint(NotificationEndpoint):
    """Answers ``REQUEUE`` to everything."""

    def handle(self, note: Notification) -> polymsg.NotificationResult | None:
        """Always REQUEUE."""
        return polymsg.NotificationResult.REQUEUE


@dataclass(frozen=True)
class Point:
    """A value that is not JSON; :class:`PointSerializer` carries it."""

    x: int
    y: int


class PointSerializer(polymsg.Serializer):
    """Encodes :class:`Point` as a tagged dict and marks contexts it handled.

    ``calls`` counts each hook's invocations.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def _count(self, hook: str) -> None:
        with self._lock:
            self.calls[hook] = self.calls.get(hook, 0) + 1

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        """``Point`` -> ``{"__point__": [x, y]}``; containers recursively."""
        self._count("serialize_entity")
        return _walk(entity, _encode_point)

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        """``{"__point__": [x, y]}`` -> ``Point``; containers recursively."""
        self._count("deserialize_entity")
        return _walk(entity, _decode_point)

    def serialize_context(self, ctxt: Any) -> Any:
        """Add ``"serialized": True``."""
        self._count("serialize_context")
        return {**dict(ctxt), "serialized": True}

    def deserialize_context(self, ctxt: Any) -> Any:
        """Add ``"deserialized": True``."""
        self._count("deserialize_context")
        return {**dict(ctxt), "deserialized": True}


def _encode_point(value: Any) -> Any:
    return {"__point__": [value.x, value.y]} if isinstance(value, Point) else value


def _decode_point(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__point__"}:
        x, y = value["__point__"]
        return Point(x, y)
    return value


def _walk(value: Any, convert: Callable[[Any], Any]) -> Any:
    value = convert(value)
    if isinstance(value, dict):
        return {key: _walk(item, convert) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, convert) for item in value]
    return value
