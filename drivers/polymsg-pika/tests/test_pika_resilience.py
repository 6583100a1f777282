"""Connections that break: broker restarts, failover, retry, heartbeats.

A "broker restart" is ``rabbitmqctl close_all_connections`` on this
session's virtual host: every client sees its connections dropped by the
broker, exactly as in a restart, while queues (and the messages in them)
survive and other users of the shared broker are left alone.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest
from proxy import Proxy, free_port
from rabbit import FAST_RETRY, base_url, close_connections, url

import polymsg
from polymsg.testing import Recorder

WAIT = 30.0


class Worker:
    """An endpoint recording what it ran; ``slow`` runs long without yielding to I/O."""

    def __init__(self) -> None:
        self.values = Recorder()

    def record(self, ctxt: Any, value: int) -> None:
        self.values.add(value)

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def sleepy(self, ctxt: Any, seconds: float) -> str:
        # A long-running method: it blocks its worker thread for `seconds`.
        threading.Event().wait(seconds)
        return "slept"

    def busy(self, ctxt: Any, seconds: float) -> int:
        # A CPU-bound method: it keeps the interpreter busy for `seconds`.
        deadline, loops = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            loops += sum(range(1000)) and 1
        return loops


@pytest.fixture
def topic() -> str:
    return f"resilience-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def served(pika_url: str, topic: str) -> Iterator[Worker]:
    """A server on ``topic`` (its own transport), stopped afterwards."""
    worker = Worker()
    with polymsg.get_transport(pika_url) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                        [worker])
        with server:
            yield worker


def _lost(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("polymsg_pika") and "connection lost" in r.getMessage()]


def test_broker_restart_mid_stream_loses_no_cast_that_returned(
        vhost: str, pika_url: str, topic: str, served: Worker,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    returned: list[int] = []  # casts whose cast() returned without error
    progress = threading.Condition()
    stop = threading.Event()

    def send(client: polymsg.RPCClient) -> None:
        value = 0
        while not stop.is_set():
            client.cast({}, "record", value=value)
            with progress:
                returned.append(value)
                progress.notify_all()
            value += 1

    def sent_at_least(count: int) -> None:
        with progress:
            assert progress.wait_for(lambda: len(returned) >= count, WAIT), \
                f"only {len(returned)} casts returned"

    with polymsg.get_transport(pika_url) as transport, ThreadPoolExecutor(1) as pool:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        sender = pool.submit(send, client)
        sent_at_least(100)
        close_connections(vhost)
        before = len(returned)
        sent_at_least(before + 200)  # the stream goes on by itself after the restart
        stop.set()
        sender.result(WAIT)
        assert client.call({}, "echo", value="after") == "after"
    executed = served.values.wait_for(lambda seen: set(returned) <= set(seen), WAIT,
                                      "every cast that returned to run")
    assert set(returned) <= set(executed)
    lost = _lost(caplog)
    assert any(" send:" in m for m in lost) and any(" receive:" in m for m in lost), \
        f"the broker did not drop the client's and the server's connections: {lost}"


def test_notifications_resume_after_broker_restart(
        vhost: str, pika_url: str, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    received = Recorder()

    class Listener:
        def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
                 metadata: Any) -> None:
            received.add(payload["n"])

    with polymsg.get_transport(pika_url) as transport:
        listener = polymsg.get_notification_listener(
            transport, [polymsg.Target(topic=topic)], [Listener()])
        notifier = polymsg.Notifier(transport, "test.restart", topics=(topic,))
        with listener:
            notifier.info({}, "before", {"n": 1})
            received.wait_for_count(1, WAIT)
            close_connections(vhost)
            notifier.info({}, "after", {"n": 2})
            assert received.wait_for_count(2, WAIT)[-1] == 2
    assert _lost(caplog)


def test_failover_to_the_next_host(vhost: str, topic: str, served: Worker,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    broker = base_url().hosts[0]
    dead = free_port()
    two_hosts = url("rabbit+pika", vhost, FAST_RETRY).replace(
        f"{broker.hostname}:{broker.port}",
        f"127.0.0.1:{dead},{broker.hostname}:{broker.port}")
    with polymsg.get_transport(two_hosts) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        assert client.call({}, "echo", value="via the second host") == "via the second host"
    assert any(f":{dead}" in r.getMessage() for r in caplog.records), \
        "the first (dead) host was not tried"


def test_retry_none_waits_for_the_broker(vhost: str, topic: str, served: Worker) -> None:
    broker = base_url().hosts[0]
    proxy = Proxy((broker.hostname or "127.0.0.1", broker.port or 5672))
    proxied = url("rabbit+pika", vhost, FAST_RETRY).replace(
        f"{broker.hostname}:{broker.port}", f"127.0.0.1:{proxy.port}")
    transport = polymsg.get_transport(proxied)
    pool = ThreadPoolExecutor(1)
    try:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        pending = pool.submit(client.cast, {}, "record", value=7)
        # An absence: nothing can confirm the cast while no broker is reachable.
        with pytest.raises(FutureTimeout):  # not the builtin TimeoutError before 3.11
            pending.result(0.5)
        assert not served.values.events
        proxy.start()
        pending.result(WAIT)
        assert served.values.wait_for_count(1, WAIT) == [7]
    finally:
        transport.cleanup()  # fails a cast still waiting, so the pool can finish
        pool.shutdown()
        proxy.stop()


def test_retry_n_gives_up_after_n_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    dead = free_port()
    unreachable = (f"rabbit+pika://guest:guest@127.0.0.1:{dead}/"
                   "?retry_interval=0.05&retry_backoff=0&retry_interval_max=0.05")
    with polymsg.get_transport(unreachable) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="nowhere"), retry=2,
                                   timeout=WAIT)
        with pytest.raises(polymsg.MessageDeliveryFailure, match="after 2 retries"):
            client.cast({}, "record", value=1)
        with pytest.raises(polymsg.MessageDeliveryFailure) as caught:
            client.call({}, "echo", value=1)
    assert "pika" not in type(caught.value).__module__
    attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(attempts) >= 3


@pytest.mark.parametrize("method", ["sleepy", "busy"])
def test_heartbeats_survive_long_running_endpoints(
        vhost: str, topic: str, method: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_pika")
    # The broker drops a connection that misses two 2 s heartbeats; the
    # method runs 6 s, so only an I/O thread that keeps answering survives.
    # (Intervals of 2 s, not 1 s, leave room for a busy CI machine.)
    fast_heartbeat = url("rabbit+pika", vhost, f"heartbeat=2&{FAST_RETRY}")
    with polymsg.get_transport(fast_heartbeat) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                        [Worker()], max_workers=2)
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        with server:
            assert client.call({}, method, seconds=6.0)
            assert client.call({}, "echo", value="still connected") == "still connected"
    assert _lost(caplog) == [], "a connection missed its heartbeats"
