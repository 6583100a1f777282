"""Notification listener: endpoints named after the priorities they take."""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polymsg import _observe
from polymsg._exceptions import InvalidTarget, SerializationError
from polymsg._executor import UNDECODABLE, Runner
from polymsg._notifier import PRIORITIES
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import Target, check_name, check_notification_size, check_ttl
from polymsg._transport import Transport
from polymsg.driver import IncomingMessage, Listener

__all__ = [
    "BatchNotificationListener",
    "NotificationFilter",
    "NotificationListener",
    "NotificationResult",
    "get_batch_notification_listener",
    "get_notification_listener",
]

LOG = logging.getLogger(__name__)


class NotificationResult(str, enum.Enum):
    """What a listener endpoint returns: ``HANDLED`` (or ``None``) acknowledges,
    ``REQUEUE`` asks for redelivery (with ``allow_requeue=True``)."""

    HANDLED = "handled"
    REQUEUE = "requeue"


class NotificationFilter:
    """Regexes (``re.match``) a notification must satisfy to reach an endpoint.

    ``publisher_id`` and ``event_type`` are patterns; ``context`` and
    ``payload`` map keys to patterns, and each key must be present with a
    string value that matches.
    """

    def __init__(self, context: Mapping[str, str] | None = None,
                 publisher_id: str | None = None, event_type: str | None = None,
                 payload: Mapping[str, str] | None = None) -> None:
        self._context = {k: re.compile(v) for k, v in (context or {}).items()}
        self._publisher_id = re.compile(publisher_id) if publisher_id is not None else None
        self._event_type = re.compile(event_type) if event_type is not None else None
        self._payload = {k: re.compile(v) for k, v in (payload or {}).items()}

    def match(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any) -> bool:
        """True when the notification passes every pattern."""
        return (_single(self._publisher_id, publisher_id)
                and _single(self._event_type, event_type)
                and _mapping(self._context, ctxt)
                and _mapping(self._payload, payload))


def _single(pattern: re.Pattern[str] | None, value: Any) -> bool:
    return pattern is None or (isinstance(value, str) and pattern.match(value) is not None)


def _mapping(patterns: dict[str, re.Pattern[str]], data: Any) -> bool:
    if not patterns:
        return True
    if not isinstance(data, Mapping):
        return False
    return all(key in data and _single(p, data[key]) for key, p in patterns.items())


