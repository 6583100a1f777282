"""Notification listener: endpoints named after the priorities they take."""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polymsg._exceptions import InvalidTarget
from polymsg._executor import Runner
from polymsg._notifier import PRIORITIES
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import Target
from polymsg._transport import Transport
from polymsg.driver import IncomingMessage, Listener

__all__ = [
    "NotificationFilter",
    "NotificationListener",
    "NotificationResult",
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
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise InvalidTarget(f"pool must be None or a non-empty string, got {pool!r}")
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
        self._settle(incoming, self._dispatch(incoming))

    def _settle(self, incoming: IncomingMessage, result: NotificationResult) -> None:
        """Acknowledge, or requeue when asked to and allowed."""
        if result is NotificationResult.REQUEUE:
            if self.allow_requeue:
                incoming.requeue()
                return
            LOG.warning("an endpoint asked to requeue notification %s but allow_requeue "
                        "is off; acknowledging it", incoming.message.get("message_id"))
        incoming.acknowledge()

    def _dispatch(self, incoming: IncomingMessage) -> NotificationResult:
        result = NotificationResult.HANDLED
        for endpoint, method, args in self._deliveries(incoming):
            try:
                outcome = method(*args)
            except Exception:
                _log_endpoint_failure(endpoint, args)
                continue
            if outcome == NotificationResult.REQUEUE:
                result = NotificationResult.REQUEUE
        return result

    def _deliveries(self, incoming: IncomingMessage
                    ) -> list[tuple[Any, Callable[..., Any], tuple[Any, ...]]]:
        """(endpoint, method, arguments) for each endpoint whose filter takes the message."""
        message = incoming.message
        priority = str(message.get("priority", "")).lower()
        ctxt = self.serializer.deserialize_context(incoming.ctxt)
        publisher_id, event_type = message.get("publisher_id"), message.get("event_type")
        payload = self.serializer.deserialize_entity(ctxt, message.get("payload"))
        metadata = {"message_id": message.get("message_id"),
                    "timestamp": message.get("timestamp")}
        args = (ctxt, publisher_id, event_type, payload, metadata)
        routes = self._routes.get(priority, ())
        return [(endpoint, method, args) for endpoint, method, rule in routes
                if rule is None or rule.match(incoming.ctxt, publisher_id, event_type, payload)]


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
