"""py-amqp's errors as the engine sees them: classified, described, their reply codes.

They reach users only through the engine, as :class:`~polymsg.MessageDeliveryFailure`
(the py-amqp error its cause), never as themselves.
"""

from __future__ import annotations

import amqp.exceptions as amqp_errors

from polymsg import amqp

__all__ = ["BACKEND_ERRORS", "Closed", "describe", "failure_of", "reply_code"]

#: Everything py-amqp raises (socket errors are OSError).
BACKEND_ERRORS: tuple[type[BaseException], ...] = (amqp_errors.AMQPError, OSError)


class Closed(Exception):
    """A channel or connection polymsg closed itself (AMQP reply code 200)."""

    reply_code = 200


def reply_code(exc: BaseException | None) -> int | None:
    """The AMQP reply code a channel or connection was closed with, if any."""
    code = getattr(exc, "reply_code", None)
    return code if isinstance(code, int) else None


def describe(exc: BaseException | None) -> str:
    """A one-line description of a py-amqp or socket error (py-amqp's texts hold
    the broker's words, never credentials)."""
    if exc is None:
        return "connection closed"
    text = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {text}"


def failure_of(exc: BaseException | None, host: str) -> amqp.Failure:
    """Classify a failure of the connection to ``host`` (see :func:`polymsg.amqp.classify`).

    py-amqp raises the broker's connection.close as an exception carrying its
    reply code (a refused login is ``AccessRefused``, 403)."""
    if isinstance(exc, amqp_errors.AMQPError) and isinstance(exc.reply_code, int):
        reason = str(exc.reply_text or "").strip() or describe(exc)
        if isinstance(exc, amqp_errors.ConnectionError | amqp_errors.AccessRefused):
            return amqp.classify(exc, host, reply_code=exc.reply_code, reason=reason)
    if isinstance(exc, amqp_errors.ChannelError | Closed):
        return amqp.classify(exc, host, reason=describe(exc))
    return amqp.classify(exc, host)
