"""The zmq side of the ``call_monitor`` and ``at_least_once`` send features: the
receiver's refusals and confirmations, forged heartbeats and answers, and what
a send without the features carries (nothing more than before).

The behaviours every transport shares are in the conformance suite
(``polymsg.testing``); these are the zmq paths it cannot see.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from polymsg_zmq import _replies
from polymsg_zmq._messages import Batch, RpcMessage
from polymsg_zmq._wire import BEAT_MAGIC, MAGIC, REPLY_MAGIC, pack
from zmqtest import Hosts, RawSender, free_port, wait_until

import polymsg
from polymsg.driver import SendOptions, Target


class Service:
    """Records casts, echoes calls, and has a call that waits until released."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.release = threading.Event()

    def note(self, ctxt: dict[str, Any], value: Any) -> None:
        self.values.append(value)

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value

    def block(self, ctxt: dict[str, Any]) -> str:
        self.release.wait(30)
        return "released"


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    hosts = Hosts(["a"], receiver_timeout="1.0")
    try:
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def transport(hosts: Hosts) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(hosts[0].url()) as transport:
        yield transport


def _serve(transport: polymsg.Transport, topic: str, service: Service,
           server: str = "s1") -> polymsg.RPCServer:
    rpc = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server=server),
                                 [service])
    rpc.start()
    return rpc


def _stop(server: polymsg.RPCServer) -> None:
    server.stop()
    server.wait()


AT_LEAST_ONCE = polymsg.TransportOptions(at_least_once=True)


def test_at_least_once_to_a_server_nobody_runs_is_refused_by_the_receiver(
        transport: polymsg.Transport) -> None:
    service = Service()
    server = _serve(transport, "work", service)
    try:  # the topic is served here (local matchmaker), server "s2" is not
        client = polymsg.RPCClient(transport, polymsg.Target(topic="work", server="s2"),
                                   timeout=30, transport_options=AT_LEAST_ONCE)
        started = time.monotonic()
        with pytest.raises(polymsg.MessageUndeliverable, match="server 's2'"):
            client.call({}, "echo", value=1)
        with pytest.raises(polymsg.MessageUndeliverable, match="server 's2'"):
            client.cast({}, "note", value=2)
        assert time.monotonic() - started < 5
        served = client.prepare(server="s1")
        assert served.call({}, "echo", value=3) == 3
        served.cast({}, "note", value=4)  # confirmed by the receiver that took it
        assert wait_until(lambda: service.values == [4])
        receiver: Any = transport._driver._receiver
        assert receiver.answers.refused == 2
        assert ("polymsg", "work") in receiver._topics  # nothing held for s2
        assert not receiver._topics[("polymsg", "work")].held
    finally:
        _stop(server)


def test_at_least_once_with_a_static_matchmaker_that_lists_no_host(hosts: Hosts) -> None:
    hosts.write_ring({"other": [hosts[0].address]})
    with polymsg.get_transport(hosts[0].url()) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="unlisted"), timeout=30,
                                   transport_options=AT_LEAST_ONCE)
        started = time.monotonic()
        with pytest.raises(polymsg.MessageUndeliverable, match="ring matchmaker") as caught:
            client.call({}, "echo", value=1)
        assert caught.value.routing_key == "unlisted"
        with pytest.raises(polymsg.MessageUndeliverable):
            client.cast({}, "note", value=1)
        assert time.monotonic() - started < 2


def test_a_cast_nobody_confirms_fails_after_the_receiver_timeout(hosts: Hosts) -> None:
    """A "receiver" that takes messages and never answers: the cast does not hang."""
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    silent.linger = 0
    port = free_port()
    silent.bind(f"tcp://127.0.0.1:{port}")
    hosts.write_ring({"*": [f"127.0.0.1:{port}"]})
    try:
        with polymsg.get_transport(hosts[0].url()) as transport:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="work"),
                                       transport_options=AT_LEAST_ONCE)
            started = time.monotonic()
            with pytest.raises(polymsg.MessageDeliveryFailure, match="confirmed") as caught:
                client.cast({}, "note", value=1)
            assert not isinstance(caught.value, polymsg.MessageUndeliverable)
            assert 0.9 <= time.monotonic() - started < 5
            assert silent.poll(1000)  # it did get the message
    finally:
        silent.close()
        context.term()


