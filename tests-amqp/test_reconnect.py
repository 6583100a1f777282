"""Connections that break, on both RabbitMQ drivers: the broker dropping every
connection, failover, the retry budget, heartbeats during long-running endpoints.

A "broker restart" is ``rabbitmqctl close_all_connections`` on this session's
virtual host: every client sees its connections dropped by the broker, exactly as
in a restart, while queues (and the messages in them) survive and other users of
the shared broker are left alone. That connections really were dropped (or were
not) is read from the broker: the client ports of the virtual host's connections.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from amqptest import FAST_RETRY, CastStream, Worker, base_url, ctl, make_url
from proxy import Proxy, free_port

import polymsg

WAIT = 30.0


@pytest.fixture
def url(scheme: str, vhost: str) -> str:
    return make_url(scheme, vhost, FAST_RETRY)


@pytest.fixture
def served(url: str, topic: str) -> Iterator[Worker]:
    """A server on ``topic`` (its own transport), stopped afterwards."""
    worker = Worker()
    with polymsg.get_transport(url) as transport, polymsg.get_rpc_server(
            transport, polymsg.Target(topic=topic, server="s1"), [worker]):
        yield worker


def client_ports(vhost: str) -> set[str]:
    """The client-side ports of the broker's connections in ``vhost``."""
    ports = set()
    for line in ctl("list_connections", "vhost", "peer_port").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] == vhost:
            ports.add(parts[1])
    return ports


def restart(vhost: str) -> set[str]:
    """Drop every connection of ``vhost``, as a broker restart does; the ports dropped."""
    before = client_ports(vhost)
    assert before, "no connection to drop"
    ctl("close_all_connections", "--vhost", vhost, "polymsg test: broker restart")
    return before


def test_a_stream_of_casts_survives_the_broker_dropping_every_connection(
        vhost: str, url: str, topic: str, served: Worker) -> None:
    with polymsg.get_transport(url) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        with CastStream(client) as stream:
            stream.at_least(100, WAIT)
            dropped = restart(vhost)
            # The stream goes on by itself after the restart, and no cast raises.
            stream.at_least(len(stream.returned.events) + 200, WAIT)
            returned = stream.stop(WAIT)
        assert client.call({}, "echo", value="after") == "after"
        # Both the client's and the server's connections were dropped and made anew.
        now = client_ports(vhost)
        assert len(now) >= 2 and not now & dropped, (dropped, now)
    # Every cast that returned runs (some maybe twice: at least once).
    served.values.wait_for(lambda seen: set(returned) <= set(seen), WAIT,
                           "every cast that returned to run")


def test_calls_made_one_at_a_time_survive_lost_connections(
        vhost: str, url: str, topic: str, served: Worker) -> None:
    # Callers calling one at a time read their replies themselves; the reply
    # connection dropping under them must not strand a call.
    with polymsg.get_transport(url) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        for value in range(10):
            assert client.call({}, "echo", value=value) == value
        dropped = restart(vhost)
        for value in range(10):
            assert client.call({}, "echo", value=value) == value
        assert not client_ports(vhost) & dropped


def test_notifications_resume_after_the_broker_dropped_every_connection(
        vhost: str, url: str, topic: str) -> None:
    worker = Worker()
    with polymsg.get_transport(url) as transport:
        listener = polymsg.get_notification_listener(
            transport, [polymsg.Target(topic=topic)], [worker])
        notifier = polymsg.Notifier(transport, "test.restart", topics=(topic,))
        with listener:
            notifier.info({}, "before", {"n": 1})
            worker.values.wait_for_count(1, WAIT)
            dropped = restart(vhost)
            notifier.info({}, "after", {"n": 2})
            assert worker.values.wait_for_count(2, WAIT)[-1] == 2
            assert not client_ports(vhost) & dropped


