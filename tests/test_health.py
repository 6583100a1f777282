"""Transport health through OpenTelemetry: the memory driver, labels, the SPI's edges."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

import polymsg
from polymsg import _health
from polymsg._health_amqp import HealthBook
from polymsg.driver import HEALTH_STATS, HealthStat
from polymsg.testing._metrics import MetricsProbe, metrics_probe


@pytest.fixture
def probe() -> Iterator[MetricsProbe]:
    with metrics_probe() as found:
        yield found


def test_every_health_stat_is_a_polymsg_instrument(probe: MetricsProbe) -> None:
    with polymsg.get_transport(f"memory://{uuid.uuid4().hex}"):
        data = probe.reader.get_metrics_data()
        names = {m.name for r in data.resource_metrics for s in r.scope_metrics
                 for m in s.metrics}
    assert {"polymsg.queues", "polymsg.queue.messages", "polymsg.queue.unacknowledged"} <= names
    assert all(kind in ("gauge", "counter") for kind, _, _ in HEALTH_STATS.values())


def test_memory_counts_stored_messages_until_a_server_takes_them(probe: MetricsProbe) -> None:
    bus = f"memory://{uuid.uuid4().hex}"
    done = threading.Event()
    taken: list[int] = []

    class Endpoint:
        def work(self, ctxt: dict[str, Any], n: int) -> None:
            taken.append(n)
            if len(taken) == 3:
                done.set()

    with polymsg.get_transport(bus) as transport:
        label = _health.label_of(transport)
        client = polymsg.RPCClient(transport, polymsg.Target(topic="jobs"))
        for n in range(3):
            client.cast({}, "work", n=n)
        assert probe.value("polymsg.queue.messages", transport=label) == 3
        assert probe.value("polymsg.queues", transport=label) == 1
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic="jobs", server="a"),
                                        [Endpoint()])
        with server:
            assert done.wait(30)
            probe.wait("polymsg.queue.messages", lambda v: v == 0, transport=label)
            probe.wait("polymsg.queue.unacknowledged", lambda v: v == 0, transport=label)
    assert probe.points("polymsg.queues", transport=label) == []  # cleaned up: not reported


def test_labels_name_the_transport_without_credentials(probe: MetricsProbe) -> None:
    name = uuid.uuid4().hex
    with polymsg.get_transport(f"memory://alice:s3cret@{name}/vh"), \
            polymsg.get_transport(f"memory://bob:other@{name}/vh"):
        labels = [a for a, _ in probe.points("polymsg.queues")
                  if name in a["transport"]]
    assert sorted(a["transport"] for a in labels) == [f"memory://{name}/vh",
                                                      f"memory://{name}/vh#2"]
    assert all(a["driver"] == "memory" and a["system"] == "memory" for a in labels)
    text = repr(labels)
    assert "s3cret" not in text and "alice" not in text and "bob" not in text


def test_a_failing_health_reading_is_skipped(probe: MetricsProbe,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with polymsg.get_transport(f"memory://{uuid.uuid4().hex}") as broken, \
            polymsg.get_transport(f"memory://{uuid.uuid4().hex}") as fine:
        def explode() -> Sequence[HealthStat]:
            raise RuntimeError("bug")

        monkeypatch.setattr(broken._driver, "health", explode)
        found = {a["transport"] for a, _ in probe.points("polymsg.queues")}
        assert _health.label_of(fine) in found
        assert _health.label_of(broken) not in found


def test_unknown_stat_names_are_ignored(probe: MetricsProbe,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with polymsg.get_transport(f"memory://{uuid.uuid4().hex}") as transport:
        monkeypatch.setattr(transport._driver, "health",
                            lambda: [HealthStat("no.such.stat", 1), HealthStat("queues", 7)])
        label = _health.label_of(transport)
        assert probe.value("polymsg.queues", transport=label) == 7
        assert probe.points("polymsg.no.such.stat") == []


class _Link:
    def __init__(self, role: str) -> None:
        self.role, self.attempted, self.is_open, self.opens, self.failures = (
            role, False, False, 0, 0)


class _Window:
    def __init__(self, size: int, in_flight: int) -> None:
        self.size, self.in_flight = size, in_flight


def test_health_book_reports_links_once_tried_and_sums_windows() -> None:
    book = HealthBook()
    links = [_Link("publisher"), _Link("publisher"), _Link(""), _Link("reply")]
    for link in links:
        book.add(link)
    windows = [_Window(8, 3), _Window(4, 1)]
    for window in windows:
        book.add(window)
    links[0].attempted, links[0].is_open, links[0].opens, links[0].failures = True, True, 3, 2
    links[1].attempted = True
    links[2].attempted = True
    stats = {(s.name, s.labels.get("role")): s.value for s in book.readings()}
    assert stats[("connection.up", "publisher")] == 1
    assert stats[("connection.reconnects", "publisher")] == 2
    assert stats[("connection.failures", "publisher")] == 2
    assert stats[("connection.up", "publisher-2")] == 0
    assert stats[("connection.reconnects", "publisher-2")] == 0
    assert ("connection.up", "connection-3") in stats
    assert ("connection.up", "reply") not in stats  # never tried: not "down"
    assert stats[("confirm_window.in_flight", None)] == 4
    assert stats[("confirm_window.size", None)] == 12
