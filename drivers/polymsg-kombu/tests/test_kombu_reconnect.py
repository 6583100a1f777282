"""The broker drops every connection in the middle of a stream of casts."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kombutest import rabbitmqctl

import polymsg

WAIT = 30.0


class Counter:
    """Values executed by the server, and values the client saw confirmed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[Any] = []

    def add(self, value: Any) -> None:
        with self.cond:
            self.items.append(value)
            self.cond.notify_all()

    def wait_len(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, WAIT), \
                f"only {len(self.items)} of {count}"


class Endpoint:
    def __init__(self, executed: Counter) -> None:
        self.executed = executed

    def note(self, ctxt: Any, value: int) -> None:
        self.executed.add(value)

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


def test_casts_survive_the_broker_closing_all_connections(rabbit_url: str,
                                                          vhost: str | None) -> None:
    if vhost is None:
        pytest.skip("needs a virtual host of its own (set POLYMSG_TEST_RABBITMQCTL)")
    executed, confirmed = Counter(), Counter()
    stop = threading.Event()
    failures: list[BaseException] = []
    with polymsg.get_transport(rabbit_url) as server_side, \
            polymsg.get_transport(rabbit_url) as client_side:
        target = polymsg.Target(topic="reconnect", server="s1")
        polymsg.get_rpc_server(server_side, target, [Endpoint(executed)]).start()
        client = polymsg.RPCClient(client_side, polymsg.Target(topic="reconnect"), timeout=WAIT)

        def stream() -> None:
            value = 0
            while not stop.is_set():
                try:
                    client.cast({}, "note", value=value)
                except BaseException as exc:  # recorded: the test fails on it
                    failures.append(exc)
                    return
                confirmed.add(value)
                value += 1

        sender = threading.Thread(target=stream)
        sender.start()
        try:
            executed.wait_len(50)
            rabbitmqctl("close_all_connections", "--vhost", vhost, "polymsg reconnect test")
            after_close = len(confirmed.items)
            confirmed.wait_len(after_close + 200)  # the stream goes on by itself
        finally:
            stop.set()
            sender.join(WAIT)
        assert not failures, failures
        # Every cast the client saw confirmed runs (some twice: at least once).
        sent = set(confirmed.items)
        with executed.cond:
            assert executed.cond.wait_for(lambda: sent <= set(executed.items), WAIT), \
                f"lost: {sorted(sent - set(executed.items))[:20]}"
        assert client.call({}, "echo", value="after") == "after"
        # Both sides really lost (and re-established) their connections.
        assert client_side._driver.publisher.link.connects >= 2
        assert server_side._driver.consumer.link.connects >= 2


def test_calls_made_one_at_a_time_survive_lost_connections(rabbit_url: str,
                                                           vhost: str | None) -> None:
    # Callers calling one at a time read their replies themselves; the reply
    # connection dropping under them must not strand a call.
    if vhost is None:
        pytest.skip("needs a virtual host of its own (set POLYMSG_TEST_RABBITMQCTL)")
    with polymsg.get_transport(rabbit_url) as transport:
        target = polymsg.Target(topic="reconnect-calls", server="s1")
        polymsg.get_rpc_server(transport, target, [Endpoint(Counter())]).start()
        client = polymsg.RPCClient(transport, polymsg.Target(topic="reconnect-calls"),
                                   timeout=WAIT)
        for value in range(10):
            assert client.call({}, "echo", value=value) == value
        rabbitmqctl("close_all_connections", "--vhost", vhost, "polymsg reconnect test")
        for value in range(10):
            assert client.call({}, "echo", value=value) == value
        assert transport._driver.replies.link.connects >= 2