def _method_for(endpoint: Any, priority: str) -> Callable[..., Any] | None:
    for name in (priority, "warning") if priority == "warn" else (priority,):
        method = getattr(endpoint, name, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    return None


class NotificationListener(Runner):
    """Delivers notifications on ``targets`` to ``endpoints``
    (see :func:`get_notification_listener`)."""

    def __init__(self, transport: Transport, targets: Sequence[Target], endpoints: Sequence[Any],
                 *, executor: str = "threading", pool: str | None = None,
                 allow_requeue: bool = False, serializer: Serializer | None = None,
                 max_workers: int | None = None) -> None:
        super().__init__(transport, executor, max_workers)
        if isinstance(targets, Target) or not targets:
            raise InvalidTarget("a notification listener needs a non-empty list of targets")
        for target in targets:
            if not isinstance(target, Target) or not target.topic:
                raise InvalidTarget(f"a notification target needs a topic: {target!r}")
            check_notification_size(target.topic)
        if pool is not None:
            check_name("pool", pool)
        self.targets = [t.replace(exchange=t.exchange or transport.default_exchange)
                        for t in targets]
        self.pool = pool
        self.allow_requeue = allow_requeue
        self.serializer = serializer or NoOpSerializer()
        # priority -> [(endpoint, method, filter_rule)], resolved once, not per message
        self._routes: dict[str, list[tuple[Any, Callable[..., Any], Any]]] = {}
        for priority in PRIORITIES:
            for endpoint in endpoints:
                method = _method_for(endpoint, priority)
                if method is not None:
                    rule = getattr(endpoint, "filter_rule", None)
                    self._routes.setdefault(priority, []).append((endpoint, method, rule))
        self.priorities = list(self._routes)
        if not self.priorities:
            raise ValueError("no endpoint has a notification method "
                             f"({', '.join(PRIORITIES)})")

    def _check(self) -> None:
        self.transport.require("notify", "a notification listener")
        if self.pool is not None:
            self.transport.require("pools", "a listener pool")
        if self.allow_requeue:
            self.transport.require("requeue", "allow_requeue")

    def _listen(self) -> Listener:
        pairs = [(t, p) for t in self.targets for p in self.priorities]
        return self.transport._driver.listen_for_notifications(pairs, self.pool,
                                                               self._on_message)

    def _process(self, incoming: IncomingMessage) -> None:
        if not _observe.OBSERVERS:
            self._settle(incoming, self._dispatch(incoming)[0])
            return
        scope = self._observed(incoming)
        try:
            result, failure = self._dispatch(incoming)
            self._settle(incoming, result)
        except BaseException as exc:
            scope.close(exc)
            raise
        scope.close(failure)

    def _observed(self, incoming: IncomingMessage, batch: bool = False) -> _observe.Scope:
        """The observers' scope of one notification processed, entered."""
        message, wire_text = incoming.message, _observe.wire_text
        exchange, topic = _only({t.exchange for t in self.targets}), _only(
            {t.topic for t in self.targets})
        priority = wire_text(message.get("priority"))
        return _observe.receiving(_observe.Operation(
            "notification", _observe.system_of(self.transport), exchange, topic, None, None,
            None, wire_text(message.get("event_type")),
            priority.upper() if priority is not None else None, batch), incoming.ctxt)

    def _settle(self, incoming: IncomingMessage, result: NotificationResult) -> None:
        """Acknowledge, or requeue when asked to and allowed."""
        if result is NotificationResult.REQUEUE:
            if self.allow_requeue:
                incoming.requeue()
                return
            LOG.warning("an endpoint asked to requeue notification %s but allow_requeue "
                        "is off; acknowledging it", incoming.message.get("message_id"))
        incoming.acknowledge()

    def _user_message(self, incoming: IncomingMessage) -> tuple[str, dict[str, Any]]:
        """The priority (lower case) and what endpoints get of ``incoming``."""
        message = incoming.message
        ctxt = self.serializer.deserialize_context(incoming.ctxt)
        return str(message.get("priority", "")).lower(), {
            "ctxt": ctxt,
            "publisher_id": message.get("publisher_id"),
            "event_type": message.get("event_type"),
            "payload": self.serializer.deserialize_entity(ctxt, message.get("payload")),
            "metadata": {"message_id": message.get("message_id"),
                         "timestamp": message.get("timestamp")},
        }

    def _dispatch(self, incoming: IncomingMessage
                  ) -> tuple[NotificationResult, Exception | None]:
        """What the endpoints asked for, and the last exception one raised (logged)."""
        result, failure = NotificationResult.HANDLED, None
        for endpoint, method, args in self._deliveries(incoming):
            try:
                outcome = method(*args)
            except Exception as exc:
                _log_endpoint_failure(endpoint, args)
                failure = exc
                continue
            if outcome == NotificationResult.REQUEUE:
                result = NotificationResult.REQUEUE
        return result, failure

    def _deliveries(self, incoming: IncomingMessage
                    ) -> list[tuple[Any, Callable[..., Any], tuple[Any, ...]]]:
        """(endpoint, method, arguments) for each endpoint whose filter takes the message."""
        priority, user = self._user_message(incoming)
        publisher_id, event_type, payload = (user["publisher_id"], user["event_type"],
                                             user["payload"])
        args = (user["ctxt"], publisher_id, event_type, payload, user["metadata"])
        routes = self._routes.get(priority, ())
        return [(endpoint, method, args) for endpoint, method, rule in routes
                if rule is None or rule.match(incoming.ctxt, publisher_id, event_type, payload)]


def _only(values: set[str | None]) -> str | None:
    """The one value of ``values``; ``None`` when there are several."""
    return next(iter(values)) if len(values) == 1 else None


def _log_endpoint_failure(endpoint: Any, args: tuple[Any, ...]) -> None:
    LOG.exception("notification endpoint %r failed on %s", endpoint, args[-1]["message_id"])


def get_notification_listener(transport: Transport, targets: Sequence[Target],
                              endpoints: Sequence[Any], *, executor: str = "threading",
                              pool: str | None = None, allow_requeue: bool = False,
                              serializer: Serializer | None = None,
                              max_workers: int | None = None) -> NotificationListener:
    """A listener delivering notifications for ``targets`` to ``endpoints``.

    Endpoint methods are named after priorities (``info(ctxt, publisher_id,
    event_type, payload, metadata)``). Listeners sharing a ``pool`` (or all
    with ``None``) split the stream; each distinct pool gets every message.
    """
    return NotificationListener(transport, targets, endpoints, executor=executor, pool=pool,
                                allow_requeue=allow_requeue, serializer=serializer,
                                max_workers=max_workers)


class BatchNotificationListener(NotificationListener):
    """Delivers notifications to ``endpoints`` in batches
    (see :func:`get_batch_notification_listener`)."""

    def __init__(self, transport: Transport, targets: Sequence[Target], endpoints: Sequence[Any],
                 *, batch_size: int | None = None, batch_timeout: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(transport, targets, endpoints, **kwargs)
        size = 1 if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = size
        self.batch_timeout = check_ttl("batch_timeout", batch_timeout)
        self._batch: list[IncomingMessage] = []
        self._batch_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def _on_message(self, incoming: IncomingMessage) -> None:
        full = None
        with self._batch_lock:
            self._batch.append(incoming)
            if len(self._batch) >= self.batch_size:
                full = self._take()
            elif len(self._batch) == 1 and self.batch_timeout is not None:
                self._timer = threading.Timer(self.batch_timeout, self._flush)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self._submit(full)

    def _take(self) -> list[IncomingMessage]:
        """The waiting batch, emptied (lock held)."""
        batch, self._batch = self._batch, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return batch

    def _flush(self) -> None:
        with self._batch_lock:
            batch = self._take()
        if batch:
            self._submit(batch)

    def _submit(self, batch: list[IncomingMessage]) -> None:
        pool = self._pool
        if pool is None:  # stopped meanwhile: give them back, never lose them
            for incoming in batch:
                incoming.requeue()
            return
        pool.submit(batch)

    def stop(self) -> None:
        """Stop taking messages; a partial batch is handed to the endpoints now."""
        super().stop()
        self._flush()

    def _process(self, batch: Any) -> None:
        by_priority: dict[str, list[tuple[IncomingMessage, dict[str, Any]]]] = {}
        for incoming in batch:
            try:
                priority, user = self._user_message(incoming)
            except SerializationError as exc:
                UNDECODABLE.log("dropped a notification that cannot be decoded: %s", exc)
                incoming.acknowledge()
                continue
            by_priority.setdefault(priority, []).append((incoming, user))
        for priority, items in by_priority.items():
            if not _observe.OBSERVERS:
                result = self._dispatch_batch(priority, items)[0]
            else:
                result = self._dispatch_observed(priority, items)
            if result is NotificationResult.REQUEUE:
                if self.allow_requeue:
                    for incoming, _ in items:
                        incoming.requeue()
                    continue
                LOG.warning("an endpoint asked to requeue a batch of %d notification(s) but "
                            "allow_requeue is off; acknowledging them", len(items))
            for incoming, _ in items:
                incoming.acknowledge()

    def _dispatch_observed(self, priority: str,
                           items: list[tuple[IncomingMessage, dict[str, Any]]]
                           ) -> NotificationResult:
        """:meth:`_dispatch_batch` inside one observers' scope per notification."""
        scopes = [self._observed(incoming, batch=True) for incoming, _ in items]
        try:
            result, failure = self._dispatch_batch(priority, items)
        except BaseException as exc:
            for scope in reversed(scopes):
                scope.close(exc)
            raise
        for scope in reversed(scopes):
            scope.close(failure)
        return result

    def _dispatch_batch(self, priority: str,
                        items: list[tuple[IncomingMessage, dict[str, Any]]]
                        ) -> tuple[NotificationResult, Exception | None]:
        """What the endpoints asked for, and the last exception one raised (logged)."""
        failure = None
        for endpoint, method, rule in self._routes.get(priority, ()):
            messages = [user for incoming, user in items
                        if rule is None or rule.match(incoming.ctxt, user["publisher_id"],
                                                      user["event_type"], user["payload"])]
            if not messages:
                continue
            try:
                outcome = method(messages)
            except Exception as exc:
                LOG.exception("batch notification endpoint %r failed on %d notification(s)",
                              endpoint, len(messages))
                failure = exc
                continue
            if outcome == NotificationResult.REQUEUE:
                return NotificationResult.REQUEUE, failure
        return NotificationResult.HANDLED, failure


def get_batch_notification_listener(
        transport: Transport, targets: Sequence[Target], endpoints: Sequence[Any], *,
        executor: str = "threading", batch_size: int | None = None,
        batch_timeout: float | None = None, pool: str | None = None,
        allow_requeue: bool = False, serializer: Serializer | None = None,
        max_workers: int | None = None) -> BatchNotificationListener:
    """A listener handing notifications to ``endpoints`` in batches.

    Each priority method is called once per batch with a list of message
    dicts ``{"ctxt", "publisher_id", "event_type", "payload", "metadata"}``
    (oslo.messaging's shape), e.g. ``info(self, messages)``. A batch is
    handed over when ``batch_size`` notifications (default 1) have arrived,
    or ``batch_timeout`` seconds after its first one (``None``: only when
    full), and when the listener stops. Returning
    :attr:`NotificationResult.REQUEUE` requeues the whole batch of that
    priority (with ``allow_requeue=True``).
    """
    return BatchNotificationListener(
        transport, targets, endpoints, batch_size=batch_size, batch_timeout=batch_timeout,
        executor=executor, pool=pool, allow_requeue=allow_requeue, serializer=serializer,
        max_workers=max_workers)
