"""Behaviour particular to the kombu driver, against the real RabbitMQ."""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombutest import raw_channel
from polymsg_kombu._options import connection_kwargs, ssl_options

import polymsg
from polymsg import amqp as wire
from polymsg.driver import DriverOptions
from polymsg.testing import Recorder

WAIT = 10.0


class Endpoint:
    def __init__(self, calls: Recorder | None = None) -> None:
        self.calls = calls or Recorder()

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def note(self, ctxt: Any, value: Any) -> None:
        self.calls.add(value)


@pytest.fixture
def topic() -> str:
    return f"kombu-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def transport(rabbit_url: str) -> Iterator[polymsg.Transport]:
    with polymsg.get_transport(rabbit_url) as transport:
        yield transport


def serve(transport: polymsg.Transport, topic: str, endpoint: Any = None, **kwargs: Any) -> Any:
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                    [endpoint or Endpoint()], **kwargs)
    server.start()  # stopped by the transport's cleanup
    return server


# -- URL and options ------------------------------------------------------------

def test_unknown_url_option_is_named(rabbit_url: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="heartbeet"):
        polymsg.get_transport(rabbit_url + "?heartbeet=10")


def test_bad_url_option_value_is_refused(rabbit_url: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="heartbeat"):
        polymsg.get_transport(rabbit_url + "?heartbeat=often")


def test_url_options_override_configuration(rabbit_url: str) -> None:
    url = rabbit_url + "?prefetch_count=7&heartbeat=13&amqp_durable_queues=true"
    with polymsg.get_transport(url) as transport:
        settings = transport._driver.settings
        assert (settings.prefetch_count, settings.heartbeat) == (7, 13)
        assert settings.layout.durable


def test_rabbit_alias_loads_this_driver(rabbit_url: str) -> None:
    with polymsg.get_transport(rabbit_url.replace("rabbit+kombu://", "rabbit://")) as transport:
        assert type(transport._driver).__module__.startswith("polymsg_kombu")


def test_tls_options_map_to_py_amqp() -> None:
    options = ssl_options(wire.TLSSpec(ca_file="/ca.pem", cert_file="/c.pem",
                                       key_file="/k.pem"))
    assert options == {"cert_reqs": ssl.CERT_REQUIRED, "verify_hostname": True,
                       "ca_certs": "/ca.pem", "certfile": "/c.pem", "keyfile": "/k.pem"}
    insecure = ssl_options(wire.TLSSpec(verify=False))
    assert insecure == {"cert_reqs": ssl.CERT_NONE, "verify_hostname": False}
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl_cert_file"):
        wire.RabbitSettings.from_options(polymsg.TransportURL.parse("rabbit://h/"),
                                         DriverOptions({"ssl": True, "ssl_key_file": "/k.pem"}))
    url = polymsg.TransportURL.parse("rabbit://u:p@broker.example/")
    spec = wire.ConnectionSpec.from_url(url, DriverOptions({}))
    spec = dataclasses.replace(spec, tls=wire.TLSSpec(ca_file="/ca"))
    kwargs = connection_kwargs(spec, spec.endpoints[0])
    assert kwargs["port"] == 5672  # the spec was made without TLS: its port stays
    assert kwargs["ssl"] == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/ca",
                             "server_hostname": "broker.example"}


# -- connections ------------------------------------------------------------------

def test_failover_skips_a_dead_host(rabbit_url: str, topic: str) -> None:
    parsed = polymsg.TransportURL.parse(rabbit_url)
    good = parsed.hosts[0]
    url = (f"rabbit+kombu://{good.username}:{good.password}@127.0.0.1:1,"
           f"{good.username}:{good.password}@{good.hostname}:{good.port}/"
           f"{parsed.virtual_host or ''}")
    with polymsg.get_transport(url) as transport:
        assert "multi_host" in transport.capabilities
        serve(transport, topic)
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT, retry=0)
        assert client.call({}, "echo", value="through the second host") == \
            "through the second host"


def test_retry_counts_connection_rounds(topic: str) -> None:
    url = "rabbit+kombu://guest:guest@127.0.0.1:1/?retry_interval=0.01&retry_backoff=0"
    with polymsg.get_transport(url) as transport:
        driver = transport._driver
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), retry=3)
        with pytest.raises(polymsg.MessageDeliveryFailure, match="after 3 retries") as caught:
            client.cast({}, "note", value=1)
        assert "connection refused" in str(caught.value)
        assert driver.publisher.link.connects == 0


