"""A notification an endpoint keeps requeueing stops at the quorum queue's delivery limit."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest

import polymsg

from .conftest import DRIVERS, OPTION_SETS, broker_url

WAIT = 30.0
LIMIT = 2


class AlwaysRequeue:
    def __init__(self) -> None:
        self.count = 0
        self.grew = threading.Condition()

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> polymsg.NotificationResult:
        with self.grew:
            self.count += 1
            self.grew.notify_all()
        return polymsg.NotificationResult.REQUEUE


class Notes(logging.Handler):
    """Warnings about the delivery limit, with an event for the first one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.texts: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "past the queue's delivery limit" in record.getMessage():
            self.texts.append(record.getMessage())
            self.seen.set()


@pytest.mark.parametrize("driver", DRIVERS)
def test_requeue_past_the_delivery_limit_is_logged_with_the_message_id(
        driver: str, vhost: str) -> None:
    notes = Notes()
    logging.getLogger().addHandler(notes)
    try:
        _poison(driver, vhost, notes)
    finally:
        logging.getLogger().removeHandler(notes)


def _poison(driver: str, vhost: str, notes: Notes) -> None:
    topic = f"limit-{uuid.uuid4().hex[:8]}"
    query = f"{OPTION_SETS['quorum']}&rabbit_quorum_delivery_limit={LIMIT}"
    endpoint = AlwaysRequeue()
    with polymsg.get_transport(broker_url(driver, vhost, query)) as transport:
        listener = polymsg.get_notification_listener(
            transport, [polymsg.Target(topic=topic)], [endpoint], allow_requeue=True)
        with listener:
            polymsg.Notifier(transport, "p", topics=(topic,)).info({}, "poison", 1)
            with endpoint.grew:
                # The first delivery and LIMIT returns: then RabbitMQ drops it.
                assert endpoint.grew.wait_for(lambda: endpoint.count >= LIMIT + 1, WAIT)
            assert notes.seen.wait(WAIT)
            text = notes.texts[0]
            assert f"'{topic}.info'" in text and "message ?" not in text, text
            # Dropped: no further delivery comes.
            with endpoint.grew:
                assert not endpoint.grew.wait_for(lambda: endpoint.count > LIMIT + 1, 3.0)
