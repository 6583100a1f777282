"""The boundary between pika's exceptions and polymsg's.

pika reports most failures to callbacks rather than raising them; either way
they leave the driver only as :class:`~polymsg.MessageDeliveryFailure` (with
the pika exception as ``__cause__``), never as themselves.
"""

from __future__ import annotations

import re
import ssl

from pika import exceptions as pika_exc

from polymsg import amqp

__all__ = ["describe", "failure_of", "reply_code"]


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


_BROKER_CLOSE = re.compile(r"\((\d+)\) '(.*)'")


def failure_of(exc: BaseException | None, host: str) -> amqp.Failure:
    """Classify a failed attempt or a lost connection (see :func:`polymsg.amqp.classify`).

    pika reports a login or virtual host the broker refused as a "probable"
    error whose text holds the broker's ``(code) 'reason'``; socket, DNS and
    TLS errors come wrapped in its connection workflow's errors."""
    if isinstance(exc, pika_exc.ProbableAuthenticationError | pika_exc.AuthenticationError
                  | pika_exc.ProbableAccessDeniedError):
        found = _BROKER_CLOSE.search(str(exc))
        code = int(found.group(1)) if found else 403
        reason = found.group(2) if found else describe(exc)
        return amqp.classify(exc, host, reply_code=code, reason=reason, auth_refused=True)
    if isinstance(exc, pika_exc.ConnectionClosedByBroker):
        return amqp.classify(exc, host, reply_code=int(exc.reply_code),
                             reason=str(exc.reply_text))
    inner = _inner(exc) if exc is not None else None
    if inner is None and isinstance(exc, pika_exc.AMQPConnectionError) and exc.args \
            and isinstance(exc.args[0], BaseException):
        inner = exc.args[0]
    if inner is not None:
        return failure_of(inner, host)
    if isinstance(exc, OSError | ssl.SSLError | ssl.CertificateError):
        return amqp.classify(exc, host)
    return amqp.classify(exc, host, reason=describe(exc))
