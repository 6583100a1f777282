"""Consuming: one connection per driver carries every RPC server's and listener's queues.

Frame callbacks only queue deliveries; the link's I/O thread decodes them and
hands them to the facade's callback (which only queues them) once it has
released the connection's lock. Acknowledgements come later from worker
threads as ops (see :mod:`polymsg_kombu._link`), written by whichever thread
holds the lock, several at a time. A message taken before a reconnect cannot
be acknowledged on the new connection (the broker has already put it back),
so such acks are skipped.

After a reconnect every subscription declares its queues again and resumes
consuming; queues keep their names, so nothing waiting in them is lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

from polymsg import amqp
from polymsg.driver import (
    Listener,
    MessageDeliveryFailure,
    OnMessage,
)
from polymsg_kombu._declare import declare_route
from polymsg_kombu._errors import (
    BACKEND_ERRORS,
    CONNECTION_ERRORS,
    SessionLost,
    describe,
    failure_of,
)
from polymsg_kombu._link import Link, Op, Session

__all__ = [
    "Consumer",
    "KombuListener",
    "Subscription",
    "notification_handler",
    "rpc_handler",
]

LOG = logging.getLogger(__name__)

Handler = Callable[["Consumer", Session, Any], None]


class Subscription:
    """Queues consumed together, with one handler for their deliveries.

    Deliveries are handled on the I/O thread after the lock is released;
    :meth:`enter`/:meth:`leave` bracket each handling so :meth:`deactivate`
    can wait until none runs any more.
    """

    def __init__(self, routes: Sequence[amqp.Route], bind: Callable[[Subscription], Handler],
                 *, no_ack: bool = False) -> None:
        self.routes = list(routes)
        self.handler = bind(self)
        self.no_ack = no_ack
        self.generation = 0
        self.tags: list[str] = []
        self.watch = amqp.QueueWatch()  # stream offsets, deliveries near their limit
        self._state = threading.Condition()
        self._active = True
        self._running = 0

    def queues(self) -> list[str]:
        """The distinct queues to consume (a pool's queue is bound several times)."""
        names: list[str] = []
        for route in self.routes:
            if route.queue is not None and route.queue.name not in names:
                names.append(route.queue.name)
        return names

    def setup(self, consumer: Consumer, session: Session) -> None:
        """Declare the routes and start consuming on ``session`` (under the lock)."""
        self.watch.lost()  # deliveries of a lost connection come again
        for route in self.routes:
            declare_route(session, route, consumer=True)
        tags = []
        post = consumer.link.post
        specs = {r.queue.name: r.queue for r in reversed(self.routes) if r.queue is not None}
        for name in self.queues():
            queue, tag = specs[name], f"polymsg-{amqp.new_id()}"
            deliver = partial(self.handler, consumer, session)
            if self.watch.watches(queue):
                deliver = partial(_watched, self.watch, session, queue, not self.no_ack, deliver)
            session.channel.basic_consume(
                queue=name, consumer_tag=tag, no_ack=self.no_ack,
                callback=lambda message, deliver=deliver: post(partial(deliver, message)),
                on_cancel=partial(_cancelled, consumer.link, session, name),
                arguments=self.watch.consume_arguments(queue))
            tags.append(tag)
        self.generation, self.tags = session.generation, tags

    def cancel(self, session: Session) -> None:
        """Stop consuming on ``session`` if it is the one consuming (under the lock)."""
        if self.generation == session.generation:
            for tag in self.tags:
                session.channel.basic_cancel(tag)
        self.tags = []

    def enter(self) -> bool:
        """Start handling a delivery; False once the subscription is stopped."""
        with self._state:
            if self._active:
                self._running += 1
            return self._active

    def leave(self) -> None:
        """Done handling a delivery."""
        with self._state:
            self._running -= 1
            self._state.notify_all()

    def deactivate(self) -> None:
        """Stop handing deliveries over; returns when none is being handed over."""
        with self._state:
            self._active = False
            self._state.wait_for(lambda: self._running == 0)


def _watched(watch: amqp.QueueWatch, session: Session, queue: amqp.QueueSpec, acked: bool,
             deliver: Callable[[Any], None], message: Any) -> None:
    watch.delivered(queue, (session.generation, message.delivery_tag),
                    getattr(message, "headers", None), message.body, acked=acked)
    deliver(message)


def _cancelled(link: Link, session: Session, queue: str, tag: str) -> None:
    # The broker cancels a consumer when its queue is deleted: start over on a
    # new connection, which declares the queue again.
    link.break_session(session, SessionLost(f"queue {queue!r} was deleted"))


class Consumer:
    """The consumer connection of one driver and its subscriptions."""

    def __init__(self, settings: amqp.RabbitSettings) -> None:
        self.settings = settings
        self.link = Link("consumer", settings, on_open=self._on_open, on_lost=lambda s: None,
                         needed=lambda: bool(self._subscriptions))
        self._subscriptions: list[Subscription] = []

    def close(self) -> None:
        """Close the connection; unacknowledged messages go back to their queues."""
        self.link.close()

    def _on_open(self, session: Session) -> None:
        session.channel.basic_qos(0, self.settings.prefetch_count, False)
        for sub in list(self._subscriptions):
            try:
                sub.setup(self, session)
            except MessageDeliveryFailure as exc:
                LOG.error("cannot consume %s again after reconnecting: %s",
                          ", ".join(sub.queues()), exc)

    def subscribe(self, sub: Subscription, retry: int | None) -> None:
        """Start consuming ``sub`` now and after every reconnect; returns once it consumes."""
        with self.link.locked:
            self._subscriptions.append(sub)
        lost = 0
        try:
            while True:
                session = self.link.session(None if retry is None else retry - lost)
                with self.link.locked:
                    if sub.generation == session.generation:
                        return  # the I/O thread set it up while connecting
                    if session.broken is not None:
                        continue
                    try:
                        sub.setup(self, session)
                        return
                    except CONNECTION_ERRORS as exc:
                        self.link.break_session(session, exc)
                        failure = failure_of(exc, session.host.label)
                        if failure.permanent:
                            raise amqp.connection_error(failure) from exc
                lost += 1
        except BaseException:
            self.unsubscribe(sub)
            raise

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop consuming ``sub``; when this returns its handler is not running and
        will not run again."""
        with self.link.locked:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
            session = self.link.current()
            if session is not None:
                try:
                    sub.cancel(session)
                except BACKEND_ERRORS as exc:
                    self.link.break_session(session, exc)
        if threading.current_thread() is not self.link.thread:
            sub.deactivate()

    def delete_queues(self, names: Sequence[str]) -> None:
        """Delete queues only this process used (a server's fanout queue), best effort."""
        session = self.link.current()
        if session is None or not names:
            return  # they expire on their own
        with self.link.locked:
            for name in names:
                try:
                    session.declare_channel().queue_delete(queue=name)
                except BACKEND_ERRORS as exc:
                    LOG.debug("could not delete queue %r: %s", name, describe(exc))
                    return

    def settle(self, session: Session, delivery_tag: int, *, ack: bool, requeue: bool) -> None:
        """Acknowledge (``ack``) or reject a delivery, from any thread, without waiting.

        A requeue is ``basic.reject``: a processing failure, which RabbitMQ
        4.3 counts towards a quorum queue's delivery limit.
        """
        self.link.submit(_Settle(session, delivery_tag, ack, requeue))


class _Settle(Op):
    """An acknowledgement or rejection, for the connection the delivery came on."""

    __slots__ = ("ack", "delivery_tag", "requeue", "session")

    def __init__(self, session: Session, delivery_tag: int, ack: bool, requeue: bool) -> None:
        self.session = session
        self.delivery_tag = delivery_tag
        self.ack = ack
        self.requeue = requeue

    def run(self, session: Session) -> None:
        if session is not self.session:
            LOG.debug("delivery %s came on a connection since lost; RabbitMQ redelivers it",
                      self.delivery_tag)
        elif self.ack:
            session.channel.basic_ack(self.delivery_tag)
        else:
            session.channel.basic_reject(self.delivery_tag, requeue=self.requeue)


class _Incoming(amqp.Delivery):
    """A delivered request or notification, settled on the connection it came on."""

    def __init__(self, consumer: Consumer, watch: amqp.QueueWatch, session: Session,
                 delivery_tag: int, decoded: amqp.Request | amqp.Notification,
                 send_reply: amqp.SendReply | None = None) -> None:
        super().__init__(decoded, send_reply)
        self._consumer = consumer
        self._watch = watch
        self._session = session
        self._tag = delivery_tag

    def settle(self, requeue: bool) -> None:
        self._watch.settled((self._session.generation, self._tag), requeue)
        self._consumer.settle(self._session, self._tag, ack=not requeue, requeue=requeue)


def _hand_over(sub: Subscription, on_message: OnMessage, incoming: _Incoming) -> None:
    if incoming._session.broken is not None:
        return  # unacknowledged on a lost connection: RabbitMQ delivers it again
    if not sub.enter():
        incoming.requeue()
        return
    try:
        on_message(incoming)
    except Exception:
        LOG.exception("the listener callback failed; the message goes back to its queue")
        incoming.requeue()
    finally:
        sub.leave()


def _handler(kind: Literal["request", "notification"], on_message: OnMessage,
             send_reply: amqp.SendReply | None) -> Callable[[Subscription], Handler]:
    def bind(sub: Subscription) -> Handler:
        def handle(consumer: Consumer, session: Session, message: Any) -> None:
            info = message.delivery_info
            decoded = amqp.decode(kind, message.body, info.get("exchange"),
                                  info.get("routing_key"))
            if decoded is None:
                # Rejected without requeue: a dead-letter policy on the queue keeps it.
                sub.watch.settled((session.generation, message.delivery_tag), requeue=False)
                consumer.settle(session, message.delivery_tag, ack=False, requeue=False)
                return
            _hand_over(sub, on_message, _Incoming(consumer, sub.watch, session,
                                                  message.delivery_tag, decoded, send_reply))
        return handle
    return bind


def rpc_handler(on_message: OnMessage,
                send_reply: amqp.SendReply) -> Callable[[Subscription], Handler]:
    """A delivery handler decoding RPC requests for ``on_message``."""
    return _handler("request", on_message, send_reply)


def notification_handler(on_message: OnMessage) -> Callable[[Subscription], Handler]:
    """A delivery handler decoding notifications for ``on_message``."""
    return _handler("notification", on_message, None)


class KombuListener(Listener):
    """A running subscription; ``cleanup`` deletes the queues only it used."""

    def __init__(self, consumer: Consumer, sub: Subscription, owned_queues: Sequence[str] = ()):
        self._consumer = consumer
        self._sub = sub
        self._owned = list(owned_queues)

    def stop(self) -> None:
        self._consumer.unsubscribe(self._sub)

    def cleanup(self) -> None:
        owned, self._owned = self._owned, []
        self._consumer.delete_queues(owned)
