"""A stranger on the network: floods, forged replies and garbage, and the bounds that hold.

Every test sends what an attacker could (raw frames from a bare DEALER to the
receiver's TCP port) and checks the receiver's own byte accounting, the
process's file descriptors and the log, then that legitimate traffic still
flows.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from polymsg_zmq import _peers
from polymsg_zmq._receiver import _CACHED_HEADER, _MAX_CACHED
from polymsg_zmq._topics import HELD_OVERHEAD
from polymsg_zmq._wire import MAGIC, pack
from zmqtest import Hosts, RawSender, open_fds, wait_until

import polymsg

MIB = 1024 * 1024


class Sink:
    """Records casts; answers calls."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.lock = threading.Lock()

    def note(self, ctxt: dict[str, Any], value: Any, pad: str = "") -> None:
        with self.lock:
            self.values.append(value)

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value


def _header(topic: str, **extra: Any) -> bytes:
    fields = {"k": "rpc", "x": "polymsg", "t": topic, "s": None, "ttl": None, "q": None,
              **extra}
    return MAGIC + json.dumps(fields).encode()


def _cast(msg_id: str, value: Any, pad: int = 0, reply: str | None = None) -> bytes:
    message = {"method": "note" if reply is None else "echo", "args": {"value": value}}
    if pad:
        message["args"]["pad"] = "x" * pad
    return pack(json.dumps({"i": msg_id, "c": {}, "m": message, "r": reply}).encode())


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    hosts = Hosts(["a"], max_message_size=str(MIB), max_held_bytes=str(4 * MIB))
    try:
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def raw(hosts: Hosts) -> Iterator[RawSender]:
    hosts[0].start_receiver()
    sender = RawSender(hosts[0].port)
    try:
        yield sender
    finally:
        sender.close()


def _serve(transport: polymsg.Transport, topic: str, sink: Sink) -> polymsg.RPCServer:
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s"),
                                    [sink])
    server.start()
    return server


def _stop(server: polymsg.RPCServer) -> None:
    server.stop()
    server.wait()


def test_routing_header_cache_is_bounded_in_bytes(hosts: Hosts, raw: RawSender) -> None:
    receiver = hosts[0].receiver
    assert receiver is not None
    for n in range(6):  # huge headers: refused, never cached
        raw.send([_header("big", z="y" * (900 * 1024) + str(n)), _cast(f"h{n}", n)])
    count = 2000  # distinct headers of about 900 bytes, each cached when it fits
    for n in range(count):
        raw.send([_header("many", z="y" * 850 + str(n)), _cast(f"m{n}", n)])
    assert wait_until(lambda: receiver.malformed == 6
                      and len(receiver._topics[("polymsg", "many")].held) == count)
    cached = receiver._headers
    assert len(cached) <= _MAX_CACHED
    assert sum(len(key) for key in cached) <= _MAX_CACHED * _CACHED_HEADER  # 1 MiB
    assert ("polymsg", "big") not in receiver._topics


