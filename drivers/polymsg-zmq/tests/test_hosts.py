"""Routing between simulated hosts: receiver restarts, Redis TTLs, ring rules, CURVE."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from polymsg_zmq._matchmaker import RedisMatchmaker, RingMatchmaker
from zmqtest import Hosts, ReceiverProcess, free_port

import polymsg


class Echo:
    """Answers with its server name; records casts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.casts: list[Any] = []
        self.cast_seen = threading.Event()

    def whoami(self, ctxt: dict[str, Any]) -> str:
        return self.name

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value

    def note(self, ctxt: dict[str, Any], value: Any) -> None:
        self.casts.append(value)
        self.cast_seen.set()


class Stack:
    """Transports and servers of one test, torn down in reverse order."""

    def __init__(self) -> None:
        self._cleanups: list[Any] = []

    def transport(self, url: str) -> polymsg.Transport:
        transport = polymsg.get_transport(url)
        self._cleanups.append(transport.cleanup)
        return transport

    def server(self, transport: polymsg.Transport, topic: str, name: str) -> Echo:
        endpoint = Echo(name)
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server=name),
                                        [endpoint])
        server.start()
        self._cleanups.append(lambda: (server.stop(), server.wait()))
        return endpoint

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()


@pytest.fixture
def stack() -> Iterator[Stack]:
    stack = Stack()
    try:
        yield stack
    finally:
        stack.close()


def test_receiver_killed_and_restarted_services_and_callers_recover(stack: Stack) -> None:
    hosts = Hosts(["a", "b"], start_receiver="false", heartbeat_interval="0.2")
    hosts.write_ring({"*": [hosts[1].address]})
    daemon = ReceiverProcess(hosts[1].url())
    try:
        daemon.wait_for_line("listening")
        endpoint = stack.server(stack.transport(hosts[1].url()), "work", "server-b")
        client = polymsg.RPCClient(stack.transport(hosts[0].url()),
                                   polymsg.Target(topic="work"), timeout=10)
        assert client.call({}, "echo", value="before") == "before"

        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        daemon = ReceiverProcess(hosts[1].url())
        daemon.wait_for_line("listening")

        # Neither the server nor the client was restarted: the server re-subscribes
        # on its heartbeat and the client's connection comes back by itself.
        assert client.call({}, "echo", value="after") == "after"
        client.cast({}, "note", value="cast after")
        assert endpoint.cast_seen.wait(10)
        assert endpoint.casts == ["cast after"]
    finally:
        daemon.stop()
        hosts.close()


def test_host_removed_from_redis_stops_getting_traffic_after_its_ttl(stack: Stack) -> None:
    ttl = 1.0
    hosts = Hosts(["a", "b", "c"], start_receiver="false", heartbeat_interval="0.2")
    hosts.use_redis(ttl=ttl)
    hosts[1].start_receiver()
    doomed = ReceiverProcess(hosts[2].url())
    try:
        doomed.wait_for_line("listening")
        stack.server(stack.transport(hosts[1].url()), "work", "server-b")
        stack.server(stack.transport(hosts[2].url()), "work", "server-c")
        client = polymsg.RPCClient(stack.transport(hosts[0].url()),
                                   polymsg.Target(topic="work"), timeout=5)
        assert set(Counter(client.call({}, "whoami") for _ in range(10))) == \
            {"server-b", "server-c"}

        matchmaker = RedisMatchmaker(hosts[0].settings())
        doomed.stop(signal.SIGKILL)  # the host dies without unregistering
        assert hosts[2].address in matchmaker.rpc_hosts("polymsg", "work")
        # A registration ages out when its TTL passes without a heartbeat: wait it out
        # (plus the senders' cache of matchmaker answers).
        time.sleep(ttl + 0.2 + 0.3)
        assert matchmaker.rpc_hosts("polymsg", "work") == [hosts[1].address]
        assert [client.call({}, "whoami") for _ in range(10)] == ["server-b"] * 10
        matchmaker.close()
    finally:
        doomed.stop()
        hosts.close()


def test_ring_routes_named_servers_and_refuses_unknown_topics(stack: Stack) -> None:
    hosts = Hosts(["a", "b", "c"], start_receiver="false")
    hosts.write_ring({"work": [hosts[1].address, hosts[2].address],
                      "work.server-c": [hosts[2].address],
                      "single": [hosts[2].address]})
    for host in hosts.hosts[1:]:
        host.start_receiver()
    try:
        stack.server(stack.transport(hosts[1].url()), "work", "server-b")
        stack.server(stack.transport(hosts[2].url()), "work", "server-c")
        stack.server(stack.transport(hosts[2].url()), "single", "only")
        client_transport = stack.transport(hosts[0].url())
        client = polymsg.RPCClient(client_transport, polymsg.Target(topic="work"), timeout=5)
        assert set(client.call({}, "whoami") for _ in range(6)) == {"server-b", "server-c"}
        assert [client.prepare(server="server-c").call({}, "whoami")
                for _ in range(4)] == ["server-c"] * 4
        # The topic's only host serves every server name of it.
        single = client.prepare(topic="single", server="only")
        assert single.call({}, "whoami") == "only"
        with pytest.raises(polymsg.MessageDeliveryFailure, match="server-b"):
            client.prepare(server="server-b").call({}, "whoami")  # two hosts, no entry
        with pytest.raises(polymsg.MessageDeliveryFailure, match="no host serves topic"):
            client.prepare(topic="unlisted").cast({}, "note", value=1)
        ring = RingMatchmaker(hosts[0].settings())
        assert ring.note_hosts("polymsg", "work", "info") == [
            (hosts[1].address, None), (hosts[2].address, None)]
    finally:
        hosts.close()


