"""What the broker holds and refuses, on both RabbitMQ drivers: queues and
exchanges declared otherwise by someone else, queues deleted behind polymsg's
back, messages nobody receives, and what a transport leaves behind."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqptest import FAST_RETRY, LogWaiter, ctl, make_url

import polymsg
from polymsg.testing import Recorder

WAIT = 20.0

class Echo:
    def __init__(self) -> None:
        self.seen = Recorder()

    def echo(self, ctxt: Any, value: Any) -> Any:
        self.seen.add(value)
        return value


@pytest.fixture
def url(scheme: str, vhost: str) -> str:
    return make_url(scheme, vhost, FAST_RETRY)


@pytest.fixture
def transport(url: str) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(url) as transport:
        yield transport


def queues(vhost: str) -> dict[str, int]:
    """``{queue: messages}`` in ``vhost``, as the broker says."""
    found = {}
    for line in ctl("list_queues", "-p", vhost, "name", "messages").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found


def test_a_queue_with_other_arguments_gives_a_warning_not_a_dead_channel(
        transport: polymsg.Transport, raw: Any, topic: str,
        logged: Callable[[str], LogWaiter]) -> None:
    exists = logged("already exists")
    # As durable as polymsg declares it (RabbitMQ 4: always; 3: as oslo.messaging).
    durable = os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4")
    raw.queue_declare(topic, durable=durable, arguments={"x-expires": 600_000})
    endpoint = Echo()
    # Server and client ask for other arguments (none, and a 5 s queue_ttl).
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [endpoint])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT,
                               queue_ttl=5.0)
    with server:
        for value in range(4):
            client.cast({}, "echo", value=value)
        assert client.call({}, "echo", value="call") == "call"
        endpoint.seen.wait_for(lambda seen: {0, 1, 2, 3, "call"} <= set(seen), WAIT)
    assert exists.messages, "no warning about the queue"
    assert all(topic in w and "x-expires" in w for w in exists.messages), exists.messages


def test_an_exchange_of_another_kind_gives_a_warning_and_still_routes(
        transport: polymsg.Transport, raw: Any, topic: str,
        logged: Callable[[str], LogWaiter]) -> None:
    exists = logged("already exists")
    exchange = f"direct-{topic}"
    raw.exchange_declare(exchange, "direct", durable=True)  # polymsg's are topic exchanges
    try:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic=topic, server="s1", exchange=exchange), [Echo()])
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic, exchange=exchange),
                                   timeout=WAIT)
        with server:
            assert client.call({}, "echo", value="routed") == "routed"
            assert client.prepare(server="s1").call({}, "echo", value="pinned") == "pinned"
        assert any("exchange" in m and exchange in m for m in exists.messages), \
            exists.messages
    finally:
        raw.exchange_delete(exchange)


def test_a_queue_deleted_behind_the_senders_back_is_declared_again(
        vhost: str, transport: polymsg.Transport, raw: Any, topic: str) -> None:
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    client.cast({}, "echo", value="first")  # declares the queue, remembered
    deadline = time.monotonic() + WAIT
    while queues(vhost).get(topic) != 1:  # until "first" is in the queue
        assert time.monotonic() < deadline, f"the queue holds {queues(vhost).get(topic)}"
        threading.Event().wait(0.2)
    assert raw.queue_delete(topic).method.message_count == 1  # "first" goes with it
    client.cast({}, "echo", value="second")  # returned, declared again, sent again
    endpoint = Echo()
    with polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                [endpoint]):
        assert endpoint.seen.wait_for_count(1, WAIT) == ["second"]


def test_a_fanout_to_nobody_is_logged_not_lost_silently(
        transport: polymsg.Transport, topic: str, logged: Callable[[str], LogWaiter]) -> None:
    nobody = logged("reached no server")
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic, fanout=True))
    client.cast({}, "echo", value="anyone?")
    assert nobody.seen.wait(WAIT), "the unroutable fanout was not logged"
    assert topic in nobody.messages[0]


def test_cleanup_removes_the_reply_queue_and_stop_the_fanout_queue(
        vhost: str, url: str, topic: str) -> None:
    before = set(queues(vhost))
    transport = polymsg.get_transport(url)
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    with server:
        assert client.call({}, "echo", value=1) == 1
        during = set(queues(vhost)) - before
    transport.cleanup()
    after = set(queues(vhost))
    replies = [name for name in during if name.startswith("reply_")]
    fanout = [name for name in during if name.startswith(f"{topic}_fanout_")]
    assert len(replies) == 1 and len(fanout) == 1, during
    assert not after & {*replies, *fanout}, after
    assert topic in after  # the shared topic queue stays for servers to come


def test_a_server_consumes_again_after_its_queue_was_deleted(
        transport: polymsg.Transport, raw: Any, topic: str,
        logged: Callable[[str], LogWaiter]) -> None:
    cancelled = logged("(?i)cancel|deleted")
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Echo()])
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
    with server:
        assert client.call({}, "echo", value=1) == 1
        raw.queue_delete(topic)  # the broker cancels the server's consumer
        assert cancelled.seen.wait(WAIT), "the server was not told its queue went away"
        assert client.call({}, "echo", value=2) == 2


def test_a_reply_to_a_caller_that_is_gone_is_logged(
        url: str, transport: polymsg.Transport, topic: str,
        logged: Callable[[str], LogWaiter]) -> None:
    dropped = logged("(?i)reply")
    release = threading.Event()

    class Slow:
        def wait(self, ctxt: Any) -> str:
            release.wait(WAIT)
            return "too late"

    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [Slow()])
    with server:
        caller = polymsg.get_transport(url)
        try:
            with pytest.raises(polymsg.MessagingTimeout):
                polymsg.RPCClient(caller, polymsg.Target(topic=topic), timeout=0.5).call(
                    {}, "wait")
        finally:
            caller.cleanup()  # deletes the caller's reply queue
        release.set()
        assert dropped.seen.wait(WAIT), "the undeliverable reply was not logged"
