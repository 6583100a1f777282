"""Declaring routes, and what to do when the broker refuses a declaration.

A :class:`Declarer` runs declaration jobs (a route's exchange, queue and
binding; a queue's deletion) one step at a time, in order, on a driver's
:class:`DeclareChannel`: a synchronous client completes each step before
the call returns, an asynchronous one from its I/O loop. It remembers the
routes and exchanges declared on the current connection, so senders declare
each route once per connection.

The refusal policy, the same for every driver:

* ``406 PRECONDITION_FAILED`` on an exchange or queue that exists with other
  properties or arguments (say a ``queue_ttl`` hint the queue was not made
  with) is a warning naming it and the broker's reason; the declarer then
  checks that it exists (a passive declaration on a fresh channel) and
  carries on with it as it is: messages still flow, only the hint does not
  apply. A queue of another type than asked for (classic where a quorum
  queue was asked for…) cannot be used as it is: that fails, with the option
  that decides the type (:func:`~polymsg._amqp_topology.conflict_error`).
* Any other refusal (``ACCESS_REFUSED``, a missing queue…) fails the job
  with :class:`~polymsg.MessageDeliveryFailure` naming what was declared and
  the broker's reason, the client library's error as its cause.

Auto-delete exchanges (fanout) are declared every time: the broker removes
them with their last queue, so a remembered declaration could point at
nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from polymsg._amqp_layout import ExchangeSpec, QueueSpec, Route
from polymsg._amqp_topology import conflict_error, for_broker
from polymsg._exceptions import MessageDeliveryFailure

__all__ = ["PRECONDITION_FAILED", "DeclareChannel", "DeclareDone", "Declarer"]

LOG = logging.getLogger(__name__)

#: The reply code of a redeclaration with other properties.
PRECONDITION_FAILED = 406

#: Told once how a job ended: ``None``, or the polymsg error.
DeclareDone = Callable[[BaseException | None], None]


class DeclareChannel(Protocol):
    """A driver's channel for declarations (the I/O adapter a :class:`Declarer` drives).

    Each method starts one declaration and calls ``done`` exactly once:
    with ``None`` when the broker agreed, or with the client library's error
    when the broker refused it (the channel is then closed; the next
    :meth:`Declarer` step asks for a channel again). A synchronous client calls
    ``done`` before returning; it may raise a connection error instead, which
    propagates to whoever called :meth:`Declarer.ensure`.
    """

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        """The broker's ``server-properties`` (its version decides queue durability)."""

    def declare_exchange(self, exchange: ExchangeSpec, passive: bool, done: DeclareDone) -> None:
        """Declare ``exchange`` (``passive``: only check that it exists)."""

    def declare_queue(self, queue: QueueSpec, passive: bool, done: DeclareDone) -> None:
        """Declare ``queue`` (``passive``: only check that it exists)."""

    def bind(self, queue: str, exchange: str, routing_key: str, done: DeclareDone) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key``."""

    def delete_queue(self, name: str, done: DeclareDone) -> None:
        """Delete queue ``name``, whatever it holds."""

    def refusal(self, error: BaseException) -> tuple[int | None, str]:
        """The broker's reply code (``None`` if it is no broker refusal) and reason."""


@dataclass
class _Step:
    kind: str  # "exchange", "queue", "bind" or "delete"
    exchange: ExchangeSpec | None = None
    queue: QueueSpec | None = None
    routing_key: str = ""
    passive: bool = False

    @property
    def name(self) -> str:
        spec = self.exchange if self.kind == "exchange" else self.queue
        return spec.name if spec is not None else "?"

    def describe(self) -> str:
        if self.kind == "bind":
            exchange = self.exchange.name if self.exchange is not None else "?"
            return f"binding queue {self.name!r} to exchange {exchange!r}"
        if self.kind == "delete":
            return f"deleting queue {self.name!r}"
        return f"declaring {self.kind} {self.name!r}"


@dataclass
class _Job:
    steps: list[_Step]
    key: Hashable  # what callers wait on together: a route, or a unique object
    remember: bool
    callbacks: list[DeclareDone] = field(default_factory=list)
    index: int = 0


