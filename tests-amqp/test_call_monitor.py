"""Call monitoring (``call_monitor_timeout``) on both RabbitMQ drivers, with the
real oslo.messaging on the other side: a call running longer than the monitor
timeout (shorter than the call timeout) succeeds because the server's
heartbeats keep it alive, in both directions. Also the wire and reply-table
logic both drivers share."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from amqptest import FAST_RETRY, make_url, shared_conf
from oslo_config import cfg

import polymsg
from polymsg import amqp
from polymsg._amqp import encode_heartbeat
from polymsg._amqp_replies import ReplyTable
from polymsg.driver import Reply

#: oslo.messaging's servers send heartbeats only for a whole number of seconds
#: >= 2 (every ``int(_timeout) / 2`` s); polymsg's follow any positive value.
MONITOR = 2.0
#: How long the endpoint runs: past the monitor timeout, well within the call timeout.
RUNS = 3 * MONITOR
CALL_TIMEOUT = 60.0


class Slow:
    """An endpoint whose method outlives the call-monitor timeout."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.finished = threading.Event()

    def slow(self, ctxt: Any, seconds: float) -> dict[str, Any]:
        time.sleep(seconds)  # the work a caller monitors, not synchronisation
        self.finished.set()
        return {"server": self.name, "slept": seconds}


@pytest.fixture
def exchange() -> str:
    return f"monitor-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def conf(exchange: str, vhost: str) -> cfg.ConfigOpts:
    """One ConfigOpts for both libraries: one control exchange, durable queues on
    oslo.messaging's side (its defaults declare transient ones)."""
    om = pytest.importorskip("oslo_messaging", reason="oslo.messaging is a test dependency")
    conf = shared_conf(exchange)
    om.get_rpc_transport(conf, url=make_url("rabbit", vhost)).cleanup()  # registers its options
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    return conf


@pytest.fixture
def oslo_transport(conf: cfg.ConfigOpts, vhost: str) -> Iterator[Any]:
    import oslo_messaging as om

    transport = om.get_rpc_transport(conf, url=make_url("rabbit", vhost))
    yield transport
    transport.cleanup()


@pytest.fixture
def transport(conf: cfg.ConfigOpts, scheme: str, vhost: str) -> Iterator[polymsg.Transport]:
    url = make_url(scheme, vhost, f"amqp_durable_queues=true&{FAST_RETRY}")
    transport = polymsg.get_transport(url, conf=conf)
    yield transport
    transport.cleanup()


# oslo.messaging's own reply queues on classic queues are transient non-exclusive
# ones, which a RabbitMQ 4 node with 4.3's denials refuses; tests/rabbit4 covers
# oslo.messaging on quorum queues there.
_OSLO_CLASSIC = pytest.mark.skipif(
    os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").startswith("4"),
    reason="oslo.messaging's classic reply queues are refused by RabbitMQ 4 with 4.3's denials")


@_OSLO_CLASSIC
def test_oslo_client_monitors_a_long_polymsg_call(transport: polymsg.Transport,
                                                  oslo_transport: Any, topic: str) -> None:
    import oslo_messaging as om

    endpoint = Slow("polymsg")
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="p1"),
                                    [endpoint])
    server.start()
    try:
        client = om.get_rpc_client(oslo_transport, om.Target(topic=topic),
                                   timeout=CALL_TIMEOUT, call_monitor_timeout=MONITOR)
        started = time.monotonic()
        # Without heartbeats oslo.messaging raises MessagingTimeout after MONITOR s.
        reply = client.call({}, "slow", seconds=RUNS)
        assert reply == {"server": "polymsg", "slept": RUNS}
        assert time.monotonic() - started >= RUNS
    finally:
        server.stop()
        server.wait()


@_OSLO_CLASSIC
def test_polymsg_client_monitors_a_long_oslo_call(transport: polymsg.Transport,
                                                  oslo_transport: Any, topic: str) -> None:
    import warnings

    import oslo_messaging as om

    endpoint = Slow("oslo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = om.get_rpc_server(oslo_transport, om.Target(topic=topic, server="o1"),
                                   [endpoint], executor="threading")
    server.start()
    try:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic),
                                   timeout=CALL_TIMEOUT, call_monitor_timeout=MONITOR)
        started = time.monotonic()
        # Without heartbeats polymsg fails the call with MessagingTimeout after MONITOR s.
        reply = client.call({}, "slow", seconds=RUNS)
        assert reply == {"server": "oslo", "slept": RUNS}
        assert time.monotonic() - started >= RUNS
    finally:
        server.stop()
        server.wait()


# -- the shared wire and reply-table logic (no broker) ------------------------------------

def test_a_call_carries_its_monitor_timeout_as_oslo_does() -> None:
    body = amqp.encode_request({}, {"method": "m"}, msg_id="c1", reply_q="rq",
                               call_monitor_timeout=2.5)
    assert amqp.decode_request(body).call_monitor_timeout == 2.5
    plain = amqp.encode_request({}, {"method": "m"}, msg_id="c2", reply_q="rq")
    assert amqp.decode_request(plain).call_monitor_timeout is None


@pytest.mark.parametrize("value", ["0", "-3", "true", '"30"', "[1]", "null", "Infinity", "NaN"])
def test_a_monitor_timeout_that_is_no_positive_finite_number_is_ignored(value: str) -> None:
    body = f'{{"method": "m", "_msg_id": "c1", "_reply_q": "rq", "_timeout": {value}}}'
    assert amqp.decode_request(body.encode()).call_monitor_timeout is None


def test_the_heartbeat_frame_is_oslos() -> None:
    frame = amqp.decode_reply(encode_heartbeat("c1"))
    assert (frame.msg_id, frame.result, frame.failure, frame.ending) == ("c1", None, None, False)
    assert frame.heartbeat
    assert not amqp.decode_reply(amqp.encode_reply("c1", None)).heartbeat


def test_heartbeats_never_complete_a_call_nor_replace_an_old_style_reply() -> None:
    table = ReplyTable("rq")
    beats: list[str] = []
    future: Future[Reply] = Future()
    table.expect("c1", future, lambda: beats.append("beat"))
    table.deliver(encode_heartbeat("c1"))
    assert beats == ["beat"] and not future.done()
    table.deliver(amqp.encode_reply("c1", {"answer": 42}, ending=False))  # old sender, part 1
    table.deliver(encode_heartbeat("c1"))
    assert beats == ["beat", "beat"] and not future.done()
    table.deliver(amqp.encode_reply("c1", None))  # old sender, part 2
    assert future.result(0) == Reply(result={"answer": 42})
    table.deliver(encode_heartbeat("c1"))  # after the reply: nobody to tell
    assert beats == ["beat", "beat"] and len(table) == 0


def test_a_call_without_a_monitor_ignores_heartbeats() -> None:
    table = ReplyTable("rq")
    future: Future[Reply] = Future()
    table.expect("c1", future)
    table.deliver(encode_heartbeat("c1"))
    assert not future.done()
    table.deliver(amqp.encode_reply("c1", None))
    assert future.result(0) == Reply(result=None)
