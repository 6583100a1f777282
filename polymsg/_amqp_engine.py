"""The AMQP engine's driver: everything of a RabbitMQ driver but its I/O adapter.

:class:`EngineDriver` is a complete ``rabbit+*`` driver written against the
I/O port (:mod:`polymsg._amqp_port`); a RabbitMQ driver is this class and an
:class:`~polymsg._amqp_port.Adapter` over its client library.

Threads and connections
=======================
Client libraries' connections are not thread-safe, so each transport runs
**one I/O thread** (the adapter's :class:`~polymsg._amqp_port.Loop`) and
nothing else touches the client library. That loop drives two connections:
one that **sends** (casts and notifications on a confirm-mode channel, calls
and replies on a plain one) and one that **receives** (the reply queue and
every server's and listener's subscription, one channel each). Keeping them
apart follows RabbitMQ's advice: when the broker throttles publishers it
blocks the sending connection, and consumers keep acknowledging on theirs.

Caller and worker threads hand work to the loop through a batched queue
(:meth:`~polymsg._amqp_port.Loop.submit`: one wake-up drains every job
queued since); the loop hands results back through
``concurrent.futures.Future`` objects. Delivery callbacks run on the I/O
thread and only queue the message for the facade's workers, so the loop is
never busy for long: heartbeats are answered however long endpoints run,
and no endpoint method runs inside the client library.

Everything else
===============
* wire format: oslo.messaging's, from :mod:`polymsg.amqp` (interoperable
  with oslo.messaging services);
* publishing with pipelined confirms: :mod:`polymsg._amqp_publisher`;
* the confirm window (``cast()`` and ``notify()`` return once published,
  ``cleanup()`` waits for their confirms): :class:`polymsg.amqp.ConfirmWindow`;
* reply queue per transport: :mod:`polymsg._amqp_reply_queue`;
* consuming: :mod:`polymsg._amqp_subscription`;
* declarations and 406 handling: :mod:`polymsg._amqp_declaring` over
  :class:`polymsg.amqp.Declarer`;
* reconnection, failover and ``retry``: :mod:`polymsg._amqp_link`.
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
from typing import Any, ClassVar, Literal

from oslo_config import cfg

from polymsg._amqp import encode_notification, encode_request, expiration, new_id
from polymsg._amqp_declaring import LinkDeclarer
from polymsg._amqp_delivery import Attempts
from polymsg._amqp_driver import RabbitDriver
from polymsg._amqp_incoming import decode
from polymsg._amqp_layout import Route, properties
from polymsg._amqp_link import Link
from polymsg._amqp_options import RabbitSettings
from polymsg._amqp_port import Adapter, Channel, Delivered
from polymsg._amqp_publisher import CALL, CAST, REPLY, Outgoing, Publisher, resolve
from polymsg._amqp_reply_queue import Replies
from polymsg._amqp_subscription import Incoming, Subscription
from polymsg._amqp_window import ConfirmWindow
from polymsg._exceptions import InvalidTarget
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

__all__ = ["EngineDriver"]

LOG = logging.getLogger(__name__)

_COUNTER = itertools.count(1)
_MAX_NAME = 255  # AMQP short strings: exchange, queue and routing key names
_CLOSE_TIMEOUT = 10.0
_MAX_ROUTES = 4096


class EngineDriver(RabbitDriver):
    """A RabbitMQ transport over ``adapter`` (see the module docstring).

    A subclass names its connections and threads with :attr:`connection_prefix`
    and passes its client library's :class:`~polymsg._amqp_port.Adapter`.
    """

    # Every send is handed to the I/O thread and returns its future at once.
    blocking_sends = frozenset[str]()
    #: The start of the names of a transport's connections and I/O thread.
    connection_prefix: ClassVar[str] = "polymsg"

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts,
                 adapter: Adapter) -> None:
        super().__init__(url, options, conf)
        name = f"{self.connection_prefix}-{os.getpid()}-{next(_COUNTER)}"
        self.name = name
        settings = RabbitSettings.from_options(url, options, str(conf.control_exchange))
        self._layout = settings.layout
        self._prefetch = settings.prefetch_count
        self._listen_retry = settings.listen_retry
        spec = settings.spec
        self._loop = adapter.loop(name)
        self._send = Link(adapter, self._loop, spec, f"{name} send")
        self._recv = Link(adapter, self._loop, spec, f"{name} receive")
        self._send_declarer = LinkDeclarer(self._send)
        self._recv_declarer = LinkDeclarer(self._recv)
        self._publisher = Publisher(self._send, self._send_declarer)
        self._replies = Replies(self._recv, self._recv_declarer, self._publisher, self._layout)
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._routes: dict[Hashable, Route] = {}
        self._id_prefix = f"{new_id()[:12]}."
        self._ids = itertools.count(1)
        window = settings.confirm_window
        self._window: ConfirmWindow[Outgoing] | None = None
        if window > 0:
            self._window = ConfirmWindow(window, describe=lambda out: out.label)
        self._flush_timeout = settings.confirm_flush_timeout

    # -- sending -------------------------------------------------------------------------------
    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        route = self._send_route(target, options)
        msg_id = new_id()
        body = encode_request(ctxt, message, msg_id=msg_id, reply_q=self._replies.queue,
                                   call_monitor_timeout=options.call_monitor_timeout)
        future: Future[Reply] = Future()
        outgoing = Outgoing(
            CALL, f"call {message['method']!r} ({msg_id}) to {route.routing_key!r}",
            route.exchange_name, route.routing_key, body,
            self._properties(msg_id, expiration(options.message_ttl, options.timeout)),
            msg_id, future, route=route, retry=options.retry,
            tries=Attempts(options.retry),
            deadline=None if options.timeout is None else time.monotonic() + options.timeout)
        self._replies.expect(msg_id, future, options.heartbeat)
        self._submit(lambda: self._replies.send(outgoing), refused=future)
        return future

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        route = self._send_route(target, options)
        unique_id = new_id()
        body = encode_request(ctxt, message, unique_id=unique_id)
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
        unique_id = new_id()
        body = encode_notification(ctxt, message, unique_id=unique_id)
        label = (f"notification {message.get('event_type')!r} ({unique_id}, message_id "
                 f"{message.get('message_id')})")
        return self._publish(label, route, body, options)

    def _send_route(self, target: Target, options: SendOptions) -> Route:
        key = (target, options.queue_ttl)
        route = self._routes.get(key)
        if route is None:
            _check_names(target.topic, target.server, target.exchange)
            route = self._remember(key, self._layout.send_route(target, options.queue_ttl))
        return route

    def _remember(self, key: Hashable, route: Route) -> Route:
        # Routes are plain values: computed once per target, not once per message.
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = route
        return route

    def _publish(self, label: str, route: Route, body: bytes, options: SendOptions, *,
                 fanout: bool = False) -> Future[None]:
        message_id = self._new_message_id()
        future: Future[None] = Future()
        window = self._window
        outgoing = Outgoing(
            CAST, f"{label} to {route.routing_key!r}", route.exchange_name, route.routing_key,
            body, self._properties(message_id, expiration(options.message_ttl)), message_id,
            future, route=route, remember=not fanout, retry=options.retry, fanout=fanout,
            tries=Attempts(options.retry))
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

    def _properties(self, message_id: str, ttl: str | None) -> dict[str, Any]:
        # Persistent only into durable queues: persisting into a transient
        # queue costs the broker and protects nothing.
        props = properties(ttl=ttl, persistent=self._layout.durable)
        props["message_id"] = message_id
        return props

    def _submit(self, job: Callable[[], None], refused: Future[Any] | None = None) -> None:
        """Hand ``job`` to the I/O thread; when the transport is closed, cancel
        ``refused`` (a call's reply, forgotten by the reply table) and raise."""
        try:
            if self._closed:
                raise MessageDeliveryFailure(f"{self.name}: the transport was cleaned up")
            self._loop.submit(job)
        except MessageDeliveryFailure:
            if refused is not None:
                refused.cancel()
            raise

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
        routes: list[Route] = []
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
             on_message: OnMessage) -> Callable[[Subscription, Channel, Delivered], None]:
    def deliver(subscription: Subscription, channel: Channel, delivered: Delivered) -> None:
        decoded = decode(kind, delivered.body, delivered.exchange, delivered.routing_key)
        if decoded is None:
            subscription.ack_now(channel, delivered.delivery_tag)
            return
        on_message(Incoming(subscription, channel, delivered.delivery_tag, decoded))
    return deliver
