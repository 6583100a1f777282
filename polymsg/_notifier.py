"""Notifier: events with a priority and an event type, published on topics."""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any

from polymsg import _observe
from polymsg._exceptions import InvalidTarget
from polymsg._json import to_primitive
from polymsg._rpc_client import _guard, _result, _send
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import (
    Target,
    check_context,
    check_name,
    check_notification_size,
    check_ttl,
)
from polymsg._transport import Transport
from polymsg.driver import SendOptions

__all__ = ["PRIORITIES", "LoggingNotificationHandler", "Notifier", "timestamp"]

#: Listener method name -> priority on the wire.
PRIORITIES = {
    "audit": "AUDIT", "debug": "DEBUG", "info": "INFO", "warn": "WARN",
    "error": "ERROR", "critical": "CRITICAL", "sample": "SAMPLE",
}

_UNSET: Any = object()


def timestamp() -> str:
    """Now, in UTC, as notifications carry it: ``"2026-01-01 12:00:00.123456"``
    (oslo.messaging's form: a space between date and time, no offset, the
    microseconds left out when they are zero)."""
    return str(datetime.now(timezone.utc).replace(tzinfo=None))


class Notifier:
    """Publishes notifications as ``publisher_id`` on each of ``topics``.

    One method per priority, each ``(ctxt, event_type, payload)``. A
    notification is routed as ``<topic>.<priority>``; ``message_ttl`` drops
    it if no listener took it in time. Sending errors are raised
    (:class:`~polymsg.MessageDeliveryFailure`), never swallowed.
    """

    def __init__(self, transport: Transport, publisher_id: str, *,
                 topics: Sequence[str] = ("notifications",),
                 serializer: Serializer | None = None, retry: int | None = None,
                 message_ttl: float | None = None) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        check_name("publisher_id", publisher_id)
        self.transport = transport
        self.publisher_id = publisher_id
        self.topics = tuple(topics)
        self.serializer = serializer or NoOpSerializer()
        self.retry = retry
        self.message_ttl = check_ttl("message_ttl", message_ttl)
        self._options = SendOptions(retry=retry, message_ttl=self.message_ttl)
        exchange = transport.default_exchange
        try:
            self._targets = [Target(topic=t, exchange=exchange) for t in self.topics]
            for topic in self.topics:
                check_notification_size(topic)
        except InvalidTarget as exc:
            raise InvalidTarget(f"invalid notification topic: {exc}") from None

    def prepare(self, *, publisher_id: str = _UNSET, topics: Sequence[str] = _UNSET,
                retry: int | None = _UNSET, message_ttl: float | None = _UNSET) -> Notifier:
        """A notifier like this one with the given fields changed."""
        return Notifier(
            self.transport,
            self.publisher_id if publisher_id is _UNSET else publisher_id,
            topics=self.topics if topics is _UNSET else topics,
            serializer=self.serializer,
            retry=self.retry if retry is _UNSET else retry,
            message_ttl=self.message_ttl if message_ttl is _UNSET else message_ttl,
        )

    def audit(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at AUDIT priority."""
        self._notify(ctxt, event_type, payload, "AUDIT")

    def debug(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at DEBUG priority."""
        self._notify(ctxt, event_type, payload, "DEBUG")

    def info(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at INFO priority."""
        self._notify(ctxt, event_type, payload, "INFO")

    def warn(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at WARN priority (listeners' ``warn`` method)."""
        self._notify(ctxt, event_type, payload, "WARN")

    warning = warn

    def error(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at ERROR priority."""
        self._notify(ctxt, event_type, payload, "ERROR")

    def critical(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at CRITICAL priority."""
        self._notify(ctxt, event_type, payload, "CRITICAL")

    def sample(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at SAMPLE priority."""
        self._notify(ctxt, event_type, payload, "SAMPLE")

    def _notify(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any,
                priority: str) -> None:
        for future in self._send(ctxt, event_type, payload, priority):
            _result(future, None)

    def _send(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any,
              priority: str) -> Iterator[Future[None]]:
        """Publish on each topic in turn, yielding each send's future; the caller
        waits for it (sync or async) before asking for the next."""
        transport = self.transport
        transport.require("notify", "a notifier")
        if self.message_ttl is not None:
            transport.require("message_ttl", "message_ttl")
        if not isinstance(event_type, str) or not event_type:
            raise InvalidTarget(f"event_type must be a non-empty string, got {event_type!r}")
        wire_ctxt = to_primitive(check_context(
            self.serializer.serialize_context({} if ctxt is None else ctxt)), "context")
        message = {
            "message_id": str(uuid.uuid4()),
            "publisher_id": self.publisher_id,
            "event_type": event_type,
            "priority": priority,
            "payload": to_primitive(self.serializer.serialize_entity(wire_ctxt, payload),
                                    "payload"),
            "timestamp": timestamp(),
        }
        options, driver = self._options, transport._driver
        if _observe.OBSERVERS:
            yield from self._send_observed(wire_ctxt, message)
            return
        for target in self._targets:
            yield _guard(lambda t=target: driver.notify(t, wire_ctxt, message, options))

    def _send_observed(self, wire_ctxt: dict[str, Any], message: dict[str, Any]
                       ) -> Iterator[Future[None]]:
        """:meth:`_send` with observers: one scope per topic, each with its own
        copy of the context (observers add their trace context to it)."""
        options, driver = self._options, self.transport._driver
        system = _observe.system_of(self.transport)
        for target in self._targets:
            ctxt = dict(wire_ctxt)
            scope = _observe.sending(_observe.Operation(
                "notify", system, target.exchange, target.topic, None, None, None,
                message["event_type"], message["priority"]), ctxt)
            future: Future[None] = _send(scope, lambda t=target, c=ctxt: driver.notify(
                t, c, message, options))
            future.add_done_callback(scope.close_with)
            yield future


class LoggingNotificationHandler(logging.Handler):
    """A :mod:`logging` handler sending each record as a notification.

    A record at level ``ERROR`` goes out as ``notifier.error(ctxt={},
    event_type="logrecord", payload)``, and so on for every level that has a
    :class:`Notifier` method (``CRITICAL``, ``ERROR``, ``WARNING``, ``INFO``,
    ``DEBUG``); records of other levels are skipped. The payload is
    oslo.messaging's: ``name``, ``levelno``, ``levelname``, ``exc_info``
    (the formatted traceback, or ``None``), ``pathname``, ``lineno``,
    ``msg`` (the formatted message), ``funcName``, ``thread``,
    ``processName``, ``process`` and ``extra`` (the record's ``extra``
    attribute, if any).

    Records logged while a notification is being sent by this handler (by
    the transport itself) are not sent again. A failure to send is reported
    through :meth:`logging.Handler.handleError`, never raised into the code
    that logged.
    """

    def __init__(self, notifier: Notifier, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.notifier = notifier
        self._sending = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        method = getattr(self.notifier, record.levelname.lower(), None)
        if method is None or getattr(self._sending, "active", False):
            return
        self._sending.active = True
        try:
            method({}, "logrecord", self._payload(record))
        except Exception:
            self.handleError(record)
        finally:
            self._sending.active = False

    def _payload(self, record: logging.LogRecord) -> dict[str, Any]:
        exc_info = None
        if record.exc_info:
            exc_info = "".join(traceback.format_exception(*record.exc_info))
        return {
            "name": record.name,
            "levelno": record.levelno,
            "levelname": record.levelname,
            "exc_info": exc_info,
            "pathname": record.pathname,
            "lineno": record.lineno,
            "msg": record.getMessage(),
            "funcName": record.funcName,
            "thread": record.thread,
            "processName": record.processName,
            "process": record.process,
            "extra": getattr(record, "extra", None),
        }
