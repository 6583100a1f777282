"""The reply path: one reply queue per transport, replies matched by message id.

The queue (``reply_<hex>``, expiring unused after ``transient_queues_ttl``) is
declared and consumed on first call, and again after every reconnect. A call
is published only while its reply queue is consumed (new calls wait while
the receiving connection is down), so no reply is sent to a queue that does
not exist yet, not even right after a broker restart. Replies are consumed without
acknowledgement and handed to the waiting caller's future; a reply for a
caller that stopped waiting (timed out) is logged and dropped.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from polymsg._amqp_connection import Failure, connection_error
from polymsg._amqp_declaring import LinkDeclarer
from polymsg._amqp_layout import Layout
from polymsg._amqp_link import Link
from polymsg._amqp_port import Channel, Connection, Delivered
from polymsg._amqp_publisher import Outgoing, Publisher, budget_error, fail, out_of_budget
from polymsg._amqp_replies import ReplyTable
from polymsg._amqp_subscription import Subscription
from polymsg.driver import Reply

__all__ = ["Replies"]

LOG = logging.getLogger(__name__)

#: How long before a call's timeout an unsent call is failed as undeliverable.
_EARLY = 0.05


class Replies:
    """Waiting calls and the consumer of their replies."""

    def __init__(self, link: Link, declarer: LinkDeclarer, publisher: Publisher,
                 layout: Layout) -> None:
        self.queue = layout.reply_queue_name()
        self._link = link
        self._declarer = declarer
        self._publisher = publisher
        self._layout = layout
        self._table = ReplyTable(self.queue)
        self._held: list[Outgoing] = []
        self._subscription: Subscription | None = None
        self._ready = False
        self._last_failure: Failure | None = None
        link.add_user(self)

    @property
    def started(self) -> bool:
        """True once the reply queue was asked for (I/O thread)."""
        return self._subscription is not None

    # -- any thread ------------------------------------------------------------------------
    def expect(self, msg_id: str, future: Future[Reply],
               heartbeat: Callable[[], None] | None = None) -> None:
        """Route the reply to ``msg_id`` to ``future`` and its call-monitor
        heartbeats to ``heartbeat``; forgotten when it is done."""
        self._table.expect(msg_id, future, heartbeat)

    # -- I/O thread --------------------------------------------------------------------------
    def send(self, message: Outgoing) -> None:
        """Publish a call once the reply queue is consumed."""
        if self._ready:
            self._publisher.send(message)
            return
        self._held.append(message)
        if message.deadline is not None:
            # Fail it as undeliverable just before the facade's timeout would.
            wait = max(0.0, message.deadline - time.monotonic() - _EARLY)
            self._link.loop.call_later(wait, functools.partial(self._expire, message))
        if self._subscription is None:
            self._subscription = Subscription(
                self._link, self._declarer, [self._layout.reply_route(self.queue)],
                self._deliver, auto_ack=True, on_ready=self._on_ready,
                needed=lambda: bool(self._held))
            self._subscription.begin()
        else:
            self._link.want()

    def _expire(self, message: Outgoing) -> None:
        if message in self._held:
            self._held.remove(message)
            fail(message.future, connection_error(
                self._last_failure, what=message.label, hosts=self._link.hosts,
                gave_up="gave up at the call's timeout"))

    def close(self, error: BaseException) -> Subscription | None:
        """Fail every waiting call with ``error``; returns the subscription to clean up."""
        for message in self._held:
            fail(message.future, error)
        self._held.clear()
        self._table.fail_all(error)
        self._link.remove_user(self)
        return self._subscription

    def _on_ready(self) -> None:
        subscription = self._subscription
        error = subscription.error if subscription is not None else None
        held, self._held = self._held, []
        if error is not None:
            self._subscription = None  # try afresh with the next call
            for message in held:
                fail(message.future, error)
            return
        self._ready = True
        for message in held:
            self._publisher.send(message)

    def _deliver(self, subscription: Subscription, channel: Channel,
                 delivered: Delivered) -> None:
        self._table.deliver(delivered.body)

    # -- LinkUser: calls held for the reply queue count connection attempts -----------------
    def link_opened(self, connection: Connection) -> None:
        """Nothing to do: the subscription re-declares itself."""

    def link_lost(self, error: BaseException | None) -> None:
        # Replies in flight stay in the queue, which outlives the connection;
        # unless the broker restarted, and then calls wait for it to be back.
        self._ready = False

    def attempt_failed(self, failure: Failure, new_round: bool) -> None:
        self._last_failure = failure
        for message in list(self._held):
            if message.abandoned() or out_of_budget(message, failure, new_round):
                self._held.remove(message)
                fail(message.future, budget_error(message.label, message.retry, failure))

    def wants_link(self) -> bool:
        return bool(self._held)