def test_forged_at_least_once_messages_get_no_answer_and_keep_nothing(
        hosts: Hosts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_zmq")
    receiver = hosts[0].start_receiver()
    raw = RawSender(hosts[0].port)
    header = {"k": "rpc", "x": "polymsg", "t": "nobody", "s": None, "ttl": None, "q": None}
    try:
        for bad in ({"a": 3}, {"a": True}, {"a": "1"}, {"cm": -1}, {"cm": "x"},
                    {"k": "note", "p": "info", "a": 1}):
            raw.send([MAGIC + json.dumps({**header, **bad}).encode(), pack(b"{}")])
        assert wait_until(lambda: receiver.malformed == 6)
        body = {"i": "forged", "c": {}, "m": {"method": "x"}, "r": None}
        for n in range(200):  # garbage bodies and a reply address on no known host
            raw.send([MAGIC + json.dumps({**header, "a": 2}).encode(),
                      pack(b"not json") if n % 2 else
                      pack(json.dumps({**body, "a": "tcp://192.0.2.1:9"}).encode())])
        assert wait_until(lambda: receiver.answers.refused == 200)
        assert ("polymsg", "nobody") not in receiver._topics
        assert receiver.budget.used == 0
        assert len(receiver._peers) == 0  # no connection to the forged address
        lines = [r.getMessage() for r in caplog.records]
        assert 1 <= len([line for line in lines if "at-least-once" in line]) <= 12
        assert sum("192.0.2.1" in line for line in lines) <= 12
    finally:
        raw.close()


def test_heartbeats_keep_the_future_pending_and_forged_ones_are_dropped(
        transport: polymsg.Transport, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="polymsg_zmq")
    service = Service()
    server = _serve(transport, "slow", service)
    driver: Any = transport._driver
    beats: list[float] = []
    forged: RawSender | None = None
    try:
        options = SendOptions(timeout=30, call_monitor_timeout=0.4,
                              heartbeat=lambda: beats.append(time.monotonic()))
        future = driver.call(Target(exchange="polymsg", topic="slow"), {},
                             {"method": "block", "args": {}, "namespace": None,
                              "version": None}, options)
        future.add_done_callback(lambda _f: None)  # read by the reader thread
        assert wait_until(lambda: len(beats) >= 3, 10)  # every 0.2 s while it runs
        assert not future.done()
        dropped = _replies._LATE.count  # rate-limited, shared by the process
        forged = RawSender(int(driver._replies.endpoint.rsplit(":", 1)[1]))
        for n in range(500):  # unknown calls, a payload where none belongs
            forged.send([BEAT_MAGIC + f"nobody-{n}".encode(), b""] if n % 2 else
                        [BEAT_MAGIC + future.key, b"x" * 1000])
        forged.send([REPLY_MAGIC + b"nobody", json.dumps({"u": "y" * 100_000}).encode()])
        service.release.set()
        assert future.result(10).result == "released"
        heard = len(beats)
        assert wait_until(lambda: False, 0.6) is False  # no heartbeat after the reply
        assert len(beats) == heard
        # every forged frame, logged or counted (they come on a connection of their
        # own, so they may still be on their way when the reply has arrived)
        assert wait_until(lambda: _replies._LATE.count - dropped >= 501, 10)
        lines = [r.getMessage() for r in caplog.records if "heartbeat for call" in r.getMessage()]
        assert len(lines) <= 12
        assert max(map(len, (r.getMessage() for r in caplog.records))) < 2000
    finally:
        service.release.set()
        if forged is not None:
            forged.close()
        _stop(server)


class _Outbox:
    """Records what a message sends back (pure logic: no socket involved)."""

    def __init__(self) -> None:
        self.beats: list[tuple[str, str]] = []

    def send_heartbeat(self, endpoint: str, msg_id: str) -> None:
        self.beats.append((endpoint, msg_id))


@pytest.mark.parametrize(("cm", "expected"), [
    (2.5, 2.5), (3, 3.0), (None, None), (0, None), (-1, None), (True, None), ("5", None),
])
def test_the_server_reads_the_call_monitor_timeout_from_the_header(
        cm: Any, expected: float | None) -> None:
    outbox = _Outbox()
    header = {"k": "rpc", "x": "polymsg", "t": "t", "cm": cm}
    batch = Batch(outbox, header, None, "", deque())  # type: ignore[arg-type]
    call = RpcMessage(batch, json.dumps({"i": "id-1", "c": {}, "m": {}, "r": "tcp://h:1"})
                      .encode())
    cast = RpcMessage(batch, json.dumps({"i": "id-2", "c": {}, "m": {}, "r": None}).encode())
    assert call.call_monitor_timeout == expected
    call.heartbeat()
    cast.heartbeat()  # a cast has no one to tell
    assert outbox.beats == [("tcp://h:1", "id-1")]


def test_sends_without_the_features_carry_nothing_new(transport: polymsg.Transport) -> None:
    driver: Any = transport._driver
    target = Target(exchange="polymsg", topic="t")
    plain = json.loads(driver._header("rpc", target, SendOptions(), None, False)[len(MAGIC):])
    assert "cm" not in plain and "a" not in plain
    both = json.loads(driver._header("rpc", target, SendOptions(call_monitor_timeout=2.5),
                                     None, False, confirm=1)[len(MAGIC):])
    assert (both["cm"], both["a"]) == (2.5, 1)