def test_held_messages_are_bounded_in_bytes_keeping_the_newest(
        hosts: Hosts, raw: RawSender, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_zmq")
    receiver = hosts[0].receiver
    assert receiver is not None
    sent = 40  # 40 x 512 KiB for a topic nobody serves, against max_held_bytes = 4 MiB
    for n in range(sent):
        raw.send([_header("flood"), _cast(f"f{n}", n, pad=512 * 1024)])
    state: Any = None

    def newest_held() -> bool:
        nonlocal state
        state = receiver._topics.get(("polymsg", "flood"))
        return state is not None and bool(state.held) and state.held[-1].ids() == ["f39"]

    assert wait_until(newest_held)
    assert receiver.budget.used == state.held_bytes <= 4 * MIB
    kept = len(state.held)
    assert 4 <= kept < 8, kept
    drops = [r for r in caplog.records if "dropped held message" in r.getMessage()]
    assert 1 <= len(drops) <= 5  # rate-limited: the first few in detail
    with polymsg.get_transport(hosts[0].url(start_receiver="false")) as transport:
        sink = Sink()
        server = _serve(transport, "flood", sink)
        assert wait_until(lambda: len(sink.values) == kept)
        assert sink.values == list(range(sent - kept, sent))  # the newest, in order
        _stop(server)
    assert receiver.budget.used == 0


def test_many_tiny_messages_on_many_topics_cost_no_sockets_and_stay_bounded(
        hosts: Hosts, raw: RawSender) -> None:
    receiver = hosts[0].receiver
    assert receiver is not None
    before = open_fds()
    topics = 6000  # past max_topics (4096): the rest are dropped
    for n in range(topics):
        raw.send([_header(f"t{n}"), _cast(f"t{n}", n)])
    raw.send([_header("last"), _cast("last", 0)])
    assert wait_until(lambda: receiver._dropped.count >= topics - 4096, 60)
    assert len(receiver._topics) <= receiver.settings.max_topics
    assert receiver.budget.used <= receiver.settings.max_topics * (HELD_OVERHEAD + 300)
    assert open_fds() - before < 20  # no socket per topic nobody serves
    with polymsg.get_transport(hosts[0].url(start_receiver="false")) as transport:
        sink = Sink()
        server = _serve(transport, "a-new-service", sink)  # still starts
        client = polymsg.RPCClient(transport, polymsg.Target(topic="a-new-service"),
                                   timeout=10)
        assert client.call({}, "echo", value="served") == "served"
        _stop(server)


def test_a_reply_address_on_an_unknown_host_gets_nothing(
        hosts: Hosts, raw: RawSender, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_zmq")
    with polymsg.get_transport(hosts[0].url(start_receiver="false")) as transport:
        sink = Sink()
        server = _serve(transport, "work", sink)
        forged = "tcp://192.0.2.1:9"  # TEST-NET-1: no host of this deployment
        raw.send([_header("work"), _cast("forged-1", "x", reply=forged)])
        assert wait_until(lambda: "not on a host the matchmaker knows" in caplog.text)
        driver: Any = transport._driver
        assert forged not in driver.peers._peers
        client = polymsg.RPCClient(transport, polymsg.Target(topic="work"), timeout=10)
        assert client.call({}, "echo", value=1) == 1
        _stop(server)


def test_forged_reply_ports_neither_exhaust_connections_nor_stall_calls(
        hosts: Hosts, raw: RawSender, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_peers, "MAX_PEERS", 32)
    with polymsg.get_transport(hosts[0].url(start_receiver="false")) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic="work", server="s"),
                                        [Sink()], max_workers=2)
        server.start()
        client = polymsg.RPCClient(transport, polymsg.Target(topic="work"), timeout=5)
        assert client.call({}, "echo", value=0) == 0  # the caller's connection exists
        before = open_fds()
        driver: Any = transport._driver
        for n in range(400):  # a known host, ports where nothing listens
            raw.send([_header("work"), _cast(f"p{n}", n, reply=f"tcp://127.0.0.1:{1 + n}")])
        # two workers, 400 replies that can never go: calls are still answered in time
        assert [client.call({}, "echo", value=n) for n in range(20)] == list(range(20))
        assert len(driver.peers) <= 32 + 1
        assert open_fds() - before < 100
        _stop(server)


def test_default_binds_loopback_and_an_open_bind_without_curve_warns(
        caplog: pytest.LogCaptureFixture) -> None:
    hosts = Hosts(["a"])
    try:
        settings = hosts[0].settings()
        assert (settings.host, settings.bind_address) == ("127.0.0.1", "127.0.0.1")
        receiver = hosts[0].start_receiver()
        endpoint = receiver._tcp.get_string(zmq.LAST_ENDPOINT)
        assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
        hosts[0].stop_receiver()
        caplog.set_level(logging.WARNING, logger="polymsg_zmq")
        hosts[0].query["bind_address"] = "0.0.0.0"
        hosts[0].start_receiver()
        assert "without CURVE" in caplog.text
    finally:
        hosts.close()


def test_garbage_floods_log_a_few_lines_with_short_fields(
        hosts: Hosts, raw: RawSender, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="polymsg_zmq")
    receiver = hosts[0].receiver
    assert receiver is not None
    bad_topic = "a/" + "b" * 60_000  # refused; its name would make a 60 KB log line
    for n in range(5000):
        raw.send([_header(bad_topic, n=n), pack(b"{}")] if n % 2 else [b"junk"])
    with polymsg.get_transport(hosts[0].url(start_receiver="false")) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="t"), timeout=5)
        caller: Any = transport._driver
        with pytest.raises(polymsg.MessagingTimeout):
            client.prepare(timeout=0.2).call({}, "echo", value=1)  # opens the reply socket
        replies = RawSender(int(caller._replies.endpoint.rsplit(":", 1)[1]))
        for n in range(3000):  # replies to calls nobody made, and garbage
            replies.send([b"PZR" + f"nobody-{n}".encode(), b"{}"] if n % 2 else [b"junk"])
        replies.close()
        assert wait_until(lambda: receiver.malformed == 5000)
        wait_until(lambda: False, 1.0)  # the reply socket is read by the next call
        with pytest.raises(polymsg.MessagingTimeout):
            client.prepare(timeout=0.5).call({}, "echo", value=2)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("polymsg_zmq")]
    garbage = [line for line in lines if "malformed" in line or "nobody-" in line
               or "gave up" in line]
    # 8,000 bad messages: per kind, five lines per 10 s interval and a count per interval
    assert len(garbage) <= 50, len(garbage)
    assert max(len(line) for line in lines) < 2000
