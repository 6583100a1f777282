"""Connection and confirm-window health of both RabbitMQ drivers, read through
OpenTelemetry while a proxy in front of the real broker cuts and freezes the
connections."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from amqptest import FAST_RETRY, make_url
from proxy import Proxy

import polymsg

pytest.importorskip("opentelemetry.sdk.metrics")
from polymsg._health import label_of
from polymsg.testing._metrics import MetricsProbe, metrics_probe

TIMEOUT = 30.0
ROLES = {"rabbit+kombu": ("send", "receive"), "rabbit+pika": ("send", "receive")}


@pytest.fixture
def probe() -> Iterator[MetricsProbe]:
    with metrics_probe() as found:
        yield found


@pytest.fixture
def proxy(scheme: str, vhost: str) -> Iterator[Proxy]:
    host = polymsg.TransportURL.parse(make_url(scheme, vhost)).hosts[0]
    running = Proxy((host.hostname or "127.0.0.1", host.port or 5672)).start()
    try:
        yield running
    finally:
        running.stop()


class Echo:
    def __init__(self) -> None:
        self.casts = threading.Semaphore(0)

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value

    def note(self, ctxt: dict[str, Any], n: int) -> None:
        self.casts.release()


def test_connections_up_lost_and_reconnected(scheme: str, vhost: str, topic: str,
                                             proxy: Proxy, probe: MetricsProbe) -> None:
    url = make_url(scheme, vhost, FAST_RETRY, port=proxy.port)
    with polymsg.get_transport(url) as transport:
        label = label_of(transport)
        assert "guest" not in label and str(proxy.port) in label
        assert probe.points("polymsg.connection.up", transport=label) == []  # nothing tried yet
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                        [Echo()])
        with server:
            client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=TIMEOUT)
            assert client.call({}, "echo", value=1) == 1
            for role in ROLES[scheme]:
                assert probe.value("polymsg.connection.up", transport=label, role=role) == 1
                assert probe.value("polymsg.connection.reconnects", transport=label,
                                   role=role) == 0
                assert probe.value("polymsg.connection.failures", transport=label,
                                   role=role) == 0
            proxy.stop()  # every connection cut, and nothing listens: reconnects fail
            probe.wait("polymsg.connection.up", lambda v: v == 0, transport=label,
                       role=ROLES[scheme][1])
            proxy.start()
            assert client.call({}, "echo", value=2) == 2
            for role in ROLES[scheme]:
                probe.wait("polymsg.connection.up", lambda v: v == 1, transport=label,
                           role=role)
                assert probe.value("polymsg.connection.reconnects", transport=label,
                                   role=role) >= 1
                assert probe.value("polymsg.connection.failures", transport=label,
                                   role=role) >= 1
    assert probe.points("polymsg.connection.up", transport=label) == []  # cleaned up


def test_a_refused_login_is_a_down_connection_with_failures(scheme: str, vhost: str,
                                                            topic: str,
                                                            probe: MetricsProbe) -> None:
    url = make_url(scheme, vhost, FAST_RETRY, password="not-the-password")
    with polymsg.get_transport(url) as transport:
        label = label_of(transport)
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), retry=0)
        with pytest.raises(polymsg.MessageDeliveryFailure):
            client.cast({}, "note", n=1)
        role = ROLES[scheme][0]
        assert probe.value("polymsg.connection.up", transport=label, role=role) == 0
        assert probe.value("polymsg.connection.failures", transport=label, role=role) >= 1
        assert probe.value("polymsg.connection.reconnects", transport=label, role=role) == 0
        text = repr(probe.points("polymsg.connection.up"))
    assert "not-the-password" not in text


def test_confirm_window_occupancy(scheme: str, vhost: str, topic: str, proxy: Proxy,
                                  probe: MetricsProbe) -> None:
    endpoint = Echo()
    with polymsg.get_transport(make_url(scheme, vhost, FAST_RETRY)) as server_side, \
            polymsg.get_transport(make_url(scheme, vhost, f"{FAST_RETRY}&confirm_window=8",
                                           port=proxy.port)) as transport:
        label = label_of(transport)
        server = polymsg.get_rpc_server(server_side, polymsg.Target(topic=topic, server="s1"),
                                        [endpoint])
        with server:
            client = polymsg.RPCClient(transport, polymsg.Target(topic=topic))
            client.cast({}, "note", n=0)  # connected, the route declared
            assert endpoint.casts.acquire(timeout=TIMEOUT)
            probe.wait("polymsg.confirm_window.in_flight", lambda v: v == 0, transport=label)
            assert probe.value("polymsg.confirm_window.size", transport=label) == 8
            proxy.hold()  # the broker's confirms wait in the proxy
            for n in range(5):
                client.cast({}, "note", n=n + 1)
            assert probe.value("polymsg.confirm_window.in_flight", transport=label) == 5
            proxy.release()
            probe.wait("polymsg.confirm_window.in_flight", lambda v: v == 0, transport=label)
            for _ in range(5):
                assert endpoint.casts.acquire(timeout=TIMEOUT)


def test_prometheus_endpoint_serves_connection_health(scheme: str, vhost: str, topic: str
                                                      ) -> None:
    import urllib.request

    pytest.importorskip("prometheus_client")
    from polymsg import _prometheus

    _prometheus.stop()
    host, port = _prometheus.serve("127.0.0.1", 0)
    try:
        with polymsg.get_transport(make_url(scheme, vhost, password="guest")) as transport:
            label = label_of(transport)
            polymsg.RPCClient(transport, polymsg.Target(topic=topic)).cast({}, "note", n=1)
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as answer:
                text = answer.read().decode()
    finally:
        _prometheus.stop()
    assert "# TYPE polymsg_connection_reconnects_total counter" in text
    assert "# TYPE polymsg_connection_up gauge" in text
    role = ROLES[scheme][0]
    [up] = [line for line in text.splitlines() if line.startswith("polymsg_connection_up{")
            and f'transport="{label}"' in line and f'role="{role}"' in line]
    assert f'driver="{scheme}"' in up and 'system="rabbitmq"' in up and up.endswith(" 1.0")
    assert "guest" not in text
