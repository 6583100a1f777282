"""Conformance: declared capabilities, and NotSupported for undeclared ones.

Every feature test skips when its capability is not declared; the tests here
make sure such a skip is honest: using an undeclared feature must raise
:class:`polymsg.NotSupported` when it is used (at call, cast or notify time
for clients and notifiers, at ``start()`` for servers and listeners), never
be ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import polymsg
from polymsg.driver import CAPABILITIES
from polymsg.testing._fixtures import DriverFixtures, Harness
from polymsg.testing._support import NotificationEndpoint

__all__ = ["CapabilityTests"]


def _rpc(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    client = harness.client()
    server = polymsg.get_rpc_server(harness.transport,
                                    polymsg.Target(topic=harness.topic, server="s"),
                                    [harness.endpoint()])
    return [lambda: client.call({}, "echo", value=1),
            lambda: client.cast({}, "note", value=1),
            server.start]


def _fanout(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    client = harness.client(fanout=True)
    return [lambda: client.cast({}, "note", value=1)]


def _notify(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    notifier = harness.notifier()
    return [lambda: notifier.info({}, "conformance.unsupported", {}),
            _listener(harness).start]


def _pools(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    return [_listener(harness, pool="conformance-pool").start]


def _requeue(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    return [_listener(harness, allow_requeue=True).start]


def _queue_ttl(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    client = harness.client(queue_ttl=ttl)
    prepared = harness.client().prepare(queue_ttl=ttl)
    server = polymsg.get_rpc_server(harness.transport,
                                    polymsg.Target(topic=harness.topic, server="s"),
                                    [harness.endpoint()], queue_ttl=ttl)
    return [lambda: client.cast({}, "note", value=1),
            lambda: prepared.cast({}, "note", value=1),
            server.start]


def _message_ttl(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    client = harness.client(message_ttl=ttl)
    prepared = harness.client().prepare(message_ttl=ttl)
    notifier = harness.notifier(message_ttl=ttl)
    prepared_notifier = harness.notifier().prepare(message_ttl=ttl)
    return [lambda: client.cast({}, "note", value=1),
            lambda: prepared.cast({}, "note", value=1),
            lambda: notifier.info({}, "conformance.unsupported", {}),
            lambda: prepared_notifier.info({}, "conformance.unsupported", {})]


def _multi_host(harness: Harness, ttl: float) -> list[Callable[[], object]]:
    parsed = polymsg.TransportURL.parse(harness.url)
    two_hosts = polymsg.TransportURL(
        transport=parsed.transport,
        hosts=(polymsg.TransportHost("127.0.0.1", 1), polymsg.TransportHost("127.0.0.1", 2)),
        virtual_host=parsed.virtual_host, query=parsed.query,
    ).render(hide_password=False)
    return [lambda: harness.new_transport(two_hosts)]


def _listener(harness: Harness, **kwargs: Any) -> polymsg.NotificationListener:
    return polymsg.get_notification_listener(
        harness.transport, [polymsg.Target(topic=harness.topic)],
        [NotificationEndpoint("unsupported", harness.notes)], **kwargs)


#: capability -> the uses of it that must raise NotSupported when undeclared.
USES: dict[str, Callable[[Harness, float], list[Callable[[], object]]]] = {
    "rpc": _rpc,
    "fanout": _fanout,
    "notify": _notify,
    "pools": _pools,
    "requeue": _requeue,
    "queue_ttl": _queue_ttl,
    "message_ttl": _message_ttl,
    "multi_host": _multi_host,
}


class CapabilityTests(DriverFixtures):
    """What the driver declares, and NotSupported for what it does not."""

    def test_capabilities_are_known_names(self, transport: polymsg.Transport) -> None:
        assert isinstance(transport.capabilities, frozenset)
        assert transport.capabilities <= CAPABILITIES, \
            f"unknown capabilities: {sorted(transport.capabilities - CAPABILITIES)}"

    def test_capabilities_are_the_expected_ones(self, transport: polymsg.Transport) -> None:
        if self.capabilities is None:
            pytest.skip("the driver's test class sets no `capabilities` to compare with")
        assert transport.capabilities == frozenset(self.capabilities)

    @pytest.mark.parametrize("capability", sorted(USES))
    def test_undeclared_capability_raises_not_supported(
            self, harness: Harness, capability: str) -> None:
        if capability in harness.transport.capabilities:
            pytest.skip(f"{capability!r} is declared; its feature tests cover it")
        uses = USES[capability](harness, self.ttl)  # building must not raise: only using does
        for use in uses:
            with pytest.raises(polymsg.NotSupported):
                use()
