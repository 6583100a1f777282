"""Conformance: several hosts in one URL fail over (the ``multi_host`` capability)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness

__all__ = ["MultiHostTests"]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_dead_first_host(url: str) -> str:
    """``url`` with an unreachable host put in front of its own hosts."""
    parsed = polymsg.TransportURL.parse(url)
    if not parsed.hosts:
        pytest.skip("the driver's URL names no host to fail over to")
    live = parsed.hosts[0]
    dead = dataclasses.replace(live, hostname="127.0.0.1", port=_closed_port())
    return dataclasses.replace(parsed, hosts=(dead, *parsed.hosts)).render(hide_password=False)


class MultiHostTests(DriverFixtures):
    """A dead first host does not stop clients, servers or notifiers."""

    def test_failover_past_a_dead_first_host(self, harness: Harness) -> None:
        self.require(harness.transport, "multi_host")
        transport = harness.new_transport(_with_dead_first_host(harness.url))
        harness.rpc_server("failover-server", transport=transport)
        client = harness.client(transport=transport)
        assert client.call({}, "echo", value="over") == "over"
        client.cast({}, "note", value="cast over")
        harness.calls.wait_for(lambda calls: any(c.kwargs.get("value") == "cast over"
                                                 for c in calls), harness.wait_timeout)

    def test_failover_client_reaches_single_host_server(self, harness: Harness) -> None:
        self.require(harness.transport, "multi_host")
        harness.rpc_server("plain-server")
        transport = harness.new_transport(_with_dead_first_host(harness.url))
        client = harness.client(transport=transport, server="plain-server")
        assert client.call({}, "echo", value=[1, 2]) == [1, 2]
