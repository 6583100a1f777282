"""Garbage from the wire, or requests nobody can serve, never become a log flood:
the facade logs a few of them per interval and counts the rest."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import polymsg
from polymsg import _executor, _rpc_server

FLOOD = 2_000


class _Ping:
    def ping(self, ctxt: Any) -> str:
        return "pong"


@pytest.fixture
def server() -> Any:
    with polymsg.get_transport("memory://log-flood") as transport:
        target = polymsg.Target(topic="flood", server="s1")
        with polymsg.get_rpc_server(transport, target, [_Ping()]) as running:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="flood"), timeout=10)
            yield running, client


def test_a_flood_of_calls_to_unknown_methods_logs_a_few_lines(
        server: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, client = server
    before = _rpc_server._BAD_REQUESTS.total
    caplog.set_level(logging.WARNING, logger="polymsg")
    for _ in range(FLOOD):
        with pytest.raises(polymsg.NoSuchMethod):
            client.call({}, "missing")
    assert _rpc_server._BAD_REQUESTS.total - before == FLOOD
    lines = [r for r in caplog.records if "cannot dispatch" in r.getMessage()]
    assert len(lines) <= 2 * _rpc_server._BAD_REQUESTS.burst
    assert client.call({}, "ping") == "pong"  # and the server still serves


class _Garbage:
    """An incoming message whose body cannot be decoded (a driver decodes lazily)."""

    ctxt: dict[str, Any] = {}

    def __init__(self) -> None:
        self.acknowledged = False

    def acknowledge(self) -> None:
        self.acknowledged = True

    @property
    def message(self) -> dict[str, Any]:
        raise polymsg.SerializationError("not JSON: b'\\xff\\xfe'")


def test_a_flood_of_undecodable_messages_logs_a_few_lines(
        server: Any, caplog: pytest.LogCaptureFixture) -> None:
    running, client = server
    before = _executor.UNDECODABLE.total
    caplog.set_level(logging.WARNING, logger="polymsg")
    garbage = [_Garbage() for _ in range(FLOOD)]
    for incoming in garbage:
        running._safe_process(incoming)
    assert all(incoming.acknowledged for incoming in garbage)  # dropped, not redelivered
    assert _executor.UNDECODABLE.total - before == FLOOD
    lines = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(lines) <= 2 * _executor.UNDECODABLE.burst
    assert client.call({}, "ping") == "pong"
