"""Pure-logic oslo.messaging behaviours: endpoint targets, the logging handler."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import polymsg


@pytest.fixture
def transport() -> Iterator[polymsg.Transport]:
    with polymsg.get_transport("memory://oslo-behaviours") as made:
        yield made


def test_endpoint_target_that_is_not_a_target_is_a_type_error(
        transport: polymsg.Transport) -> None:
    class Endpoint:
        target = {"version": "1.0"}

    with pytest.raises(TypeError, match=r"not a polymsg\.Target") as caught:
        polymsg.get_rpc_server(transport, polymsg.Target(topic="t", server="s"), [Endpoint()])
    assert isinstance(caught.value, polymsg.InvalidTarget)


class _Listener:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, Any]] = []
        self.arrived = threading.Event()

    def _add(self, priority: str, event_type: str, payload: Any) -> None:
        self.got.append((priority, event_type, payload))
        self.arrived.set()

    def error(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
              metadata: Any) -> None:
        self._add("error", event_type, payload)

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self._add("info", event_type, payload)


def test_logging_handler_sends_records_as_notifications(transport: polymsg.Transport) -> None:
    endpoint = _Listener()
    listener = polymsg.get_notification_listener(
        transport, [polymsg.Target(topic="logs")], [endpoint])
    notifier = polymsg.Notifier(transport, "svc.host1", topics=["logs"])
    handler = polymsg.LoggingNotificationHandler(notifier)
    log = logging.getLogger("test.oslo.logging_handler")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    with listener:
        try:
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("instance %s failed", "i-1")
            assert endpoint.arrived.wait(30)
        finally:
            log.removeHandler(handler)
    [(priority, event_type, payload)] = endpoint.got
    assert (priority, event_type) == ("error", "logrecord")
    assert payload["msg"] == "instance i-1 failed"
    assert payload["levelname"] == "ERROR" and payload["name"] == log.name
    assert "ValueError: boom" in payload["exc_info"]
    assert set(payload) == {"name", "levelno", "levelname", "exc_info", "pathname", "lineno",
                            "msg", "funcName", "thread", "processName", "process", "extra"}


def test_logging_handler_does_not_send_its_own_sending_logs(
        transport: polymsg.Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = polymsg.Notifier(transport, "svc", topics=["logs-loop"])
    handler = polymsg.LoggingNotificationHandler(notifier)
    sent: list[str] = []
    original = notifier.info

    def info(ctxt: Any, event_type: str, payload: Any) -> None:
        sent.append(payload["msg"])
        logging.getLogger("test.loop").info("sending %s", payload["msg"])  # re-enters
        original(ctxt, event_type, payload)

    monkeypatch.setattr(notifier, "info", info)
    loop = logging.getLogger("test.loop")
    loop.addHandler(handler)
    loop.setLevel(logging.INFO)
    loop.propagate = False
    try:
        loop.info("first")
    finally:
        loop.removeHandler(handler)
    assert sent == ["first"]
