"""Declarations (exchanges, queues, bindings, deletions) on a channel of their own.

A broker that refuses a declaration closes the channel it came on. Running
declarations on a dedicated channel keeps that away from the channels that
publish (with confirms in flight) and consume. When a queue or exchange
already exists with other properties (``406 PRECONDITION_FAILED``, e.g. a
``queue_ttl`` that differs from the one the queue was made with), the
declarer logs a warning naming it and the broker's reason, checks that it
exists (a passive declaration) and carries on with it as it is: messages
still flow, the hint given second does not apply. Any other refusal (an
access right, a missing queue) fails the declaration with
:class:`~polymsg.MessageDeliveryFailure`.

Routes declared on the current connection are remembered (senders declare
each route once per connection); a connection loss forgets them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure
from polymsg_pika._errors import PRECONDITION_FAILED, delivery_failure, describe, reply_code
from polymsg_pika._link import Link

__all__ = ["Declarer", "Done"]

LOG = logging.getLogger(__name__)

#: Called once with ``None`` on success or the polymsg error on failure.
Done = Callable[[BaseException | None], None]


@dataclass
class _Step:
    kind: str  # "exchange", "queue", "bind" or "delete"
    exchange: amqp.ExchangeSpec | None = None
    queue: amqp.QueueSpec | None = None
    routing_key: str = ""
    passive: bool = False


@dataclass
class _Job:
    steps: list[_Step]
    key: object  # what callers wait on: a Route, or a unique object
    callbacks: list[Done] = field(default_factory=list)
    index: int = 0


def _steps(route: amqp.Route) -> list[_Step]:
    steps = []
    if route.exchange is not None:
        steps.append(_Step("exchange", exchange=route.exchange))
    if route.queue is not None:
        steps.append(_Step("queue", queue=route.queue))
        if route.exchange is not None:
            steps.append(_Step("bind", exchange=route.exchange, queue=route.queue,
                               routing_key=route.routing_key))
    return steps


class Declarer:
    """Runs declaration jobs in order on one channel of ``link`` (I/O thread only)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._channel: Any = None
        self._jobs: deque[_Job] = deque()
        self._by_key: dict[object, _Job] = {}
        self._known: set[amqp.Route] = set()
        self._busy = False
        link.add_user(self)

    # -- API ----------------------------------------------------------------------
    def ensure(self, route: amqp.Route, done: Done, *, remember: bool = True) -> None:
        """Declare ``route``'s exchange, queue and binding, then call ``done``.

        With ``remember`` a route declared before on this connection is not
        declared again (pass ``False`` for what may vanish on its own, like
        an auto-delete fanout exchange).
        """
        steps = _steps(route)
        if not steps or (remember and route in self._known):
            done(None)
            return
        key: object = route if remember else object()
        self._add(_Job(steps, key), done)

    def delete_queue(self, name: str, done: Done) -> None:
        """Delete queue ``name`` (whatever it holds), then call ``done``."""
        self._add(_Job([_Step("delete", queue=amqp.QueueSpec(name))], object()), done)

    def known(self, route: amqp.Route) -> bool:
        """True when ``route`` was declared on the current connection."""
        return route in self._known

    def forget(self, route: amqp.Route) -> None:
        """Declare ``route`` again next time (it was found missing)."""
        self._known.discard(route)

    def forget_all(self) -> None:
        """Declare every route again next time (something was found missing)."""
        self._known.clear()

    # -- LinkUser -------------------------------------------------------------------
    def link_opened(self, connection: Any) -> None:
        self._open_channel(connection)

    def link_lost(self, error: BaseException | None) -> None:
        self._channel = None
        self._known.clear()
        self._restart_current()

    def attempt_failed(self, failure: amqp.Failure, new_round: bool) -> None:
        """Waiting jobs are owned by users, who count attempts themselves."""

    def wants_link(self) -> bool:
        """Jobs wait for a connection their owners want; they add no demand."""
        return False

    # -- machinery ---------------------------------------------------------------------
    def _add(self, job: _Job, done: Done) -> None:
        existing = self._by_key.get(job.key)
        if existing is not None:
            existing.callbacks.append(done)
            return
        job.callbacks.append(done)
        self._by_key[job.key] = job
        self._jobs.append(job)
        self._next()

    def _restart_current(self) -> None:
        self._busy = False
        if self._jobs:
            self._jobs[0].index = 0

    def _open_channel(self, connection: Any) -> None:
        if self._channel is not None or not connection.is_open:
            return
        self._channel = connection.channel(on_open_callback=self._on_channel_open)
        self._channel.add_on_close_callback(self._on_channel_closed)

    def _on_channel_open(self, channel: Any) -> None:
        if channel is self._channel:
            self._next()

    def _next(self) -> None:
        if self._busy or not self._jobs:
            return
        channel = self._channel
        if channel is None or not channel.is_open:
            if channel is None and self._link.is_open:
                self._open_channel(self._link.connection)
            else:
                self._link.want()
            return
        job = self._jobs[0]
        if job.index >= len(job.steps):
            self._finish(job, None)
            return
        self._busy = True
        self._run(channel, job.steps[job.index])

    def _run(self, channel: Any, step: _Step) -> None:
        ok = self._step_ok
        if step.kind == "exchange":
            spec = step.exchange
            assert spec is not None
            channel.exchange_declare(spec.name, spec.type, passive=step.passive,
                                     durable=spec.durable, auto_delete=spec.auto_delete,
                                     callback=ok)
        elif step.kind == "queue":
            assert step.queue is not None
            queue = amqp.for_broker(step.queue, channel.connection.server_properties)
            channel.queue_declare(queue.name, passive=step.passive, durable=queue.durable,
                                  auto_delete=queue.auto_delete,
                                  arguments=dict(queue.arguments) or None, callback=ok)
        elif step.kind == "bind":
            assert step.queue is not None and step.exchange is not None
            channel.queue_bind(step.queue.name, step.exchange.name,
                               routing_key=step.routing_key, callback=ok)
        else:
            assert step.queue is not None
            channel.queue_delete(step.queue.name, callback=ok)

    def _step_ok(self, frame: Any) -> None:
        self._busy = False
        if self._jobs:
            self._jobs[0].index += 1
        self._next()

    def _on_channel_closed(self, channel: Any, error: BaseException) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        if not channel.connection.is_open:
            return  # the connection is going: link_lost restarts the job
        busy, self._busy = self._busy, False
        if busy and self._jobs:
            self._refused(self._jobs[0], error)
        if self._link.is_open:
            self._open_channel(self._link.connection)

    def _refused(self, job: _Job, error: BaseException) -> None:
        step = job.steps[job.index]
        if reply_code(error) == PRECONDITION_FAILED and step.kind == "queue" \
                and not step.passive and step.queue is not None:
            fatal = amqp.conflict_error(step.queue, describe(error))
            if fatal is not None:  # another queue type: what was asked for cannot hold
                self._finish(job, MessageDeliveryFailure(fatal))
                return
        if reply_code(error) == PRECONDITION_FAILED and step.kind in ("exchange", "queue") \
                and not step.passive:
            spec = step.exchange if step.kind == "exchange" else step.queue
            name = spec.name if spec is not None else "?"
            LOG.warning("%s %r already exists with other properties than polymsg asked for "
                        "(%s); using it as it is", step.kind, name, describe(error))
            step.passive = True  # retried on the fresh channel: does it exist at all?
            return
        what = f"declaring {step.kind} {_name(step)!r} failed"
        self._finish(job, delivery_failure(what, error))

    def _finish(self, job: _Job, error: BaseException | None) -> None:
        self._jobs.popleft()
        self._by_key.pop(job.key, None)
        if error is None and isinstance(job.key, amqp.Route):
            self._known.add(job.key)
        for callback in job.callbacks:
            try:
                callback(error)
            except Exception:
                LOG.exception("error in a declaration callback")
        self._next()


def _name(step: _Step) -> str:
    if step.kind == "exchange" and step.exchange is not None:
        return str(step.exchange.name)
    return str(step.queue.name) if step.queue is not None else "?"
