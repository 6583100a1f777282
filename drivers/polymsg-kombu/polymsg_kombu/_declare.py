"""Declarations on py-amqp: core's :class:`~polymsg.amqp.Declarer` over a synchronous channel.

Core decides what to declare, what to remember per connection and what a
refusal means (``406 PRECONDITION_FAILED``: a warning, the queue or exchange
used as it is); this module only runs each step on the session's channel for
declarations, whose errors must not close the channels that publish and
consume. Declaring happens under the link's lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import amqp.exceptions as amqp_errors

from polymsg import amqp
from polymsg_kombu._errors import describe

if TYPE_CHECKING:
    from polymsg_kombu._session import Session

__all__ = ["DeclareChannel", "declare_route", "needs_declaring"]


class DeclareChannel:
    """core's :class:`~polymsg.amqp.DeclareChannel` on a session: each step
    completes (``done`` is called) before the method returns."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        return getattr(self._session.raw, "server_properties", None)

    def declare_exchange(self, exchange: amqp.ExchangeSpec, passive: bool,
                         done: amqp.DeclareDone) -> None:
        self._run(done, "exchange_declare", exchange=exchange.name, type=exchange.type,
                  passive=passive, durable=exchange.durable, auto_delete=exchange.auto_delete)

    def declare_queue(self, queue: amqp.QueueSpec, passive: bool, done: amqp.DeclareDone) -> None:
        self._run(done, "queue_declare", queue=queue.name, passive=passive,
                  durable=queue.durable, auto_delete=queue.auto_delete,
                  arguments=dict(queue.arguments) or None)

    def bind(self, queue: str, exchange: str, routing_key: str, done: amqp.DeclareDone) -> None:
        self._run(done, "queue_bind", queue=queue, exchange=exchange, routing_key=routing_key)

    def delete_queue(self, name: str, done: amqp.DeclareDone) -> None:
        self._run(done, "queue_delete", queue=name)

    def refusal(self, error: BaseException) -> tuple[int | None, str]:
        code = getattr(error, "reply_code", None)
        return (code if isinstance(code, int) else None), describe(error)

    def _run(self, done: amqp.DeclareDone, method: str, **kwargs: Any) -> None:
        try:
            getattr(self._session.declare_channel(), method)(**kwargs)
        except amqp_errors.ChannelError as exc:  # the broker refused: core decides
            done(exc)
            return
        done(None)


def needs_declaring(session: Session, route: amqp.Route) -> bool:
    """True unless ``route`` was declared on ``session`` already (no lock needed)."""
    return not session.declarer.known(route)


def declare_route(session: Session, route: amqp.Route, *, consumer: bool) -> None:
    """Declare ``route`` unless it was on this session; a ``consumer`` always
    declares (queues with ``x-expires`` may have gone since). Raises
    :class:`~polymsg.MessageDeliveryFailure` on a refusal. Under the link's lock."""
    outcome: list[BaseException | None] = []
    session.declarer.ensure(route, outcome.append, remember=not consumer)
    if outcome and outcome[0] is not None:
        raise outcome[0]
