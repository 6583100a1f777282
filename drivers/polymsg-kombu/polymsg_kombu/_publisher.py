"""Publishing: one connection, one confirm-mode channel, shared by every sending thread.

Each publish takes the link's lock just long enough to declare what is not
declared yet and write the frames; the broker's confirms are read by the
link's I/O thread (or by whichever thread holds the lock), which wakes the
publisher waiting for them. Concurrent publishers therefore share confirm
round trips: RabbitMQ acknowledges many messages with one ``multiple`` ack.

Messages that must reach a queue are published ``mandatory`` with their
delivery tag as ``message_id``: when the broker returns one (its queue was
deleted or expired since it was declared), the route's declaration is
forgotten and the message sent again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import amqp as pyamqp

from polymsg.driver import MessageDeliveryFailure, amqp
from polymsg_kombu._declare import declare_route, forget_destination
from polymsg_kombu._errors import RETRYABLE, SessionLost, describe
from polymsg_kombu._link import Link, Session
from polymsg_kombu._options import Settings

__all__ = ["Publisher"]

LOG = logging.getLogger(__name__)

ACK, NACK, RETURNED, LOST = "ack", "nack", "returned", "lost"

#: How often a message returned as unroutable is declared and sent again.
_MAX_RETURNS = 2
#: How often a message is sent again after its channel was closed by the broker.
_MAX_CHANNEL_ERRORS = 2


class _Pending:
    """One published message waiting for its confirm."""

    __slots__ = ("event", "outcome", "returned", "route")

    def __init__(self, route: amqp.Route) -> None:
        self.route = route
        self.event = threading.Event()
        self.returned = False
        self.outcome: str | None = None

    def settle(self, outcome: str) -> None:
        self.outcome = RETURNED if outcome == ACK and self.returned else outcome
        self.event.set()


class _Confirms:
    """The confirm bookkeeping of one session's channel (used under the link's lock)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.last_tag = 0

    def settle(self, outcome: str, delivery_tag: int, multiple: bool) -> None:
        pending = self.pending
        if not multiple:
            entry = pending.pop(delivery_tag, None)
            if entry is not None:
                entry.settle(outcome)
            return
        while pending:
            tag = next(iter(pending))
            if tag > delivery_tag:
                break
            pending.popitem(last=False)[1].settle(outcome)

    def on_return(self, exc: Exception, exchange: str, routing_key: str,
                  message: Any) -> None:
        try:
            tag = int(message.properties.get("message_id", ""))
        except (TypeError, ValueError):
            tag = -1
        entry = self.pending.get(tag)
        if entry is None:
            LOG.warning("RabbitMQ returned an unroutable message sent to exchange %r with key "
                        "%r: %s", exchange, routing_key, exc)
            return
        entry.returned = True
        forget_destination(self.session, exchange, routing_key)

    def lose(self) -> None:
        pending, self.pending = self.pending, OrderedDict()
        for entry in pending.values():
            entry.settle(LOST)


#: Told when RabbitMQ returns an unconfirmed message (a call's request or a
#: reply): its correlation id (the call's message id), exchange, routing key.
OnReturn = Callable[[str, str, str], None]