def test_failover_to_the_next_host(scheme: str, vhost: str, topic: str, served: Worker,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    broker = base_url().hosts[0]
    dead = free_port()
    two_hosts = make_url(scheme, vhost, FAST_RETRY).replace(
        f"{broker.hostname}:{broker.port}", f"127.0.0.1:{dead},{broker.hostname}:{broker.port}")
    with polymsg.get_transport(two_hosts) as transport:
        assert "multi_host" in transport.capabilities
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT,
                                   retry=0)
        assert client.call({}, "echo", value="via the second host") == "via the second host"
    assert any(f":{dead}" in r.getMessage() for r in caplog.records), \
        "the first (dead) host was not tried"


def test_retry_n_gives_up_after_n_retries(scheme: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    dead = free_port()
    unreachable = (f"{scheme}://guest:guest@127.0.0.1:{dead}/"
                   "?retry_interval=0.05&retry_backoff=0&retry_interval_max=0.05")
    with polymsg.get_transport(unreachable) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="nowhere"), retry=2,
                                   timeout=WAIT)
        with pytest.raises(polymsg.MessageDeliveryFailure, match="after 2 retries") as cast:
            client.cast({}, "record", value=1)
        with pytest.raises(polymsg.MessageDeliveryFailure) as call:
            client.call({}, "echo", value=1)
    assert "connection refused" in str(cast.value).lower()
    assert type(call.value).__module__.startswith("polymsg.")
    attempts = [r for r in caplog.records if f":{dead}" in r.getMessage()]
    assert len(attempts) >= 3, [r.getMessage() for r in caplog.records]


def test_retry_none_waits_for_the_broker(scheme: str, vhost: str, topic: str,
                                         served: Worker) -> None:
    broker = base_url().hosts[0]
    proxy = Proxy((broker.hostname or "127.0.0.1", broker.port or 5672))  # not listening yet
    transport = polymsg.get_transport(
        make_url(scheme, vhost, FAST_RETRY, host="127.0.0.1", port=proxy.port))
    pool = ThreadPoolExecutor(1)
    try:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        pending = pool.submit(client.cast, {}, "record", value=7)
        # An absence: nothing can confirm the cast while no broker is reachable.
        with pytest.raises(FutureTimeout):  # not the builtin TimeoutError before 3.11
            pending.result(1.0)
        assert not served.values.events
        proxy.start()
        pending.result(WAIT)
        assert served.values.wait_for_count(1, WAIT) == [7]
    finally:
        transport.cleanup()  # fails a cast still waiting, so the pool can finish
        pool.shutdown()
        proxy.stop()


def test_heartbeats_flow_while_endpoints_run_long(scheme: str, own_vhost: str,
                                                  topic: str) -> None:
    # The broker drops a connection that misses two 2 s heartbeats; the methods
    # run 6 s, one sleeping, one keeping the interpreter busy, so only I/O
    # threads that keep answering survive. (2 s, not 1 s: room for a busy CI
    # machine.) This waits on purpose: the test is about time passing. Its own
    # virtual host: connections an earlier test is still closing are not counted.
    vhost = own_vhost
    fast_heartbeat = make_url(scheme, vhost, f"heartbeat=2&{FAST_RETRY}")
    with polymsg.get_transport(fast_heartbeat) as server_side, \
            polymsg.get_transport(fast_heartbeat) as client_side, \
            ThreadPoolExecutor(2) as pool:
        # One server each, so the two run at once, whatever a server's prefetch.
        servers = [polymsg.get_rpc_server(server_side, polymsg.Target(topic=topic, server=name),
                                          [Worker()]) for name in ("sleepy", "busy")]
        client = polymsg.RPCClient(client_side, polymsg.Target(topic=topic), timeout=WAIT)
        with servers[0], servers[1]:
            assert client.call({}, "echo", value="connected") == "connected"
            before = client_ports(vhost)
            calls = [pool.submit(client.prepare(server=method).call, {}, method, seconds=6.0)
                     for method in ("sleepy", "busy")]
            assert all(call.result(WAIT) for call in calls)
            assert client.call({}, "echo", value="still connected") == "still connected"
            dropped = before - client_ports(vhost)
            assert not dropped, f"connections missed their heartbeats: {sorted(dropped)}"