def test_heartbeats_flow_while_an_endpoint_runs_long(rabbit_url: str, topic: str) -> None:
    # RabbitMQ closes a connection that stays silent for two heartbeat
    # intervals (4 s here). The endpoint holds its worker for 7 s; the I/O
    # threads must keep both connections alive meanwhile. This waits on
    # purpose: the test is about time passing.
    finished = threading.Event()

    class Slow:
        def slow(self, ctxt: Any) -> str:
            finished.wait(7.0)
            return "done"

    url = rabbit_url + "?heartbeat=2"
    with polymsg.get_transport(url) as server_side, polymsg.get_transport(url) as client_side:
        serve(server_side, topic, Slow())
        client = polymsg.RPCClient(client_side, polymsg.Target(topic=topic), timeout=30)
        assert client.call({}, "slow") == "done"
        server, client_driver = server_side._driver, client_side._driver
        for link in (server.consumer.link, server.publisher.link,
                     client_driver.publisher.link, client_driver.replies.link):
            assert link.connects == 1, f"the {link.name} connection was dropped"


# -- declarations -----------------------------------------------------------------

def test_queue_with_other_arguments_warns_and_keeps_working(
        transport: polymsg.Transport, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    calls = Recorder()
    # The first server declares the topic queues with x-expires...
    serve(transport, topic, Endpoint(calls), queue_ttl=60)
    caplog.set_level(logging.WARNING, logger="polymsg_kombu")
    # ...a second transport's server asks for other arguments on the same queue.
    with polymsg.get_transport(transport.url) as other:
        second = polymsg.get_rpc_server(other, polymsg.Target(topic=topic, server="s2"),
                                        [Endpoint(calls)], queue_ttl=5)
        second.start()
        warnings = [r.getMessage() for r in caplog.records if "already exists" in r.getMessage()]
        assert any(repr(topic) in text for text in warnings), warnings
        client = polymsg.RPCClient(other, polymsg.Target(topic=topic), timeout=WAIT,
                                   queue_ttl=30)
        for value in range(4):
            client.cast({}, "note", value=value)
        assert client.call({}, "echo", value="alive") == "alive"
        calls.wait_for(lambda events: sorted(events) == [0, 1, 2, 3], WAIT)
        second.stop()
        second.wait()


def test_exchange_with_other_properties_warns(transport: polymsg.Transport, topic: str,
                                              rabbit_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    exchange = f"durable-{topic}"
    with raw_channel(rabbit_url) as channel:
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    try:
        caplog.set_level(logging.WARNING, logger="polymsg_kombu")
        target = polymsg.Target(topic=topic, server="s1", exchange=exchange)
        polymsg.get_rpc_server(transport, target, [Endpoint()]).start()
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic, exchange=exchange),
                                   timeout=WAIT)
        assert client.call({}, "echo", value=1) == 1
        assert any(f"exchange {exchange!r} already exists" in r.getMessage()
                   for r in caplog.records)
    finally:
        with raw_channel(rabbit_url) as channel:
            channel.exchange_delete(exchange)


def test_cast_recreates_a_queue_deleted_since_it_was_declared(
        transport: polymsg.Transport, topic: str, rabbit_url: str) -> None:
    client = polymsg.RPCClient(transport, polymsg.Target(topic=topic))
    client.cast({}, "note", value="first")  # declares the topic queue
    with raw_channel(rabbit_url) as channel:
        assert channel.queue_delete(topic) == 1
    client.cast({}, "note", value="second")  # returned unroutable, declared again, resent
    calls = Recorder()
    serve(transport, topic, Endpoint(calls))
    assert calls.wait_for_count(1, WAIT) == ["second"]


# -- garbage on the wire -----------------------------------------------------------





@pytest.mark.parametrize("fast", [True, False], ids=["private-hooks", "public-path"])
def test_both_io_paths_carry_calls_casts_and_many_acks(
        rabbit_url: str, topic: str, fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # polymsg_kombu._fastpath uses py-amqp's private transport hooks only on
    # tested versions; the public path must work just as well.
    monkeypatch.setenv("POLYMSG_KOMBU_FASTPATH", "1" if fast else "0")
    with polymsg.get_transport(rabbit_url) as transport:
        calls = Recorder()
        serve(transport, topic, Endpoint(calls))
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
        for i in range(200):
            client.cast({}, "note", value=i)
        assert client.call({}, "echo", value="done") == "done"
        assert sorted(calls.wait_for_count(200, WAIT)) == list(range(200))
        session = transport._driver.publisher.link.current()
        assert session is not None and session.fast.active is fast
