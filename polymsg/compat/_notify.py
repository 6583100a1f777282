"""oslo.messaging's Notifier (drivers chosen by name) and logging handler."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

import polymsg
from polymsg._json import dumps_str, to_primitive
from polymsg._notifier import LoggingNotificationHandler as _Handler
from polymsg._notifier import timestamp
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._transport import Transport
from polymsg.compat._options import notification_settings

__all__ = ["LoggingNotificationHandler", "Notifier"]

LOG = logging.getLogger("polymsg.compat.oslo_messaging")

#: Driver names that publish on the transport (both send the 2.0 envelope).
_MESSAGING = {"messaging", "messagingv2"}
_LOGGER_BASE = "oslo.messaging.notification"
_MARKER: Any = object()


def _safe_context(ctxt: Any) -> Any:
    """oslo.messaging's notifier sends a context only as a redacted copy of a
    request context object; a plain dict (or None) becomes ``{}``."""
    if ctxt is None or type(ctxt) is dict:
        return {}
    try:
        return ctxt.redacted_copy()
    except AttributeError:
        LOG.warning("cannot redact a %s context; the notification is sent without it",
                    type(ctxt).__name__)
        return {}


class Notifier:
    """oslo.messaging's Notifier: ``driver`` (or ``[oslo_messaging_notifications]
    driver``) names where notifications go: ``messaging``/``messagingv2``
    (the transport), ``log`` (Python logging), ``noop``; none configured means
    nothing is sent, as in oslo.messaging."""

    def __init__(self, transport: Transport, publisher_id: str | None = None,
                 driver: str | Sequence[str] | None = None,
                 serializer: Serializer | None = None, retry: int | None = None,
                 topics: Sequence[str] | None = None) -> None:
        settings = notification_settings(transport.conf)
        drivers = settings["driver"] if driver is None else (
            [driver] if isinstance(driver, str) else list(driver))
        unknown = set(drivers) - _MESSAGING - {"log", "noop"}
        if unknown:
            LOG.warning("notification driver(s) %s not available in polymsg; ignored",
                        ", ".join(sorted(unknown)))
        self.transport = transport
        self.publisher_id = publisher_id
        self.retry = settings["retry"] if retry is None else (None if retry < 0 else retry)
        self.topics = list(settings["topics"] if topics is None else topics)
        self._serializer = serializer or NoOpSerializer()
        self._drivers = [d for d in drivers if d in _MESSAGING or d == "log"]
        self._send = any(d in _MESSAGING for d in self._drivers)
        self._log = "log" in self._drivers
        self._notifier: polymsg.Notifier | None = None
        if self._send:
            self._notifier = polymsg.Notifier(transport, publisher_id or "",
                                              topics=self.topics, retry=self.retry)

    def prepare(self, publisher_id: Any = _MARKER, retry: Any = _MARKER) -> Notifier:
        """A notifier like this one with another ``publisher_id`` or ``retry``."""
        copy = object.__new__(Notifier)
        copy.__dict__.update(self.__dict__)
        if publisher_id is not _MARKER:
            copy.publisher_id = publisher_id
        if retry is not _MARKER:
            copy.retry = None if retry is None or retry < 0 else retry
        if self._notifier is not None:
            copy._notifier = self._notifier.prepare(publisher_id=copy.publisher_id or "",
                                                    retry=copy.retry)
        return copy

    def is_enabled(self) -> bool:
        """False when notifications go nowhere (no driver, or only ``noop``)."""
        return bool(self._drivers)

    def _notify(self, ctxt: Any, event_type: str, payload: Any, priority: str) -> None:
        if not self._drivers:
            return
        payload = self._serializer.serialize_entity(ctxt, payload)
        wire_ctxt = self._serializer.serialize_context(_safe_context(ctxt))
        if self._notifier is not None:
            try:
                getattr(self._notifier, priority.lower())(wire_ctxt, event_type, payload)
            except polymsg.MessagingError:
                LOG.exception("could not send notification %s", event_type)
        if self._log:
            self._to_log(event_type, payload, priority)

    def _to_log(self, event_type: str, payload: Any, priority: str) -> None:
        logger = logging.getLogger(f"{_LOGGER_BASE}.{event_type}")
        method = getattr(logger, priority.lower(), None)
        if method is not None:
            method(dumps_str(to_primitive({
                "publisher_id": self.publisher_id, "event_type": event_type,
                "priority": priority, "payload": payload, "timestamp": timestamp()})))

    def audit(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at AUDIT priority."""
        self._notify(ctxt, event_type, payload, "AUDIT")

    def debug(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at DEBUG priority."""
        self._notify(ctxt, event_type, payload, "DEBUG")

    def info(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at INFO priority."""
        self._notify(ctxt, event_type, payload, "INFO")

    def warn(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at WARN priority."""
        self._notify(ctxt, event_type, payload, "WARN")

    warning = warn

    def error(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at ERROR priority."""
        self._notify(ctxt, event_type, payload, "ERROR")

    def critical(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at CRITICAL priority."""
        self._notify(ctxt, event_type, payload, "CRITICAL")

    def sample(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send at SAMPLE priority."""
        self._notify(ctxt, event_type, payload, "SAMPLE")


class LoggingNotificationHandler(_Handler):
    """oslo.messaging's logging handler: ``LoggingNotificationHandler(url,
    publisher_id=None, driver=None, topic=None, serializer=None)``, reading
    the global ``cfg.CONF`` as oslo.messaging does."""

    CONF = cfg.CONF

    def __init__(self, url: str, publisher_id: str | None = None,
                 driver: str | Sequence[str] | None = None, topic: Any = None,
                 serializer: Any = None) -> None:
        from polymsg.compat.oslo_messaging import get_notification_transport

        transport = get_notification_transport(self.CONF, url)
        topics = topic if isinstance(topic, list) or topic is None else [topic]
        notifier = Notifier(transport, publisher_id, driver=driver,
                            serializer=serializer() if serializer else None, topics=topics)
        super().__init__(notifier)  # type: ignore[arg-type]
