"""The health of a RabbitMQ driver, kept once in core for both drivers.

A driver's links (:class:`~polymsg.amqp.Reconnect`) and confirm windows
(:class:`~polymsg.amqp.ConfirmWindow`) count what happens to them. While a
:class:`~polymsg.amqp.RabbitDriver` subclass is being constructed, every
Reconnect and ConfirmWindow made (in that thread) enlists in the driver's
:class:`HealthBook`, and the driver's ``health()`` reads the book:

* ``connection.up`` / ``connection.reconnects`` / ``connection.failures``
  per link, labelled ``role`` (the Reconnect's role, or ``connection-N`` in
  the order they were made when it has none); a link is reported once it
  first tried to connect (a lazy reply link that was never needed is not
  "down");
* ``confirm_window.in_flight`` / ``confirm_window.size``, summed over the
  driver's windows.

Reads are of plain attributes the owners write under their own locks or on
their one I/O thread: a reading may be a moment old, never blocks, never
raises.
"""

from __future__ import annotations

import contextvars
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from polymsg.driver import HealthStat

__all__ = ["HealthBook", "enlist", "reporting"]

F = TypeVar("F", bound=Callable[..., None])

#: Where the driver being built collects its links and windows.
_BUILDING: contextvars.ContextVar[HealthBook | None] = contextvars.ContextVar(
    "polymsg_amqp_health", default=None)
#: The instance attribute holding a driver's book.
BOOK_ATTRIBUTE = "_polymsg_health_book"


class _Link(Protocol):
    role: str
    attempted: bool
    is_open: bool
    opens: int
    failures: int


class _Window(Protocol):
    size: int

    @property
    def in_flight(self) -> int: ...


class HealthBook:
    """The links and confirm windows of one driver (held weakly)."""

    def __init__(self) -> None:
        self._links: list[tuple[str, weakref.ref[Any]]] = []
        self._windows: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, item: Any) -> None:
        """Enlist a Reconnect (it has ``role``) or a ConfirmWindow."""
        if hasattr(item, "opens"):
            role = item.role or f"connection-{len(self._links) + 1}"
            taken = {name for name, _ in self._links}
            name, n = role, 1
            while name in taken:
                n += 1
                name = f"{role}-{n}"
            self._links.append((name, weakref.ref(item)))
        else:
            self._windows.add(item)

    def readings(self) -> Iterator[HealthStat]:
        """The current readings (see the module docstring)."""
        for role, ref in self._links:
            link: _Link | None = ref()
            if link is None or not link.attempted:
                continue
            labels = {"role": role}
            yield HealthStat("connection.up", 1 if link.is_open else 0, labels)
            yield HealthStat("connection.reconnects", max(0, link.opens - 1), labels)
            yield HealthStat("connection.failures", link.failures, labels)
        windows: list[_Window] = list(self._windows)
        if windows:
            yield HealthStat("confirm_window.in_flight", sum(w.in_flight for w in windows))
            yield HealthStat("confirm_window.size", sum(w.size for w in windows))


def enlist(item: Any) -> None:
    """Called by Reconnect and ConfirmWindow when made: join the book of the driver
    being built, if any."""
    book = _BUILDING.get()
    if book is not None:
        book.add(item)


def book_of(driver: object) -> HealthBook | None:
    """The book of ``driver`` (None: it was built without :func:`reporting`)."""
    book = getattr(driver, BOOK_ATTRIBUTE, None)
    return book if isinstance(book, HealthBook) else None


def reporting(init: F) -> F:
    """Wrap a driver class's ``__init__`` so what it builds enlists in its book."""

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        book = book_of(self)
        if book is None:
            book = HealthBook()
            setattr(self, BOOK_ATTRIBUTE, book)
        token = _BUILDING.set(book)
        try:
            init(self, *args, **kwargs)
        finally:
            _BUILDING.reset(token)

    return __init__  # type: ignore[return-value]
