"""TLS through URL query options on both RabbitMQ drivers, against a TLS endpoint in
front of the test broker."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqptest import base_url, make_url
from proxy import Proxy, self_signed_certificate

import polymsg

WAIT = 20.0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_port(certificate: tuple[Path, Path]) -> Iterator[int]:
    """A TLS endpoint (the certificate above) forwarding to the test broker."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    broker = base_url().hosts[0]
    proxy = Proxy((broker.hostname or "127.0.0.1", broker.port or 5672), tls=context).start()
    try:
        yield proxy.port
    finally:
        proxy.stop()


def _tls_url(scheme: str, vhost: str, port: int, query: str, host: str = "localhost") -> str:
    return make_url(scheme, vhost, query, host=host, port=port)


class Echo:
    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


def test_call_over_tls_checks_the_broker_certificate(
        scheme: str, vhost: str, tls_port: int, certificate: tuple[Path, Path]) -> None:
    tls = _tls_url(scheme, vhost, tls_port, f"ssl=true&ssl_ca_file={certificate[0]}")
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    with polymsg.get_transport(tls) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s"),
                                        [Echo()])
        with server:
            client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
            assert client.call({}, "echo", value="encrypted") == "encrypted"


def test_untrusted_certificate_is_refused(scheme: str, vhost: str, tls_port: int) -> None:
    # No ssl_ca_file: the system's authorities do not know the test certificate.
    with polymsg.get_transport(_tls_url(scheme, vhost, tls_port, "ssl=true")) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic="tls-refused"), retry=0)
        with pytest.raises(polymsg.MessageDeliveryFailure) as caught:
            client.cast({}, "echo", value=1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value), str(caught.value)


def test_host_name_check_can_be_turned_off(
        scheme: str, vhost: str, tls_port: int, certificate: tuple[Path, Path]) -> None:
    # The certificate names localhost, not the address 127.0.0.1.
    query = f"ssl=true&ssl_ca_file={certificate[0]}"
    by_address = _tls_url(scheme, vhost, tls_port, query, host="127.0.0.1")
    with polymsg.get_transport(by_address) as strict:
        client = polymsg.RPCClient(strict, polymsg.Target(topic="tls-name"), retry=0)
        with pytest.raises(polymsg.MessageDeliveryFailure, match=r"match|mismatch"):
            client.cast({}, "echo", value=1)
    relaxed = _tls_url(scheme, vhost, tls_port, f"{query}&ssl_verify_hostname=false",
                       host="127.0.0.1")
    with polymsg.get_transport(relaxed) as transport:
        polymsg.RPCClient(transport, polymsg.Target(topic="tls-name"), retry=0).cast(
            {}, "echo", value=1)


def test_missing_ca_file_is_a_clear_url_error(scheme: str, vhost: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl"):
        polymsg.get_transport(make_url(scheme, vhost, "ssl=true&ssl_ca_file=/nonexistent.pem"))
