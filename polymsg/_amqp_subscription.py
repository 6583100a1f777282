"""Consuming: subscriptions that survive reconnects, and the messages they deliver.

A :class:`Subscription` owns one channel of the receiving connection. Each
time that connection opens it takes a fresh channel, sets its prefetch,
declares its routes (queue, exchange, binding) and consumes every queue: a
server or listener comes back by itself after a broker restart. A consumer
the broker cancels (its queue was deleted) is declared and consumed again.

Deliveries are handed to the driver's callback on the I/O thread; the
facade only queues them there. Acknowledgements come from worker threads
and go back to the I/O thread; one for a delivery of a channel that has
since closed is dropped (the broker redelivers that message).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence

from polymsg._amqp import Notification, Request
from polymsg._amqp_connection import Failure, connection_error, give_up_reason
from polymsg._amqp_declaring import LinkDeclarer
from polymsg._amqp_incoming import Delivery, QueueWatch
from polymsg._amqp_layout import Route
from polymsg._amqp_link import Link
from polymsg._amqp_port import Channel, Connection, Delivered
from polymsg.driver import Listener, MessageDeliveryFailure

__all__ = ["Deliver", "Incoming", "Subscription"]

LOG = logging.getLogger(__name__)

_WARN_EVERY = 30.0
_MAX_REOPEN_DELAY = 5.0

#: ``deliver(subscription, channel, delivered)`` on the I/O thread.
Deliver = Callable[["Subscription", Channel, Delivered], None]
#: ``send_reply(reply_q, msg_id, body)``: publish a reply (any thread).
SendReply = Callable[[str, str, bytes], None]


class Incoming(Delivery):
    """A delivered request or notification; settled from any thread."""

    def __init__(self, subscription: Subscription, channel: Channel, tag: int,
                 decoded: Request | Notification) -> None:
        super().__init__(decoded, subscription.send_reply)
        self._subscription = subscription
        self._channel = channel
        self._tag = tag
        self._settled = False

    def settle(self, requeue: bool) -> None:
        if self._settled:
            return
        self._settled = True
        self._subscription.settle_threadsafe(self._channel, self._tag, requeue)


class Subscription(Listener):
    """Consumes ``routes`` on one channel of ``link``, again after every reconnect.

    ``temporary`` queues (a server's fanout queue) are deleted by
    :meth:`cleanup`. ``needed`` says whether to keep connecting before the
    subscription was first in place (the reply queue is only needed while
    calls wait for it); once in place it always is, until stopped.
    """

    def __init__(self, link: Link, declarer: LinkDeclarer, routes: Sequence[Route],
                 deliver: Deliver, *, prefetch: int = 0, auto_ack: bool = False,
                 temporary: Sequence[str] = (), send_reply: SendReply | None = None,
                 on_ready: Callable[[], None] | None = None,
                 needed: Callable[[], bool] | None = None, retry: int | None = None) -> None:
        self.link = link
        self.loop = link.loop
        self.routes = list(routes)
        self.send_reply: SendReply = send_reply or _no_reply
        self._declarer = declarer
        self._deliver = deliver
        self._prefetch = prefetch
        self._auto_ack = auto_ack
        self._temporary = list(temporary)
        self._on_ready = on_ready
        self._needed = needed
        self._active = False
        self._ever_ready = False
        self._channel: Channel | None = None
        self._generation = 0
        self._consuming: dict[str, Route] = {}
        self._consume_oks: set[str] = set()
        self._failures = 0
        self._retry = retry
        self._failed_rounds = 0
        self._cancels = 0  # broker cancels since the last consume-ok (backoff)
        self._watch = QueueWatch()  # stream offsets, deliveries near their limit
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- any thread ------------------------------------------------------------------
    def start(self) -> None:
        """Begin consuming and block until every queue is consumed; raise
        :class:`~polymsg.MessageDeliveryFailure` if the broker refuses."""
        self.loop.submit(self.begin)
        while not self._started.wait(_WARN_EVERY):
            LOG.warning("%s: still waiting to consume %s", self.link.name, self._queue_names())
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop consuming; no delivery callback runs once this returns."""
        with contextlib.suppress(MessageDeliveryFailure):  # the transport is gone already
            self.loop.run(self._stop)

    def cleanup(self) -> None:
        """Close the channel (unacknowledged messages go back) and delete temporary queues."""
        with contextlib.suppress(MessageDeliveryFailure):
            self.loop.run(self._cleanup)

    def settle_threadsafe(self, channel: Channel, tag: int, requeue: bool) -> None:
        """Acknowledge (or requeue) delivery ``tag`` of ``channel`` from any thread."""
        try:
            self.loop.submit(functools.partial(self._settle, channel, tag, requeue))
        except MessageDeliveryFailure:
            LOG.debug("%s: transport closed; delivery %s will be redelivered", self.link.name, tag)

    @property
    def error(self) -> BaseException | None:
        """Why the subscription could not be set up, if it could not."""
        return self._error

    def fail(self, error: BaseException) -> None:
        """Unblock :meth:`start` with ``error`` (the transport is closing)."""
        if not self._started.is_set():
            self._error = error
            self._started.set()

    # -- I/O thread: lifecycle -------------------------------------------------------
    def begin(self) -> None:
        """Begin consuming (I/O thread); ``on_ready`` runs each time every queue is
        consumed (again, after a reconnect), or once when setting up failed."""
        self._active = True
        self.link.add_user(self)
        self.link.want()

    def _stop(self) -> None:
        self._active = False
        channel, consuming = self._channel, list(self._consuming)
        self._consuming.clear()
        if channel is not None and channel.is_open:
            for tag in consuming:
                channel.cancel(tag)

    def _cleanup(self) -> None:
        self._stop()
        self.link.remove_user(self)
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            channel.close()
        for queue in self._temporary:
            self._declarer.delete_queue(queue, _log_error(f"deleting queue {queue!r}"))
        self._temporary.clear()

    # -- I/O thread: LinkUser ------------------------------------------------------------
    def link_opened(self, connection: Connection) -> None:
        if not self._active:
            return
        self._generation += 1
        generation = self._generation
        self._consuming.clear()
        self._consume_oks.clear()
        channel = connection.channel(functools.partial(self._on_channel_open, generation))
        channel.on_close(self._on_channel_closed)
        channel.on_cancel(self._on_cancelled)
        self._channel = channel

    def link_lost(self, error: BaseException | None) -> None:
        self._channel = None
        self._consuming.clear()
        self._watch.lost()

    def attempt_failed(self, failure: Failure, new_round: bool) -> None:
        """Before it was first in place, a subscription gives up on a permanent
        failure or after ``retry`` failed rounds; then it keeps trying."""
        if self._ever_ready or not self._active:
            return
        self._failed_rounds += new_round
        if failure.permanent or (self._retry is not None and self._failed_rounds > self._retry):
            self._setup_failed(connection_error(
                failure, what=f"consuming {', '.join(self._queue_names())}",
                gave_up=give_up_reason(self._retry, None)))

    def wants_link(self) -> bool:
        if not self._active:
            return False
        return self._ever_ready or self._needed is None or self._needed()

    # -- I/O thread: setting up --------------------------------------------------------
    def _on_channel_open(self, generation: int, channel: Channel) -> None:
        if generation != self._generation or not self._active:
            return
        if self._prefetch:
            channel.qos(self._prefetch, functools.partial(self._declare, generation, channel))
        else:
            self._declare(generation, channel)

    def _declare(self, generation: int, channel: Channel) -> None:
        # Always declared, never taken from the cache: a queue with a TTL may
        # have expired since this connection last declared it.
        for route in self.routes:
            self._declarer.ensure(route, functools.partial(self._declared, generation, channel,
                                                           route), remember=False)

    def _declared(self, generation: int, channel: Channel, route: Route,
                  error: BaseException | None) -> None:
        if generation != self._generation or not self._active or not channel.is_open:
            return
        if error is not None:
            self._setup_failed(error)
            return
        assert route.queue is not None
        tag = channel.consume(route.queue.name, self._on_message, auto_ack=self._auto_ack,
                              arguments=self._watch.consume_arguments(route.queue),
                              done=functools.partial(self._consume_ok, generation))
        self._consuming[tag] = route

    def _consume_ok(self, generation: int, consumer_tag: str) -> None:
        if generation != self._generation:
            return
        self._consume_oks.add(consumer_tag)
        if len(self._consume_oks & set(self._consuming)) < len(self.routes):
            return
        self._failures = 0
        self._cancels = 0
        if not self._ever_ready:
            self._ever_ready = True
            self._started.set()
        if self._on_ready is not None:
            self._on_ready()
        LOG.debug("%s: consuming %s", self.link.name, self._queue_names())

    def _setup_failed(self, error: BaseException) -> None:
        if not self._ever_ready:
            self._active = False
            self.fail(error)
            if self._on_ready is not None:
                self._on_ready()
            return
        LOG.error("%s: cannot consume %s again: %s", self.link.name, self._queue_names(), error)

    # -- I/O thread: broker events ---------------------------------------------------------
    def _on_channel_closed(self, channel: Channel, error: BaseException) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        self._consuming.clear()
        if not self._active or not channel.connection.is_open:
            return
        self._failures += 1
        delay = min(_MAX_REOPEN_DELAY, 0.05 * 2 ** self._failures)
        LOG.warning("%s: the broker closed a consumer channel: %s; opening another in %.1fs",
                    self.link.name, self.link.adapter.describe(error), delay)
        self.loop.call_later(delay, functools.partial(self._reopen, channel.connection))

    def _reopen(self, connection: Connection) -> None:
        if self._active and self._channel is None and connection.is_open:
            self.link_opened(connection)

    def _on_cancelled(self, consumer_tag: str) -> None:
        route = self._consuming.pop(consumer_tag, None)
        if route is None or not self._active or self._channel is None:
            return
        # Queue deleted, leader moved, consumer timeout: subscribe again, backing
        # off while the broker keeps cancelling.
        delay = min(_MAX_REOPEN_DELAY, 0.05 * 2 ** self._cancels)
        self._cancels += 1
        LOG.warning("%s: the broker cancelled consuming %r (queue deleted, leader moved?); "
                    "declaring it again in %.2fs", self.link.name,
                    route.queue.name if route.queue else "?", delay)
        self.loop.call_later(delay, functools.partial(self._resubscribe, self._generation,
                                                      self._channel, route))

    def _resubscribe(self, generation: int, channel: Channel, route: Route) -> None:
        if generation != self._generation or not self._active or channel is not self._channel:
            return
        self._declarer.ensure(route, functools.partial(self._declared, generation, channel,
                                                       route), remember=False)

    def _on_message(self, channel: Channel, delivered: Delivered) -> None:
        tag = delivered.delivery_tag
        if not self._active or channel is not self._channel:
            if not self._auto_ack and channel.is_open:  # never handed over: not counted
                channel.nack(tag, requeue=True)
            return
        route = self._consuming.get(delivered.consumer_tag)
        if route is not None and route.queue is not None:
            self._watch.delivered(route.queue, tag, delivered.properties.get("headers"),
                                  delivered.body, acked=not self._auto_ack)
        try:
            self._deliver(self, channel, delivered)
        except Exception:
            LOG.exception("%s: error handing over a message; it goes back to the queue",
                          self.link.name)
            self._watch.settled(tag, requeue=False)
            if not self._auto_ack and channel.is_open:
                channel.nack(tag, requeue=True)

    def _settle(self, channel: Channel, tag: int, requeue: bool) -> None:
        if channel is not self._channel or not channel.is_open:
            LOG.debug("%s: delivery %s belongs to a closed channel; the broker redelivers it",
                      self.link.name, tag)
            return
        self._watch.settled(tag, requeue, prefix=f"{self.link.name}: ")
        if requeue:
            # A requeue the endpoint asked for is a processing failure: basic.reject,
            # which RabbitMQ 4.3 counts towards a quorum queue's delivery limit.
            channel.reject(tag, requeue=True)
        else:
            channel.ack(tag)

    def ack_now(self, channel: Channel, tag: int) -> None:
        """Acknowledge a delivery on the I/O thread (a dropped, malformed message)."""
        if not self._auto_ack:
            self._settle(channel, tag, requeue=False)

    def _queue_names(self) -> list[str]:
        return [route.queue.name for route in self.routes if route.queue is not None]


def _no_reply(reply_q: str, msg_id: str, body: bytes) -> None:
    LOG.debug("no reply path for call %s", msg_id)


def _log_error(what: str) -> Callable[[BaseException | None], None]:
    def done(error: BaseException | None) -> None:
        if error is not None:
            LOG.warning("%s failed: %s", what, error)
    return done

