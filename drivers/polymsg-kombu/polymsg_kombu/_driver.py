"""The ``rabbit+kombu`` driver class."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from oslo_config import cfg

from polymsg import MessageDeliveryFailure, amqp
from polymsg.driver import (
    DriverOptions,
    Listener,
    OnMessage,
    Reply,
    SendOptions,
    Target,
    TransportURL,
)
from polymsg_kombu._consumer import (
    Consumer,
    KombuListener,
    Subscription,
    notification_handler,
    rpc_handler,
)
from polymsg_kombu._errors import translated
from polymsg_kombu._publisher import Publisher
from polymsg_kombu._replies import ReplyRouter

__all__ = ["KombuDriver"]

LOG = logging.getLogger(__name__)

#: How often a server retries the connection to send one reply.
_REPLY_RETRY = 2
_REPLY_PROPERTIES = amqp.properties(persistent=False)
#: Threads sending calls' requests that wait for a connection or a declaration.
_HELPERS = 4


class KombuDriver(amqp.RabbitDriver):
    """RabbitMQ through kombu, speaking oslo.messaging's wire format.

    See the package documentation for the threading model, delivery
    guarantees and options.
    """

    # A call hands its request over and returns at once, connected or not;
    # a cast or notification waits for room in the confirm window (without
    # one, for its confirm and the connection); polymsg.aio runs those on its
    # sender threads.
    blocking_sends = frozenset({"cast", "notify"})

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts) -> None:
        super().__init__(url, options, conf)
        self.settings = amqp.RabbitSettings.from_options(url, options,
                                                         str(conf.control_exchange))
        self.layout = self.settings.layout
        self.unrouted = amqp.Unrouted()
        self.publisher = Publisher(self.settings, on_return=self._returned,
                                   unrouted=self.unrouted)
        self.consumer = Consumer(self.settings)
        self.replies = ReplyRouter(self.settings, self.layout)
        #: Calls whose request is written but not answered: what to do if it comes back.
        self._requests: dict[str, Callable[[str], None]] = {}
        # Sends calls' requests that must wait for a connection or a declaration.
        self._helper = ThreadPoolExecutor(_HELPERS, thread_name_prefix="polymsg-kombu-call")

    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        """Publish a request to ``target`` and return the future of its reply.

        Never waits: on a live connection the request is written by this
        thread or by the one using the connection; when it needs connecting
        or declaring first, a helper thread sends it and fails the future if
        it cannot (connecting counts against the call's timeout). A request
        RabbitMQ returns (its queue was deleted and the server is still
        declaring it again) is declared and sent again, as often as
        :data:`polymsg.amqp.LIMITS` allows, within the timeout."""
        what = f"the call of {message.get('method')!r} on topic {target.topic!r}"
        msg_id = amqp.new_id()
        body = amqp.encode_request(ctxt, message, msg_id=msg_id, reply_q=self.replies.queue,
                                   call_monitor_timeout=options.call_monitor_timeout)
        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        route = self.layout.send_route(target, options.queue_ttl)
        props = self.layout.message_properties(amqp.expiration(options.timeout,
                                                               options.message_ttl))
        future = self.replies.expect(msg_id, options.heartbeat)

        def careful(_error: BaseException | None = None) -> None:
            if future.done():
                return
            try:
                with translated(what):
                    self.replies.start(options.retry, deadline)
                    self.publisher.send(route, body, props, retry=options.retry,
                                        correlation_id=msg_id, what=what, deadline=deadline)
            except BaseException as exc:
                self.replies.fail(msg_id, exc)

        def later(_error: BaseException | None = None) -> None:
            try:
                self._helper.submit(careful)
            except RuntimeError:  # cleaned up meanwhile
                self.replies.fail(msg_id, MessageDeliveryFailure("the transport is closed"))

        attempts = amqp.Attempts(options.retry)

        def returned(detail: str) -> None:
            if future.done():
                return
            if attempts.again(amqp.Outcome.RETURNED):
                LOG.info("%s: queue %r was missing (%s); declaring it and sending again",
                         what, route.routing_key, detail)
                later()
            else:
                self.replies.fail(msg_id, attempts.error(what, amqp.Outcome.RETURNED, detail))

        self._requests[msg_id] = returned
        future.add_done_callback(lambda _done: self._requests.pop(msg_id, None))
        if self.replies.link.current() is None or not self.publisher.send_now(
                route, body, props, correlation_id=msg_id, on_failed=later):
            later()
        return future

    def _returned(self, correlation_id: str, exchange: str, routing_key: str,
                  detail: str) -> None:
        """RabbitMQ returned a request (its queue vanished) or a reply (its caller left:
        replies go through the default exchange)."""
        resend = self._requests.get(correlation_id) if exchange else None
        if resend is not None:
            resend(detail)
        else:
            self.unrouted.reply(correlation_id, routing_key, detail)

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        """Publish a one-way request (see :meth:`Publisher.publish` for when it returns)."""
        unique_id = amqp.new_id()
        what = (f"the cast of {message.get('method')!r} to topic {target.topic!r} "
                f"(message {unique_id})")
        with translated(what):
            body = amqp.encode_request(ctxt, message, unique_id=unique_id)
            route = self.layout.send_route(target, options.queue_ttl)
            props = self.layout.message_properties(amqp.expiration(options.message_ttl))
            return self.publisher.publish(route, body, props, retry=options.retry,
                                          mandatory=True, what=what)

    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        """Publish a notification on ``<topic>.<priority>``."""
        priority = str(message.get("priority", "info"))
        what = (f"the notification {message.get('event_type')!r} on topic {target.topic!r} "
                f"(message {message.get('message_id')})")
        with translated(what):
            body = amqp.encode_notification(ctxt, message)
            route = self.layout.notification_route(target, priority, None, options.queue_ttl)
            props = self.layout.message_properties(amqp.expiration(options.message_ttl))
            return self.publisher.publish(route, body, props, retry=options.retry,
                                          mandatory=True, what=what)

    def _send_reply(self, reply_q: str, msg_id: str, body: bytes) -> None:
        what = f"the reply to call {msg_id}"
        with translated(what):
            self.publisher.send(amqp.Route(None, reply_q), body, _REPLY_PROPERTIES,
                                retry=_REPLY_RETRY, correlation_id=msg_id, what=what)

    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        """Consume ``topic``, ``topic.server`` and the topic's fanout for ``target``."""
        routes = self.layout.server_routes(target, queue_ttl)
        sub = Subscription(routes, rpc_handler(on_message, self._send_reply))
        with translated(f"listening on topic {target.topic!r}"):
            self.consumer.subscribe(sub, self.settings.listen_retry)
        fanout = routes[-1].queue
        return KombuListener(self.consumer, sub, [fanout.name] if fanout else [])

    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        """Consume ``<topic>.<priority>`` (or the pool's queue bound to it) for each pair."""
        routes = [self.layout.notification_route(target, priority, pool)
                  for target, priority in targets_and_priorities]
        sub = Subscription(routes, notification_handler(on_message))
        with translated("listening for notifications"):
            self.consumer.subscribe(sub, self.settings.listen_retry)
        return KombuListener(self.consumer, sub)

    def cleanup(self) -> None:
        """Close the connections and join their I/O threads. Idempotent."""
        self.consumer.close()
        self.publisher.close()
        self.replies.close()
        self._helper.shutdown(wait=True, cancel_futures=True)
        self.unrouted.summary()
