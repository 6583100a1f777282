"""kombu and py-amqp errors, translated into polymsg's exceptions at the driver boundary."""

from __future__ import annotations

from contextlib import AbstractContextManager

import amqp.exceptions as amqp_errors
import kombu.exceptions as kombu_errors

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure

__all__ = [
    "BACKEND_ERRORS",
    "CONNECTION_ERRORS",
    "RETRYABLE",
    "Closed",
    "SessionLost",
    "describe",
    "failure_of",
    "is_precondition_failed",
    "reply_code",
    "translated",
]

#: Everything the broker client libraries raise (socket errors are OSError).
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPError, kombu_errors.KombuError, OSError,
)


#: Errors after which a connection is unusable (channel errors leave it working).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp_errors.ConnectionError, kombu_errors.OperationalError, OSError,
)


class SessionLost(Exception):
    """Internal: the connection a message was being sent on went away."""


class Closed(Exception):
    """A channel or connection polymsg closed itself (AMQP reply code 200)."""

    reply_code = 200


def reply_code(exc: BaseException | None) -> int | None:
    """The AMQP reply code a channel or connection was closed with, if any."""
    code = getattr(exc, "reply_code", None)
    return code if isinstance(code, int) else None


def is_precondition_failed(exc: BaseException) -> bool:
    """True for RabbitMQ's PRECONDITION_FAILED (redeclaring with other properties)."""
    return isinstance(exc, amqp_errors.PreconditionFailed)


def describe(exc: BaseException | None) -> str:
    """A one-line description of a backend error, for logs and messages."""
    if exc is None:
        return "connection closed"
    text = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {text}"


def failure_of(exc: BaseException | None, host: str) -> amqp.Failure:
    """Classify a failure of the connection to ``host`` (see :func:`polymsg.amqp.classify`).

    py-amqp raises the broker's connection.close as an exception carrying its
    reply code (a refused login is ``AccessRefused``, 403); kombu wraps socket
    errors in ``OperationalError`` with the socket error as the cause."""
    if isinstance(exc, MessageDeliveryFailure):  # setting up the connection was refused
        return amqp.Failure(amqp.Kind.PERMANENT, host, str(exc), exc)
    if isinstance(exc, kombu_errors.OperationalError) and exc.__cause__ is not None:
        return amqp.classify(exc.__cause__, host)
    if isinstance(exc, amqp_errors.AMQPError) and isinstance(exc.reply_code, int):
        reason = str(exc.reply_text or "").strip() or describe(exc)
        if isinstance(exc, amqp_errors.ConnectionError | amqp_errors.AccessRefused):
            return amqp.classify(exc, host, reply_code=exc.reply_code, reason=reason)
    if isinstance(exc, SessionLost | amqp_errors.ChannelError):
        return amqp.classify(exc, host, reason=describe(exc))
    return amqp.classify(exc, host)


_TRANSLATED: tuple[type[BaseException], ...] = (*BACKEND_ERRORS, SessionLost)
#: Errors after which a send is tried again on a new connection.
RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, SessionLost)


def translated(what: str) -> AbstractContextManager[None]:
    """Re-raise a kombu, py-amqp or socket error as :class:`MessageDeliveryFailure`
    saying ``what`` failed (core's :func:`polymsg.amqp.translated`)."""
    return amqp.translated(f"{what} failed", _TRANSLATED, describe)
