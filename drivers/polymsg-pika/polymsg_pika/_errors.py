"""The boundary between pika's exceptions and polymsg's.

pika reports most failures to callbacks rather than raising them; either way
they leave the driver only as :class:`~polymsg.MessageDeliveryFailure` (with
the pika exception as ``__cause__``), never as themselves.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from pika import exceptions as pika_exc

from polymsg.driver import MessageDeliveryFailure

__all__ = ["PRECONDITION_FAILED", "delivery_failure", "describe", "reply_code", "translated"]

#: AMQP reply codes the driver reacts to.
NOT_FOUND = 404
PRECONDITION_FAILED = 406

#: What the broker and pika are expected to raise or report.
PIKA_ERRORS: tuple[type[BaseException], ...] = (
    pika_exc.AMQPError, pika_exc.ChannelError, OSError, ssl.SSLError, socket.timeout,
)


def reply_code(exc: BaseException | None) -> int | None:
    """The AMQP reply code of a closed connection or channel, else ``None``."""
    if isinstance(exc, (pika_exc.ConnectionClosed, pika_exc.ChannelClosed)):
        return int(exc.reply_code)
    return None


def describe(exc: BaseException | None) -> str:
    """A short human explanation of a pika or socket failure."""
    if exc is None:
        return "no reason given"
    if isinstance(exc, pika_exc.ProbableAuthenticationError):
        return "the broker refused the login (wrong user name or password?)"
    if isinstance(exc, pika_exc.ProbableAccessDeniedError):
        return "the broker refused the virtual host (does it exist, may this user use it?)"
    if isinstance(exc, (pika_exc.ConnectionClosed, pika_exc.ChannelClosed)):
        return f"{exc.reply_text or 'closed'} (AMQP code {exc.reply_code})"
    if isinstance(exc, pika_exc.AMQPHeartbeatTimeout):
        return "the broker stopped answering heartbeats"
    inner = _inner(exc)
    if inner is not None:
        return describe(inner)
    if isinstance(exc, pika_exc.AMQPConnectionError) and exc.args:
        first = exc.args[0]
        if isinstance(first, BaseException):
            return describe(first)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text


def _inner(exc: BaseException) -> BaseException | None:
    """The cause pika's connection workflow wraps (socket, TLS, handshake errors)."""
    exceptions = getattr(exc, "exceptions", None)
    if isinstance(exceptions, tuple) and exceptions and isinstance(exceptions[-1], BaseException):
        return exceptions[-1]
    inner = getattr(exc, "exception", None)
    return inner if isinstance(inner, BaseException) else None


def delivery_failure(what: str, cause: BaseException | None = None) -> MessageDeliveryFailure:
    """A :class:`~polymsg.MessageDeliveryFailure` saying ``what`` failed and why."""
    message = f"{what}: {describe(cause)}" if cause is not None else what
    error = MessageDeliveryFailure(message)
    error.__cause__ = cause
    return error


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise pika and socket errors inside the block as MessageDeliveryFailure."""
    try:
        yield
    except PIKA_ERRORS as exc:
        raise delivery_failure(what, exc) from exc
