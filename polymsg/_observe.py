"""Observers of every send and receive: the hook tracing and metrics plug into.

The facade tells each registered :class:`Observer` about every call, cast,
fanout cast and notification it sends, and every RPC request and
notification a server or listener processes. An observer returns a context
manager that is entered before the message goes out (or before the endpoint
runs) and exited with the outcome: the exception raised (an endpoint's
error, :class:`~polymsg.MessagingTimeout`, a :class:`~polymsg.RemoteError`
on the client, a send failure), or none.

With no observer registered the facade checks :data:`OBSERVERS` (an empty
tuple) once per message and does nothing else: no allocation, no context
manager. A failing observer never breaks messaging: its error is logged
(rate-limited) and the message goes on as if it were not there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import CancelledError, Future
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from polymsg._exceptions import MessageDeliveryFailure, MessagingError
from polymsg._ratelimit import LogLimiter

if TYPE_CHECKING:
    from polymsg._transport import Transport

__all__ = [
    "GROUP",
    "OBSERVERS",
    "Observer",
    "Operation",
    "Scope",
    "add_observer",
    "is_expected",
    "mark_expected",
    "receiving",
    "remove_observer",
    "sending",
    "system_of",
    "wire_text",
]

LOG = logging.getLogger(__name__)

#: The option group of polymsg's observability options (tracing, metrics,
#: the Prometheus endpoint).
GROUP = "polymsg_observability"

#: Observers' own failures are logged a few times per interval, then counted.
_FAILURES = LogLimiter(LOG, "observer failures")

#: The registered observers, in registration order. The facade reads this
#: module attribute once per message; an empty tuple means "not observed".
OBSERVERS: tuple[Observer, ...] = ()

_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Operation:
    """What is being sent or processed.

    ``kind``: ``"call"``, ``"cast"``, ``"fanout"`` or ``"notify"`` on the
    sending side; ``"rpc"`` or ``"notification"`` on the receiving side.
    ``system``: the messaging system of the transport (``"rabbitmq"``,
    ``"zeromq"``, ``"memory"``, or a third-party driver's). Target fields are
    the sender's target (exchange filled in), or the served target on the
    receiving side; ``method`` is the RPC method, or the event type of a
    notification; ``priority`` the notification's (upper case). ``batch``:
    a notification handed to a batch listener's endpoint with others (its
    scope is open while the batch is processed, beside theirs).
    """

    kind: str
    system: str
    exchange: str | None
    topic: str | None
    server: str | None
    namespace: str | None
    version: str | None
    method: str | None
    priority: str | None = None
    batch: bool = False


class Observer(Protocol):
    """Watches messages. Both methods return a context manager (entered at
    once, exited with the outcome); they run on the thread sending or
    processing the message, and must be thread-safe and quick."""

    def sending(self, op: Operation, ctxt: dict[str, Any]) -> AbstractContextManager[Any]:
        """Before ``op`` is sent. ``ctxt`` is the context as it will go on the
        wire (JSON types): the observer may add string keys to it (a trace
        context). Exited when the call returned or failed, or when the
        transport accepted (or refused) a cast or notification; possibly on
        another thread than the one that entered it."""
        ...

    def receiving(self, op: Operation, ctxt: Mapping[str, Any]) -> AbstractContextManager[Any]:
        """Before the endpoint processing ``op`` runs; exited, on the same
        thread (or asyncio task), when it returned or raised. An exception the
        endpoint declared with :func:`polymsg.expected_exceptions` is passed
        too; :func:`is_expected` tells it apart."""
        ...


def add_observer(observer: Observer) -> None:
    """Register ``observer`` for every message of every transport in this process
    (a no-op when it is registered already)."""
    global OBSERVERS
    with _lock:
        if observer not in OBSERVERS:
            OBSERVERS = (*OBSERVERS, observer)


def remove_observer(observer: Observer) -> None:
    """Unregister ``observer`` (a no-op when it is not registered). Messages
    already in flight still tell it how they end."""
    global OBSERVERS
    with _lock:
        OBSERVERS = tuple(o for o in OBSERVERS if o is not observer)


_EXPECTED = "__polymsg_expected__"


def mark_expected(exc: BaseException) -> None:
    """Flag ``exc`` as declared by its endpoint (``expected_exceptions``)."""
    with suppress(AttributeError):  # an exception type without a __dict__: not flagged
        setattr(exc, _EXPECTED, True)


def is_expected(exc: BaseException | None) -> bool:
    """True when ``exc`` is an exception its endpoint declared as expected
    (:func:`polymsg.expected_exceptions`): part of the method's contract, not
    a failure of the service."""
    return exc is not None and getattr(exc, _EXPECTED, False) is True


def system_of(transport: Transport) -> str:
    """The messaging system of ``transport``: its driver's ``messaging_system``,
    or the URL scheme for a driver that declares none."""
    driver = type(transport._driver)
    return getattr(driver, "messaging_system", None) or transport.url.transport


#: Longest text taken from the wire into an :class:`Operation` (a method name, say).
MAX_TEXT = 128


def wire_text(value: Any) -> str | None:
    """A field of a received message as an :class:`Operation` holds it: text cut
    to :data:`MAX_TEXT` characters; anything but text is ``None``."""
    return value[:MAX_TEXT] if isinstance(value, str) else None


class Scope:
    """The observers' context managers for one message, entered. Exit it as a
    context manager, or with :meth:`close` (from any thread, once)."""

    __slots__ = ("_managers",)

    def __init__(self, managers: list[AbstractContextManager[Any]]) -> None:
        self._managers = managers

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(exc)

    def close(self, exc: BaseException | None) -> None:
        """Tell every observer how the message ended (``exc``: how it failed).
        Never raises and never swallows ``exc``."""
        managers, self._managers = self._managers, []
        args: tuple[Any, Any, Any] = (
            (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__))
        for manager in reversed(managers):
            try:
                manager.__exit__(*args)
            except Exception as failure:
                _FAILURES.log("an observer failed after a message: %r", failure)

    def close_with(self, future: Future[Any]) -> None:
        """A done callback: close with the outcome of a send's ``future``."""
        if future.cancelled():
            self.close(CancelledError())
            return
        exc = future.exception()
        if exc is not None and not isinstance(exc, MessagingError):
            exc = MessageDeliveryFailure(f"the driver failed to deliver: {exc}")
        self.close(exc)


def _enter(method: str, op: Operation, ctxt: Any) -> Scope:
    managers: list[AbstractContextManager[Any]] = []
    for observer in OBSERVERS:
        try:
            manager = getattr(observer, method)(op, ctxt)
            manager.__enter__()
        except Exception as failure:
            _FAILURES.log("an observer failed before a message: %r", failure)
            continue
        managers.append(manager)
    return Scope(managers)


def sending(op: Operation, ctxt: dict[str, Any]) -> Scope:
    """Enter every observer's :meth:`Observer.sending` for ``op``."""
    return _enter("sending", op, ctxt)


def receiving(op: Operation, ctxt: Mapping[str, Any]) -> Scope:
    """Enter every observer's :meth:`Observer.receiving` for ``op``."""
    return _enter("receiving", op, ctxt)