class Publisher:
    """Sends messages for one driver; see the module docstring."""

    def __init__(self, settings: Settings, on_return: OnReturn) -> None:
        self.link = Link("publisher", settings, on_open=self._on_open, on_lost=self._on_lost)
        self._on_return = on_return

    def close(self) -> None:
        """Close the connection (pending confirms fail as lost)."""
        self.link.close()

    def _on_open(self, session: Session) -> None:
        channel = session.channel
        channel.confirm_select()
        confirms = _Confirms(session)
        session.state["confirms"] = confirms
        channel.events["basic_ack"].add(partial(confirms.settle, ACK))
        channel.events["basic_nack"].add(partial(confirms.settle, NACK))
        channel.events["basic_return"].add(confirms.on_return)
        fast = session.conn.channel()
        fast.events["basic_return"].add(partial(self._returned, session))
        session.state["fast"] = fast

    def _on_lost(self, session: Session) -> None:
        confirms = session.state.get("confirms")
        if confirms is not None:
            confirms.lose()

    def _returned(self, session: Session, exc: Exception, exchange: str, routing_key: str,
                  message: Any) -> None:
        forget_destination(session, exchange, routing_key)
        self._on_return(str(message.properties.get("correlation_id") or ""), exchange,
                        routing_key)

    def send(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
             retry: int | None, correlation_id: str, what: str) -> None:
        """Publish a call's request or a reply, without waiting for a confirm.

        Returns once the frames are written (the reply, or its absence,
        tells the caller the rest). If RabbitMQ returns the message as
        unroutable, the publisher's ``on_return`` gets ``correlation_id``.
        """
        props = dict(properties, correlation_id=correlation_id)
        message = pyamqp.Message(body, **props)
        lost = 0
        while True:
            session = self.link.session(None if retry is None else retry - lost)
            try:
                with self.link.locked:
                    if session.broken is not None:
                        raise SessionLost(describe(session.broken))
                    declare_route(session, route, consumer=False)
                    session.state["fast"].basic_publish(
                        message, exchange=route.exchange_name, routing_key=route.routing_key,
                        mandatory=True)
                return
            except RETRYABLE as exc:
                self.link.break_session(session, exc)
                lost += 1
                _check_retry(what, retry, lost, exc)

    def send_confirmed(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
                       retry: int | None, mandatory: bool, what: str) -> None:
        """Publish a cast or notification and block until RabbitMQ confirms it.

        A ``mandatory`` message the broker returns (its queue vanished) is
        declared and sent again. A refusal, or a lost connection once
        ``retry`` is exhausted, raises :class:`MessageDeliveryFailure`.
        """
        lost = returned = channel_errors = 0
        while True:
            session = self.link.session(None if retry is None else retry - lost)
            try:
                entry = self._publish(session, route, body, properties, mandatory)
                outcome = _wait(entry)
            except RETRYABLE as exc:
                self.link.break_session(session, exc)
                outcome = LOST
            if outcome == ACK:
                return
            if outcome == NACK:
                raise MessageDeliveryFailure(f"RabbitMQ refused {what} (negative confirm)")
            if outcome == RETURNED:
                returned += 1
                if returned > _MAX_RETURNS:
                    raise MessageDeliveryFailure(f"{what} could not be routed to a queue")
                continue
            cause = session.broken
            if cause is not None and not isinstance(cause, RETRYABLE):
                channel_errors += 1  # the broker closed the channel: maybe our fault
                if channel_errors > _MAX_CHANNEL_ERRORS:
                    raise MessageDeliveryFailure(f"RabbitMQ refused {what}: {describe(cause)}")
            else:
                lost += 1
                _check_retry(what, retry, lost, cause)

    def _publish(self, session: Session, route: amqp.Route, body: bytes,
                 properties: Mapping[str, Any], mandatory: bool) -> _Pending:
        with self.link.locked:
            if session.broken is not None:
                raise SessionLost(describe(session.broken))
            declare_route(session, route, consumer=False)
            confirms: _Confirms = session.state["confirms"]
            confirms.last_tag += 1
            tag = confirms.last_tag
            entry = _Pending(route)
            confirms.pending[tag] = entry
            props = dict(properties, message_id=str(tag)) if mandatory else properties
            session.channel.basic_publish(pyamqp.Message(body, **props),
                                          exchange=route.exchange_name,
                                          routing_key=route.routing_key, mandatory=mandatory)
            return entry


def _check_retry(what: str, retry: int | None, lost: int, cause: BaseException | None) -> None:
    if retry is not None and lost > retry:
        raise MessageDeliveryFailure(
            f"{what} failed: the connection to RabbitMQ was lost and {retry} "
            f"{'retry' if retry == 1 else 'retries'} did not help"
        ) from cause


def _wait(entry: _Pending) -> str:
    entry.event.wait()
    return entry.outcome or LOST
