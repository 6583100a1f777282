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
from polymsg_kombu._declare import declare_route, forget_route
from polymsg_kombu._errors import CONNECTION_ERRORS, SessionLost, describe
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

    __slots__ = ("event", "on_return", "outcome", "returned", "route")

    def __init__(self, route: amqp.Route, waited: bool,
                 on_return: Callable[[], None] | None) -> None:
        self.route = route
        self.event = threading.Event() if waited else None
        self.on_return = on_return
        self.returned = False
        self.outcome: str | None = None

    def settle(self, outcome: str) -> None:
        self.outcome = RETURNED if outcome == ACK and self.returned else outcome
        if self.event is not None:
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
        forget_route(self.session, entry.route)
        if entry.on_return is not None:
            entry.on_return()

    def lose(self) -> None:
        pending, self.pending = self.pending, OrderedDict()
        for entry in pending.values():
            entry.settle(LOST)


class Publisher:
    """Sends messages for one driver; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.link = Link("publisher", settings, on_open=self._on_open, on_lost=self._on_lost)

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

    def _on_lost(self, session: Session) -> None:
        confirms = session.state.get("confirms")
        if confirms is not None:
            confirms.lose()

    def send(self, route: amqp.Route, body: bytes, properties: Mapping[str, Any], *,
             retry: int | None, confirm: bool, mandatory: bool, what: str,
             on_return: Callable[[], None] | None = None) -> None:
        """Publish ``body`` on ``route`` (declaring it first).

        With ``confirm``, block until RabbitMQ confirms it; a refusal or
        exhausting ``retry`` (connection attempts) raises
        :class:`MessageDeliveryFailure`. Without it, return once the frames
        are written; ``on_return`` then runs (under the lock) if the broker
        returns the message as unroutable.
        """
        lost = returned = channel_errors = 0
        while True:
            session = self.link.session(None if retry is None else retry - lost)
            try:
                entry = self._publish(session, route, body, properties, confirm, mandatory,
                                      on_return)
            except CONNECTION_ERRORS + (SessionLost,) as exc:
                self.link.break_session(session, exc)
                entry = None
            outcome = LOST if entry is None else ACK if entry.event is None else _wait(entry)
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
            if cause is not None and not isinstance(cause, CONNECTION_ERRORS):
                channel_errors += 1  # the broker closed the channel: maybe our fault
                if channel_errors > _MAX_CHANNEL_ERRORS:
                    raise MessageDeliveryFailure(f"RabbitMQ refused {what}: {describe(cause)}")
            else:
                lost += 1
                if retry is not None and lost > retry:
                    raise MessageDeliveryFailure(
                        f"{what} failed: the connection to RabbitMQ was lost and "
                        f"{retry} {'retry' if retry == 1 else 'retries'} did not help"
                    ) from cause

    def _publish(self, session: Session, route: amqp.Route, body: bytes,
                 properties: Mapping[str, Any], confirm: bool, mandatory: bool,
                 on_return: Callable[[], None] | None) -> _Pending:
        with self.link.lock:
            if session.broken is not None:
                raise SessionLost(describe(session.broken))
            declare_route(session, route, consumer=False)
            confirms: _Confirms = session.state["confirms"]
            confirms.last_tag += 1
            tag = confirms.last_tag
            entry = _Pending(route, confirm, on_return)
            confirms.pending[tag] = entry
            props = dict(properties, message_id=str(tag)) if mandatory else properties
            session.channel.basic_publish(pyamqp.Message(body, **props),
                                          exchange=route.exchange_name,
                                          routing_key=route.routing_key, mandatory=mandatory)
            return entry


def _wait(entry: _Pending) -> str:
    if entry.event is not None:
        entry.event.wait()
    return entry.outcome or LOST