class Declarer:
    """Declaration jobs run in order on the channel ``channel()`` gives.

    ``channel()`` returns the channel to use now, or ``None`` while the
    driver opens one; the driver then calls :meth:`resume` once it is open.
    Used from one thread at a time (a driver's lock or its I/O thread).
    """

    def __init__(self, channel: Callable[[], DeclareChannel | None]) -> None:
        self._channel = channel
        self._jobs: deque[_Job] = deque()
        self._by_key: dict[Hashable, _Job] = {}
        self._routes: set[Route] = set()
        self._exchanges: set[str] = set()
        self._busy = False
        self._running = False
        self._token: object = None

    # -- what drivers call -----------------------------------------------------

    def ensure(self, route: Route, done: DeclareDone, *, remember: bool = True) -> None:
        """Declare ``route``'s exchange, queue and binding, then call ``done``.

        With ``remember`` a route declared before on this connection is not
        declared again; pass ``False`` where it may have gone meanwhile (a
        consumer's queue with ``x-expires``).
        """
        if remember and self.known(route):
            done(None)
            return
        steps = self._steps(route)
        if not steps:
            done(None)
            return
        self._add(_Job(steps, route if remember else object(), remember), done)

    def delete_queue(self, name: str, done: DeclareDone) -> None:
        """Delete queue ``name``, then call ``done``."""
        self._add(_Job([_Step("delete", queue=QueueSpec(name))], object(), False), done)

    def known(self, route: Route) -> bool:
        """True when ``route`` need not be declared again on this connection."""
        exchange = route.exchange
        if exchange is not None and exchange.auto_delete:
            return False
        return route.queue is None or route in self._routes

    def forget(self, route: Route) -> None:
        """Declare ``route`` again next time (its queue was found missing)."""
        self._routes.discard(route)

    def forget_destination(self, exchange: str, routing_key: str) -> None:
        """Declare routes to ``exchange`` with ``routing_key`` again next time (a
        message sent there came back unroutable: its queue is gone)."""
        self._routes = {r for r in self._routes
                        if (r.exchange_name, r.routing_key) != (exchange, routing_key)}

    def forget_all(self) -> None:
        """Declare every route again next time."""
        self._routes.clear()
        self._exchanges.clear()

    def reset(self) -> None:
        """The connection is gone: forget what was declared; the job running
        starts over once :meth:`resume` is called on the next connection."""
        self.forget_all()
        self._busy = False
        self._token = None
        if self._jobs:
            self._jobs[0].index = 0

    def resume(self) -> None:
        """A channel is open again: run the jobs waiting."""
        self._next()

    # -- machinery ---------------------------------------------------------------

    def _steps(self, route: Route) -> list[_Step]:
        steps = []
        exchange, queue = route.exchange, route.queue
        if exchange is not None and (exchange.auto_delete or exchange.name not in self._exchanges):
            steps.append(_Step("exchange", exchange=exchange))
        if queue is not None:
            steps.append(_Step("queue", queue=queue))
            if exchange is not None:
                steps.append(_Step("bind", exchange=exchange, queue=queue,
                                   routing_key=route.routing_key))
        return steps

    def _add(self, job: _Job, done: DeclareDone) -> None:
        existing = self._by_key.get(job.key)
        if existing is not None:
            existing.callbacks.append(done)
            return
        job.callbacks.append(done)
        self._by_key[job.key] = job
        self._jobs.append(job)
        self._next()

    def _next(self) -> None:
        if self._running:
            return  # a synchronous step completed inside _start: the loop below goes on
        self._running = True
        try:
            while self._jobs and not self._busy:
                job = self._jobs[0]
                if job.index >= len(job.steps):
                    self._finish(job, None)
                    continue
                channel = self._channel()
                if channel is None:
                    return  # resume() goes on
                self._busy = True
                try:
                    self._start(channel, job.steps[job.index])
                except BaseException:
                    self._busy = False
                    self._jobs.popleft()
                    self._by_key.pop(job.key, None)
                    raise
        finally:
            self._running = False

    def _start(self, channel: DeclareChannel, step: _Step) -> None:
        token = self._token = object()  # an answer after reset() is not this step's

        def done(error: BaseException | None) -> None:
            if token is self._token:
                self._step_done(channel, error)

        if step.kind == "exchange":
            assert step.exchange is not None
            channel.declare_exchange(step.exchange, step.passive, done)
        elif step.kind == "queue":
            assert step.queue is not None
            queue = for_broker(step.queue, channel.server_properties)
            channel.declare_queue(queue, step.passive, done)
        elif step.kind == "bind":
            assert step.queue is not None and step.exchange is not None
            channel.bind(step.queue.name, step.exchange.name, step.routing_key, done)
        else:
            assert step.queue is not None
            channel.delete_queue(step.queue.name, done)

    def _step_done(self, channel: DeclareChannel, error: BaseException | None) -> None:
        if not self._busy or not self._jobs:
            return  # reset() meanwhile: the job starts over
        self._busy = False
        job = self._jobs[0]
        if error is None:
            step = job.steps[job.index]
            if step.kind == "exchange" and step.exchange is not None \
                    and not step.exchange.auto_delete:
                self._exchanges.add(step.exchange.name)
            job.index += 1
        else:
            failure = self._refused(job, channel, error)
            if failure is not None:
                self._finish(job, failure)
        self._next()

    def _refused(self, job: _Job, channel: DeclareChannel,
                 error: BaseException) -> BaseException | None:
        """The refusal policy: ``None`` to go on (the step is retried), else the error."""
        step = job.steps[job.index]
        code, reason = channel.refusal(error)
        if code == PRECONDITION_FAILED and not step.passive \
                and step.kind in ("exchange", "queue"):
            if step.queue is not None:
                fatal = conflict_error(step.queue, reason)
                if fatal is not None:  # another queue type: what was asked for cannot hold
                    return _failure(fatal, error)
            if step.exchange is not None or step.queue is None or step.queue.arguments \
                    or not job.remember:
                LOG.warning("%s %r already exists with other properties or arguments than "
                            "polymsg asked for (%s); using it as it is, so a TTL hint given "
                            "here does not apply to it", step.kind, step.name, reason)
            else:
                LOG.debug("queue %r exists with other arguments; sending to it as it is (%s)",
                          step.name, reason)
            step.passive = True  # does it exist at all? (on a fresh channel)
            return None
        return _failure(f"RabbitMQ refused {step.describe()}: {reason}", error)

    def _finish(self, job: _Job, error: BaseException | None) -> None:
        self._jobs.popleft()
        self._by_key.pop(job.key, None)
        if error is None and isinstance(job.key, Route):
            self._routes.add(job.key)
        for callback in job.callbacks:
            try:
                callback(error)
            except Exception:  # one waiter's bug must not stop the others
                LOG.exception("error in a declaration callback")


def _failure(message: str, cause: BaseException) -> MessageDeliveryFailure:
    error = MessageDeliveryFailure(message)
    error.__cause__ = cause
    return error
