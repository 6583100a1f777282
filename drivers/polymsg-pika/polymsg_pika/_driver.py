"""``rabbit+pika://`` — polymsg's RabbitMQ driver on pika.

Threads and connections
=======================
pika connections are not thread-safe, so each transport runs **one I/O
thread** with a pika ``IOLoop`` and nothing else touches pika objects. That
loop drives two ``SelectConnection`` objects: one that **sends** (casts and
notifications on a confirm-mode channel, calls and replies on a plain one)
and one that **receives** (the reply queue and every server's and listener's
subscription, one channel each). Keeping them apart follows RabbitMQ's
advice: when the broker throttles publishers it blocks the sending
connection, and consumers keep acknowledging on theirs.

Caller and worker threads hand work to the loop through a batched queue that
wakes it with ``ioloop.add_callback_threadsafe`` (:mod:`polymsg_pika._loop`);
the loop hands results back through ``concurrent.futures.Future`` objects.
Delivery callbacks run on the I/O thread and only queue the message for the
facade's workers, so the loop is never busy for long: heartbeats are
answered however long endpoints run, and no method runs inside pika.

Everything else
===============
* wire format: oslo.messaging's, from :mod:`polymsg.amqp` (shared with
  the kombu driver and interoperable with oslo.messaging services);
* publishing with pipelined confirms: :mod:`polymsg_pika._publisher`;
* the confirm window (``cast()`` and ``notify()`` return once published,
  ``cleanup()`` waits for their confirms): :class:`polymsg.amqp.ConfirmWindow`;
* reply queue per transport: :mod:`polymsg_pika._replies`;
* declarations and 406 handling: :mod:`polymsg_pika._declare`;
* reconnection, failover and ``retry``: :mod:`polymsg_pika._link`;
* options and TLS: :mod:`polymsg_pika._options`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, Literal

import pika
from oslo_config import cfg

from polymsg import InvalidTarget, amqp
from polymsg.driver import (
    DriverOptions,
    Listener,
    MessageDeliveryFailure,
    OnMessage,
    Reply,
    SendOptions,
    Target,
    TransportURL,
)
from polymsg_pika._consumer import Incoming, Subscription
from polymsg_pika._declare import Declarer
from polymsg_pika._link import Link
from polymsg_pika._loop import IOThread
from polymsg_pika._publisher import CALL, CAST, REPLY, Outgoing, Publisher, resolve
from polymsg_pika._replies import Replies

__all__ = ["PikaDriver"]

LOG = logging.getLogger(__name__)

_COUNTER = itertools.count(1)
_MAX_NAME = 255  # AMQP short strings: exchange, queue and routing key names
_CLOSE_TIMEOUT = 10.0
_MAX_ROUTES = 4096


class PikaDriver(amqp.RabbitDriver):
    """The ``rabbit+pika`` transport (see the module docstring)."""

    # Every send is handed to the I/O thread and returns its future at once.
    blocking_sends = frozenset[str]()

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts) -> None:
        super().__init__(url, options, conf)
        name = f"polymsg-pika-{os.getpid()}-{next(_COUNTER)}"
        self.name = name
        settings = amqp.RabbitSettings.from_options(url, options, str(conf.control_exchange))
        self._layout = settings.layout
        self._prefetch = settings.prefetch_count
        self._listen_retry = settings.listen_retry
        spec = settings.spec
        self._loop = IOThread(name)
        self._send = Link(self._loop, spec, f"{name} send")
        self._recv = Link(self._loop, spec, f"{name} receive")
        self._send_declarer = Declarer(self._send)
        self._recv_declarer = Declarer(self._recv)
        self._publisher = Publisher(self._send, self._send_declarer)
        self._replies = Replies(self._recv, self._recv_declarer, self._publisher, self._layout)
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._routes: dict[Hashable, amqp.Route] = {}
        self._id_prefix = f"{amqp.new_id()[:12]}."
        self._ids = itertools.count(1)
        window = settings.confirm_window
        self._window: amqp.ConfirmWindow[Outgoing] | None = None
        if window > 0:
            self._window = amqp.ConfirmWindow(window, describe=lambda out: out.label)
        self._flush_timeout = settings.confirm_flush_timeout

    # -- sending -------------------------------------------------------------------------------
    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        route = self._send_route(target, options)
        msg_id = amqp.new_id()
        body = amqp.encode_request(ctxt, message, msg_id=msg_id, reply_q=self._replies.queue,
                                   call_monitor_timeout=options.call_monitor_timeout)
        future: Future[Reply] = Future()
        outgoing = Outgoing(
            CALL, f"call {message['method']!r} ({msg_id}) to {route.routing_key!r}",
            route.exchange_name, route.routing_key, body,
            self._properties(msg_id, amqp.expiration(options.message_ttl, options.timeout)),
            msg_id, future, route=route, retry=options.retry,
            tries=amqp.Attempts(options.retry),
            deadline=None if options.timeout is None else time.monotonic() + options.timeout)
        self._replies.expect(msg_id, future, options.heartbeat)
        try:
            self._submit(lambda: self._replies.send(outgoing))
        except MessageDeliveryFailure:
            future.cancel()
            raise
        return future

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        route = self._send_route(target, options)
        unique_id = amqp.new_id()
        body = amqp.encode_request(ctxt, message, unique_id=unique_id)
        kind = "fanout cast" if target.fanout else "cast"
        return self._publish(f"{kind} {message['method']!r} ({unique_id})", route, body,
                             options, fanout=target.fanout)

    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        priority = str(message.get("priority") or "info")
        key = (target, priority, options.queue_ttl)
        route = self._routes.get(key)
        if route is None:
            _check_names(target.topic, target.exchange, priority)
            route = self._remember(key, self._layout.notification_route(
                target, priority, queue_ttl=options.queue_ttl))
        unique_id = amqp.new_id()
        body = amqp.encode_notification(ctxt, message, unique_id=unique_id)
        label = (f"notification {message.get('event_type')!r} ({unique_id}, message_id "
                 f"{message.get('message_id')})")
        return self._publish(label, route, body, options)

    def _send_route(self, target: Target, options: SendOptions) -> amqp.Route:
        key = (target, options.queue_ttl)
        route = self._routes.get(key)
        if route is None:
            _check_names(target.topic, target.server, target.exchange)
            route = self._remember(key, self._layout.send_route(target, options.queue_ttl))
        return route

    def _remember(self, key: Hashable, route: amqp.Route) -> amqp.Route:
        # Routes are plain values: computed once per target, not once per message.
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = route
        return route

    def _publish(self, label: str, route: amqp.Route, body: bytes, options: SendOptions, *,
                 fanout: bool = False) -> Future[None]:
        message_id = self._new_message_id()
        future: Future[None] = Future()
        window = self._window
        outgoing = Outgoing(
            CAST, f"{label} to {route.routing_key!r}", route.exchange_name, route.routing_key,
            body, self._properties(message_id, amqp.expiration(options.message_ttl)), message_id,
            future, route=route, remember=not fanout, retry=options.retry, fanout=fanout,
            tries=amqp.Attempts(options.retry))
        if window is None:
            self._submit(lambda: self._publisher.send(outgoing))
            return future
        if self._closed:
            raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
        window.enter(outgoing)  # waits here, in the sender's thread, while the window is full
        window.bind(outgoing, future)  # cancelled before published: dropped at once
        outgoing.early, outgoing.on_settled = True, functools.partial(window.leave, outgoing)
        # With the channels open and the route declared, the I/O thread has
        # nothing left to refuse but a lost connection, after which it sends
        # the message again: the sender need not wait for the hand-over.
        accepting = self._publisher.accepting(route)
        try:
            self._submit(lambda: self._publisher.send(outgoing))
        except BaseException:
            outgoing.settle()
            raise
        if accepting:
            outgoing.handed = True
            resolve(future, None)
        return future

    def _send_reply(self, reply_q: str, msg_id: str, body: bytes) -> None:
        message_id = self._new_message_id()
        outgoing = Outgoing(REPLY, f"reply to call {msg_id}", "", reply_q, body,
                            self._properties(message_id, None), message_id, None)
        self._submit(lambda: self._publisher.send(outgoing))

    def _new_message_id(self) -> str:
        # Matches a returned message to its sender: unique per transport is enough.
        return f"{self._id_prefix}{next(self._ids)}"

    def _properties(self, message_id: str, ttl: str | None) -> Any:
        # Persistent only into durable queues: persisting into a transient
        # queue costs the broker and protects nothing.
        return pika.BasicProperties(
            message_id=message_id,
            **amqp.properties(ttl=ttl, persistent=self._layout.durable))

    def _submit(self, job: Callable[[], None]) -> None:
        if self._closed:
            raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
        self._loop.submit(job)

    # -- listening ---------------------------------------------------------------------------
    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        _check_names(target.topic, target.server, target.exchange)
        routes = self._layout.server_routes(target, queue_ttl)
        fanout_queue = routes[-1].queue
        temporary = [fanout_queue.name] if fanout_queue is not None else []
        return self._subscribe(Subscription(
            self._recv, self._recv_declarer, routes, _handler("request", on_message),
            prefetch=self._prefetch, temporary=temporary, send_reply=self._send_reply,
            retry=self._listen_retry))

    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        routes: list[amqp.Route] = []
        for target, priority in targets_and_priorities:
            _check_names(target.topic, target.exchange, pool, priority)
            route = self._layout.notification_route(target, priority, pool)
            if route not in routes:
                routes.append(route)
        return self._subscribe(Subscription(
            self._recv, self._recv_declarer, routes, _handler("notification", on_message),
            prefetch=self._prefetch, retry=self._listen_retry))

    def _subscribe(self, subscription: Subscription) -> Listener:
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
            self._subscriptions.add(subscription)
        try:
            subscription.start()
        except BaseException:
            with self._lock:
                self._subscriptions.discard(subscription)
            raise
        return subscription

    # -- cleanup -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        self._flush()
        error = MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
        for subscription in subscriptions:
            subscription.fail(error)
        if not self._loop.started:
            self._loop.close()
            return
        closed = threading.Event()
        try:
            self._loop.run(lambda: self._shutdown(subscriptions, error, closed.set),
                           timeout=_CLOSE_TIMEOUT)
            if not closed.wait(_CLOSE_TIMEOUT):
                LOG.warning("%s: connections did not close within %ss", self.name,
                            _CLOSE_TIMEOUT)
        except Exception:
            LOG.warning("%s: error while closing", self.name, exc_info=True)
        self._loop.close()

    def _flush(self) -> None:
        """Wait up to ``confirm_flush_timeout`` for the window's confirms (what is
        still unconfirmed then is listed by ``Publisher.close``)."""
        window = self._window
        if window is None or not self._loop.started or self._loop.in_loop():
            return
        if window.drain(self._flush_timeout):
            LOG.debug("%s: %d message(s) still unconfirmed after %ss", self.name,
                      window.in_flight, self._flush_timeout)

    def _shutdown(self, subscriptions: list[Subscription], error: BaseException,
                  done: Callable[[], None]) -> None:
        self._publisher.close(error)
        reply_subscription = self._replies.close(error)
        for subscription in subscriptions:
            subscription.cleanup()
        pending = [self._send, self._recv]

        def link_closed() -> None:
            if pending:
                pending.pop()
            if not pending:
                done()

        self._send.close(link_closed)
        if reply_subscription is not None and self._recv.is_open:
            reply_subscription.cleanup()
            self._recv_declarer.delete_queue(self._replies.queue,
                                             lambda _error: self._recv.close(link_closed))
        else:
            self._recv.close(link_closed)




def _check_names(*names: str | None) -> None:
    for name in names:
        if name is not None and len(name.encode("utf-8")) > _MAX_NAME - 40:
            raise InvalidTarget(f"name {name[:40]!r}... is too long for RabbitMQ "
                                f"(at most {_MAX_NAME - 40} bytes, to leave room for suffixes)")


def _handler(kind: Literal["request", "notification"],
             on_message: OnMessage) -> Callable[..., None]:
    def deliver(subscription: Subscription, channel: Any, method: Any, properties: Any,
                body: bytes) -> None:
        decoded = amqp.decode(kind, body, method.exchange, method.routing_key)
        if decoded is None:
            subscription.ack_now(channel, method.delivery_tag)
            return
        on_message(Incoming(subscription, channel, method.delivery_tag, decoded))
    return deliver
