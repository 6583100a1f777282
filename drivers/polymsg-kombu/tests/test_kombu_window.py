"""The confirm window: casts return before their confirm, and none is lost."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from kombutest import raw_channel

import polymsg
from polymsg.testing import Recorder

WAIT = 30.0


class Endpoint:
    def __init__(self, calls: Recorder) -> None:
        self.calls = calls

    def note(self, ctxt: Any, value: Any) -> None:
        self.calls.add(value)


@pytest.fixture
def topic() -> str:
    return f"window-{uuid.uuid4().hex[:12]}"


def test_a_burst_of_casts_is_delivered_once_each_after_cleanup(rabbit_url: str,
                                                               topic: str) -> None:
    count = 2000
    calls = Recorder()
    with polymsg.get_transport(rabbit_url) as server_side:
        target = polymsg.Target(topic=topic, server="s1")
        polymsg.get_rpc_server(server_side, target, [Endpoint(calls)]).start()
        with polymsg.get_transport(rabbit_url) as client_side:
            client = polymsg.RPCClient(client_side, polymsg.Target(topic=topic))
            for value in range(count):
                client.cast({}, "note", value=value)
            publisher = client_side._driver.publisher  # type: ignore[attr-defined]
        # Leaving the client's transport waited for every confirm.
        assert publisher.window.in_flight == 0
        executed = calls.wait_for_count(count, WAIT)
    assert Counter(executed) == Counter(range(count))


def test_the_window_bounds_unconfirmed_casts(rabbit_url: str, topic: str) -> None:
    calls = Recorder()
    threads, each, size = 4, 100, 2
    with polymsg.get_transport(rabbit_url) as server_side, \
            polymsg.get_transport(f"{rabbit_url}?confirm_window={size}") as client_side:
        polymsg.get_rpc_server(server_side, polymsg.Target(topic=topic, server="s1"),
                               [Endpoint(calls)]).start()
        client = polymsg.RPCClient(client_side, polymsg.Target(topic=topic))
        window = client_side._driver.publisher.window  # type: ignore[attr-defined]
        seen: list[int] = []

        def send(first: int) -> None:
            for value in range(first, first + each):
                client.cast({}, "note", value=value)
                seen.append(window.in_flight)

        workers = [threading.Thread(target=send, args=(n * each,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)
        assert max(seen) <= size
        executed = calls.wait_for_count(threads * each, WAIT)
    assert sorted(executed) == list(range(threads * each))


def test_a_refused_cast_is_logged_with_its_id(rabbit_url: str, topic: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    # A full queue refusing further messages makes RabbitMQ confirm them
    # negatively. (polymsg, finding the queue declared with other arguments,
    # warns and uses it as it is.)
    with raw_channel(rabbit_url) as channel:
        channel.queue_declare(topic, durable=True, arguments={"x-max-length": 1,
                                                              "x-overflow": "reject-publish"})
    caplog.set_level(logging.WARNING, logger="polymsg")  # the shared window logs it
    try:
        with polymsg.get_transport(rabbit_url) as windowed, \
                polymsg.get_transport(f"{rabbit_url}?confirm_window=0") as strict:
            client = polymsg.RPCClient(windowed, polymsg.Target(topic=topic))
            client.cast({}, "note", value="fills the queue")
            client.cast({}, "note", value="refused")  # returns: its confirm comes later
            # Without a window the refusal is the caller's.
            with pytest.raises(polymsg.MessageDeliveryFailure, match=r"basic\.nack"):
                polymsg.RPCClient(strict, polymsg.Target(topic=topic)).cast(
                    {}, "note", value="refused too")
    finally:
        with raw_channel(rabbit_url) as channel:
            channel.queue_delete(topic)
    # Leaving the transport flushed the window; the refused cast was tried
    # again, then reported with the id it carried.
    warnings = [r.getMessage() for r in caplog.records if "was not delivered" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"to topic {topic!r} (message " in warnings[0]
    assert "basic.nack" in warnings[0]
