"""What every RabbitMQ driver declares (capabilities, its one option group), when
it may use a client library's private hooks, and how its library's errors
leave it (:func:`translated`: only as polymsg errors)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from oslo_config import cfg

from polymsg._amqp_options import RABBIT_GROUP, rabbit_opts
from polymsg._health_amqp import book_of, reporting
from polymsg.driver import CAPABILITIES, Driver, HealthStat, MessageDeliveryFailure, MessagingError

__all__ = ["RabbitDriver", "delivery_failure", "private_hooks_allowed", "translated"]


class RabbitDriver(Driver):
    """Base of the RabbitMQ drivers: every capability, call monitoring, the
    ``[polymsg_rabbit]`` options, and :meth:`health`.

    Health comes for free: every :class:`~polymsg.amqp.Reconnect` and
    :class:`~polymsg.amqp.ConfirmWindow` a subclass makes in its
    ``__init__`` (in that thread) counts towards :meth:`health`. A
    Reconnect's ``role`` names its connection in the readings.
    """

    capabilities = CAPABILITIES
    send_features = frozenset({"call_monitor"})
    options_group = RABBIT_GROUP
    messaging_system = "rabbitmq"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = reporting(init)  # type: ignore[method-assign]

    def health(self) -> Sequence[HealthStat]:
        """Connection state, reconnects and failures per connection role, and the
        confirm window's occupancy (see :mod:`polymsg._health_amqp`)."""
        book = book_of(self)
        return list(book.readings()) if book is not None else []

    @classmethod
    def list_opts(cls) -> Sequence[cfg.Opt]:
        """The ``[polymsg_rabbit]`` options (also settable as URL query keys)."""
        return rabbit_opts()


def _major_minor(text: str) -> tuple[int, int]:
    major, minor, *_ = [*(int(p) if p.isdigit() else 0 for p in text.split(".")), 0, 0]
    return major, minor


def private_hooks_allowed(distribution: str, tested: tuple[tuple[int, int], tuple[int, int]],
                          switch: str) -> bool:
    """True when a driver may use private hooks of ``distribution``: its installed
    version is within ``tested`` (``[low, high)``, major and minor) and the
    environment variable ``switch`` is not ``0``. Anywhere else the driver
    takes the library's public path."""
    if os.environ.get(switch, "1") == "0":
        return False
    try:
        installed = _major_minor(version(distribution))
    except PackageNotFoundError:
        return False
    low, high = tested
    return low <= installed < high


def delivery_failure(what: str, cause: BaseException | None = None,
                     describe: Callable[[BaseException], str] = str) -> MessageDeliveryFailure:
    """:class:`~polymsg.MessageDeliveryFailure` saying ``what`` failed and why
    (``describe(cause)``), the client library's error kept as ``__cause__``."""
    error = MessageDeliveryFailure(f"{what}: {describe(cause)}" if cause is not None else what)
    error.__cause__ = cause
    return error


@contextmanager
def translated(what: str, errors: tuple[type[BaseException], ...],
               describe: Callable[[BaseException], str] = str) -> Iterator[None]:
    """Re-raise the client library's ``errors`` inside the block as
    :func:`delivery_failure`; polymsg's own errors pass through."""
    try:
        yield
    except MessagingError:
        raise
    except errors as exc:
        raise delivery_failure(what, exc, describe) from exc
