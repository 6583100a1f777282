"""The Prometheus endpoint: turned on by one option, scraped over real HTTP."""

from __future__ import annotations

import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from oslo_config import cfg

pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.exporter.prometheus")

import polymsg
from polymsg import _prometheus

GROUP = "polymsg_observability"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def no_endpoint() -> Iterator[None]:
    _prometheus.stop()
    yield
    _prometheus.stop()


def conf_with(port: int, host: str | None = None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([], project="polymsg-test")
    conf.register_opts(_prometheus.OPTS, group=GROUP)
    conf.set_override("prometheus_port", port, group=GROUP)
    if host is not None:
        conf.set_override("prometheus_host", host, group=GROUP)
    return conf


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_one_option_serves_health_metrics_on_loopback() -> None:
    port = free_port()
    name = uuid.uuid4().hex
    with polymsg.get_transport(f"memory://user:hunter2@{name}/", conf=conf_with(port)) as t:
        client = polymsg.RPCClient(t, polymsg.Target(topic="jobs"))
        client.cast({}, "work")
        client.cast({}, "work")
        assert _prometheus._endpoint is not None
        assert _prometheus._endpoint.host == "127.0.0.1"
        text = scrape(port)
    assert "# TYPE polymsg_queue_messages gauge" in text
    [line] = [s for s in samples(text, "polymsg_queue_messages") if name in s]
    assert f'transport="memory://{name}/"' in line and 'driver="memory"' in line
    assert line.endswith(" 2.0")
    assert "hunter2" not in text and "user@" not in text
    # only polymsg's metrics: not the process, platform or GC collectors of the default registry
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert names and all(n.startswith(("polymsg_", "oslo_messaging_rpc_")) for n in names), names


def test_rpc_metrics_are_served_with_oslo_metrics_names() -> None:
    _, port = _prometheus.serve("127.0.0.1", 0)

    class Endpoint:
        def ping(self, ctxt: dict[str, object]) -> str:
            return "pong"

    topic = f"t{uuid.uuid4().hex[:8]}"
    with polymsg.get_transport(f"memory://{uuid.uuid4().hex}") as transport, \
            polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                   [Endpoint()]):
        assert polymsg.RPCClient(transport, polymsg.Target(topic=topic)).call({}, "ping") \
            == "pong"
        text = scrape(port)
    for name in ("oslo_messaging_rpc_client_invocation_start_total",
                 "oslo_messaging_rpc_client_invocation_end_total",
                 "oslo_messaging_rpc_server_invocation_end_total",
                 "oslo_messaging_rpc_server_processing_seconds_count"):
        [line] = [x for x in samples(text, name) if f'topic="{topic}"' in x]
        assert 'method="ping"' in line and line.endswith(" 1.0"), line


def test_port_zero_serves_nothing() -> None:
    with polymsg.get_transport(f"memory://{uuid.uuid4().hex}", conf=conf_with(0)):
        assert _prometheus._endpoint is None


def test_one_endpoint_per_process() -> None:
    port = free_port()
    with polymsg.get_transport("memory://", conf=conf_with(port)), \
            polymsg.get_transport("memory://", conf=conf_with(free_port())):
        assert _prometheus._endpoint is not None and _prometheus._endpoint.port == port


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(polymsg.NotSupported) as caught:
        polymsg.get_transport("memory://", conf=conf_with(free_port()))
    assert "pip install 'polymsg[prometheus]'" in str(caught.value)
    assert "prometheus_port" in str(caught.value)


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(polymsg.MessagingError) as caught:
            polymsg.get_transport("memory://", conf=conf_with(port))
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert _prometheus._endpoint is None