def test_curve_encrypts_and_refuses_unauthorized_hosts(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    public, secret = (key.decode() for key in zmq.curve_keypair())
    hosts = Hosts(["a", "b"], start_receiver="false", curve_public_key=public,
                  curve_secret_key=secret)
    hosts.write_ring({"*": [hosts[1].address]})
    hosts[1].start_receiver()
    try:
        stack.server(stack.transport(hosts[1].url()), "secure", "server-b")
        client = polymsg.RPCClient(stack.transport(hosts[0].url()),
                                   polymsg.Target(topic="secure"), timeout=5)
        assert client.call({}, "echo", value="sealed") == "sealed"

        intruder_public, intruder_secret = (key.decode() for key in zmq.curve_keypair())
        intruder = stack.transport(hosts[0].url(curve_public_key=intruder_public,
                                                curve_secret_key=intruder_secret,
                                                curve_server_key=public,
                                                retry_interval="0.5"))
        plain = stack.transport(hosts[0].url(curve_public_key="", curve_secret_key="",
                                             retry_interval="0.5"))
        caplog.set_level(logging.WARNING, logger="polymsg_zmq")
        for transport in (intruder, plain):
            refused = polymsg.RPCClient(transport, polymsg.Target(topic="secure"), retry=0,
                                        timeout=5)
            with pytest.raises(polymsg.MessageDeliveryFailure, match="unreachable"):
                refused.cast({}, "note", value="forged")
        assert any("not authorized" in r.getMessage() for r in caplog.records)
        assert client.call({}, "echo", value="still sealed") == "still sealed"
    finally:
        hosts.close()


def test_unreachable_redis_fails_sends_clearly_and_never_blocks_servers(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    hosts = Hosts(["a"])
    for host in hosts.hosts:
        host.query.update(matchmaker="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                          receiver_timeout="5")
    try:
        caplog.set_level(logging.WARNING, logger="polymsg_zmq")
        transport = stack.transport(hosts[0].url())
        started = time.monotonic()
        stack.server(transport, "work", "server-a")  # registration is retried in background
        assert time.monotonic() - started < 5
        client = polymsg.RPCClient(transport, polymsg.Target(topic="work"), timeout=5)
        with pytest.raises(polymsg.MessageDeliveryFailure, match="redis matchmaker is unavail"):
            client.call({}, "whoami")
        assert any("matchmaker update failed" in r.getMessage() for r in caplog.records)
    finally:
        hosts.close()


def test_call_futures_resolve_without_result_being_called(stack: Stack) -> None:
    """A driver's call future completes for callbacks too (as asyncio.wrap_future uses)."""
    import asyncio

    from polymsg.driver import SendOptions

    hosts = Hosts(["a"])
    try:
        transport = stack.transport(hosts[0].url())
        stack.server(transport, "work", "server-a")
        driver = transport._driver
        target = polymsg.Target(topic="work", exchange="polymsg")
        message = {"method": "echo", "args": {"value": "async"}, "namespace": None,
                   "version": None}

        async def call() -> Any:
            future = driver.call(target, {}, message, SendOptions(timeout=10))
            return await asyncio.wait_for(asyncio.wrap_future(future), 10)

        replies = [asyncio.run(call()) for _ in range(3)]
        assert [reply.result for reply in replies] == ["async"] * 3
    finally:
        hosts.close()


def test_redis_knows_the_hosts_whose_receivers_registered() -> None:
    from polymsg_zmq._matchmaker import HOST_KEY

    hosts = Hosts(["a", "b"])
    hosts.use_redis()
    try:
        import dataclasses

        other = RedisMatchmaker(dataclasses.replace(hosts[1].settings(), host="10.9.8.7"))
        mine = RedisMatchmaker(hosts[0].settings())
        assert not mine.knows_host("10.9.8.7")
        other.register([HOST_KEY])  # what a receiver on 10.9.8.7 does when it starts
        assert mine.knows_host("10.9.8.7") and mine.knows_host("127.0.0.1")
        assert not mine.knows_host("10.9.8.6")
        other.unregister([HOST_KEY])
        other.close()
        mine.close()
    finally:
        hosts.close()
