"""Declaring exchanges, queues and bindings, once per connection.

RabbitMQ answers a redeclaration with other properties or arguments (say a
``queue_ttl`` hint on a queue that exists without one) with
PRECONDITION_FAILED, which closes the channel. Declarations therefore go
through a channel of their own, and such a refusal becomes a warning: the
exchange or queue exists, so messages still flow, only the hint does not
apply. Any other refusal (ACCESS_REFUSED…) raises
:class:`~polymsg.MessageDeliveryFailure`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

import amqp.exceptions as amqp_errors

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure
from polymsg_kombu._errors import describe, is_precondition_failed
from polymsg_kombu._session import Session

__all__ = ["declare_route", "forget_destination", "needs_declaring"]

LOG = logging.getLogger(__name__)


def _route_key(route: amqp.Route) -> Hashable:
    queue = route.queue
    args = tuple(sorted(queue.arguments.items())) if queue is not None else ()
    return ("route", route.exchange_name, route.routing_key,
            queue.name if queue is not None else None, args)


def needs_declaring(session: Session, route: amqp.Route) -> bool:
    """True unless a sender declared ``route`` on ``session`` already (no lock needed)."""
    exchange = route.exchange
    if exchange is not None and exchange.auto_delete:
        return True
    return route.queue is not None and _route_key(route) not in session.declared


def declare_route(session: Session, route: amqp.Route, *, consumer: bool) -> None:
    """Declare ``route``'s exchange, queue and binding unless a sender did on this
    session already; a ``consumer`` always declares (queues with ``x-expires``
    may have gone since).

    Auto-delete exchanges (fanout) are declared every time: the broker
    removes them when their last queue goes, so a cached declaration could
    point at nothing. Must be called under the link's lock.
    """
    exchange = route.exchange
    if exchange is not None and exchange.auto_delete:
        _exchange(session, exchange)
    key = _route_key(route)
    if key in session.declared and not consumer:
        return
    if exchange is not None and not exchange.auto_delete:
        _exchange(session, exchange)
    queue = route.queue
    if queue is not None:
        _queue(session, queue, consumer=consumer)
        if exchange is not None:
            _call(session, f"binding queue {queue.name!r} to exchange {exchange.name!r}",
                  "queue_bind", queue=queue.name, exchange=exchange.name,
                  routing_key=route.routing_key)
    session.declared.add(key)


def forget_destination(session: Session, exchange: str, routing_key: str) -> None:
    """Declare routes to ``exchange``/``routing_key`` again next time (a message
    sent there came back unroutable: its queue is gone)."""
    stale = [key for key in session.declared
             if isinstance(key, tuple) and key[:3] == ("route", exchange, routing_key)]
    session.declared.difference_update(stale)


def _exchange(session: Session, exchange: amqp.ExchangeSpec) -> None:
    key = ("exchange", exchange.name)
    if key in session.declared and not exchange.auto_delete:
        return
    try:
        _call(session, f"declaring exchange {exchange.name!r}", "exchange_declare",
              exchange=exchange.name, type=exchange.type, durable=exchange.durable,
              auto_delete=exchange.auto_delete)
    except _Mismatch as exc:
        LOG.warning("exchange %r already exists with other properties than durable=%s "
                    "auto_delete=%s; using it as it is (%s)", exchange.name, exchange.durable,
                    exchange.auto_delete, exc)
    session.declared.add(key)


def _queue(session: Session, queue: amqp.QueueSpec, *, consumer: bool) -> None:
    queue = amqp.for_broker(queue, getattr(session.raw, "server_properties", None))
    try:
        _call(session, f"declaring queue {queue.name!r}", "queue_declare", queue=queue.name,
              durable=queue.durable, auto_delete=queue.auto_delete,
              arguments=dict(queue.arguments) or None)
    except _Mismatch as exc:
        fatal = amqp.conflict_error(queue, str(exc))
        if fatal is not None:  # another queue type: what was asked for cannot hold
            raise MessageDeliveryFailure(fatal) from exc
        if queue.arguments or consumer:
            LOG.warning("queue %r already exists with other properties or arguments than "
                        "requested (%s); %s it as it is, so a TTL hint given here does not "
                        "apply to it", queue.name, exc, "consuming" if consumer else "using")
        else:
            LOG.debug("queue %r exists with other arguments; sending to it as it is (%s)",
                      queue.name, exc)


class _Mismatch(Exception):
    """PRECONDITION_FAILED on a declaration."""


def _call(session: Session, what: str, method: str, **kwargs: Any) -> None:
    channel = session.declare_channel()
    try:
        getattr(channel, method)(**kwargs)
    except amqp_errors.ChannelError as exc:
        if is_precondition_failed(exc):
            raise _Mismatch(str(exc)) from exc
        raise MessageDeliveryFailure(f"RabbitMQ refused {what}: {describe(exc)}") from exc
