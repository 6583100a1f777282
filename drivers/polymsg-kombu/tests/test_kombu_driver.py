"""Behaviour particular to the kombu driver, against the real RabbitMQ."""

from __future__ import annotations

import dataclasses
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from polymsg_kombu._options import py_amqp_kwargs, ssl_options

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
    kwargs = py_amqp_kwargs(spec, spec.endpoints[0], "name")
    assert kwargs["host"] == "broker.example:5672"  # made without TLS: its port stays
    assert kwargs["ssl"] == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/ca",
                             "server_hostname": "broker.example"}


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
        connection = transport._driver._send.connection
        assert connection is not None and connection.hooks.active is fast
