"""Health readings of the zmq driver through OpenTelemetry, on real sockets:
what the receiver holds, peer connections, the hosts the matchmaker knows."""

from __future__ import annotations

import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from zmqtest import Hosts, ReceiverProcess, free_port, wait_until

import polymsg

pytest.importorskip("opentelemetry.sdk.metrics")
from polymsg._health import label_of
from polymsg.testing._metrics import MetricsProbe, metrics_probe

TIMEOUT = 30.0


@pytest.fixture
def probe() -> Iterator[MetricsProbe]:
    with metrics_probe() as found:
        yield found


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    made = Hosts(["a", "b"])
    try:
        yield made
    finally:
        for host in made.hosts:
            host.stop_receiver()
        shutil.rmtree(made.root, ignore_errors=True)


class Worker:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen: list[int] = []
        self.done = threading.Event()

    def work(self, ctxt: dict[str, Any], n: int, pad: str) -> None:
        self.seen.append(n)
        if len(self.seen) == self.expected:
            self.done.set()


def test_receiver_holds_messages_until_a_server_comes(hosts: Hosts,
                                                      probe: MetricsProbe) -> None:
    with polymsg.get_transport(hosts[0].url()) as transport:
        label = label_of(transport)
        client = polymsg.RPCClient(transport, polymsg.Target(topic="jobs"))
        for n in range(3):
            client.cast({}, "work", n=n, pad="x" * 1000)
        probe.wait("polymsg.receiver.held_messages", lambda v: v == 3, timeout=TIMEOUT,
                   transport=label)
        assert probe.value("polymsg.receiver.held_bytes", transport=label) >= 3000
        assert probe.value("polymsg.receiver.topics", transport=label) >= 1
        worker = Worker(3)
        with polymsg.get_rpc_server(transport, polymsg.Target(topic="jobs", server="w"),
                                    [worker]):
            assert worker.done.wait(TIMEOUT)
            probe.wait("polymsg.receiver.held_messages", lambda v: v == 0, timeout=TIMEOUT,
                       transport=label)
            assert probe.value("polymsg.receiver.held_bytes", transport=label) == 0
    assert sorted(worker.seen) == [0, 1, 2]


def test_peers_and_hosts_of_a_ring(hosts: Hosts, probe: MetricsProbe) -> None:
    hosts.write_ring({"jobs": [hosts[1].address], "*": [hosts[0].address]})
    hosts[1].start_receiver()
    worker = Worker(1)
    with polymsg.get_transport(hosts[1].url(start_receiver="false")) as server_side, \
            polymsg.get_transport(hosts[0].url(start_receiver="false")) as client_side:
        label = label_of(client_side)
        assert probe.value("polymsg.known_hosts", transport=label, system="zeromq",
                           driver="zmq") == 2
        assert probe.value("polymsg.peers", transport=label) == 0
        assert probe.points("polymsg.receiver.held_messages", transport=label) == []
        with polymsg.get_rpc_server(server_side, polymsg.Target(topic="jobs", server="b"),
                                    [worker]):
            polymsg.RPCClient(client_side, polymsg.Target(topic="jobs")).cast(
                {}, "work", n=1, pad="")
            assert worker.done.wait(TIMEOUT)
        assert probe.value("polymsg.peers", transport=label) == 1


def test_receiver_daemon_serves_its_health_to_prometheus(hosts: Hosts) -> None:
    pytest.importorskip("prometheus_client")
    port = free_port()
    config = os.path.join(hosts.root, "receiver.conf")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"[polymsg_observability]\nprometheus_port = {port}\n")
    host = hosts[0]
    daemon = ReceiverProcess(host.url(), "--config-file", config)
    try:
        daemon.wait_for_line("listening on tcp port", timeout=TIMEOUT)
        with polymsg.get_transport(host.url(start_receiver="false")) as transport:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="jobs"))
            for n in range(2):
                client.cast({}, "work", n=n, pad="")

            def held() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=5) as answer:
                        text = answer.read().decode()
                except OSError:
                    return None  # not serving yet
                lines = [line for line in text.splitlines()
                         if line.startswith("polymsg_receiver_held_messages{")]
                return lines[0] if lines else None

            assert wait_until(lambda: (held() or "").endswith(" 2.0"), timeout=TIMEOUT), held()
            line = held() or ""
            assert 'system="zeromq"' in line and f'transport="zmq://{host.address}/"' in line
    finally:
        assert daemon.stop() == 0
