"""Conformance: endpoint namespaces and versions, version caps."""

from __future__ import annotations

from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness

__all__ = ["VersionTests"]


class _Endpoint:
    """Answers ``who`` with its label; ``target`` only when one is given."""

    def __init__(self, label: str, target: polymsg.Target | None = None) -> None:
        self.label = label
        if target is not None:
            self.target = target

    def who(self, ctxt: Any) -> str:
        return self.label


class _Newer(_Endpoint):
    def newer_only(self, ctxt: Any) -> str:
        return f"newer_only@{self.label}"


class _Inventory(_Endpoint):
    def count(self, ctxt: Any) -> int:
        return 7


def _endpoints() -> list[object]:
    return [
        _Endpoint("null-1.0"),
        _Newer("null-1.3", polymsg.Target(version="1.3")),
        _Inventory("inventory-2.1", polymsg.Target(namespace="inventory", version="2.1")),
    ]


#: (namespace, version, method) -> the answer, or the exception class expected.
DISPATCH_CASES: list[tuple[str | None, str | None, str, object]] = [
    (None, None, "who", "null-1.0"),
    (None, "1.0", "who", "null-1.0"),
    (None, "1.1", "who", "null-1.3"),
    (None, "1.3", "who", "null-1.3"),
    (None, "1.0", "newer_only", "newer_only@null-1.3"),
    (None, "1.4", "who", polymsg.UnsupportedVersion),
    (None, "2.0", "who", polymsg.UnsupportedVersion),
    (None, "1.2", "count", polymsg.NoSuchMethod),
    ("inventory", "2.0", "who", "inventory-2.1"),
    ("inventory", "2.1", "count", 7),
    ("inventory", "2.2", "count", polymsg.UnsupportedVersion),
    ("inventory", "1.0", "count", polymsg.UnsupportedVersion),
    ("inventory", "2.0", "newer_only", polymsg.NoSuchMethod),
    ("absent", "1.0", "who", polymsg.UnsupportedVersion),
]


def _outcome(client: polymsg.RPCClient, method: str) -> object:
    try:
        return client.call({}, method)
    except (polymsg.UnsupportedVersion, polymsg.NoSuchMethod) as exc:
        return type(exc)


class VersionTests(DriverFixtures):
    """Which endpoint serves a request; version caps on the client."""

    def test_dispatch_by_namespace_and_version(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(endpoints=_endpoints())
        base = harness.client()
        got = [(namespace, version, method,
                _outcome(base.prepare(namespace=namespace, version=version), method))
               for namespace, version, method, _ in DISPATCH_CASES]
        assert got == DISPATCH_CASES

    def test_first_compatible_endpoint_with_the_method_wins(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        endpoints = [_Endpoint("first-1.1", polymsg.Target(version="1.1")),
                     _Endpoint("second-1.5", polymsg.Target(version="1.5")),
                     _Endpoint("third-1.9", polymsg.Target(version="1.9"))]
        harness.rpc_server(endpoints=endpoints)
        base = harness.client()
        assert [base.prepare(version=v).call({}, "who") for v in ("1.0", "1.1", "1.2", "1.9")] \
            == ["first-1.1", "first-1.1", "second-1.5", "third-1.9"]

    def test_no_such_method_on_compatible_endpoint(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(endpoints=_endpoints())
        with pytest.raises(polymsg.NoSuchMethod) as caught:
            harness.client(version="1.3").call({}, "missing")
        assert isinstance(caught.value, AttributeError)

    def test_version_cap_rejects_before_sending(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(endpoints=[harness.endpoint(target=polymsg.Target(version="1.9"))])
        capped = harness.client(version_cap="1.2")
        for version in ("1.3", "2.0"):
            too_new = capped.prepare(version=version)
            with pytest.raises(polymsg.RPCVersionCapError):
                too_new.call({}, "echo", value="rejected call")
            with pytest.raises(polymsg.RPCVersionCapError):
                too_new.cast({}, "note", value="rejected cast")
        assert capped.prepare(version="1.2").call({}, "echo", value="fits") == "fits"
        assert capped.prepare(version="1.0").call({}, "echo", value="fits too") == "fits too"
        values = [inv.kwargs.get("value") for inv in harness.calls.events]
        assert values == ["fits", "fits too"]

    def test_can_send_version(self, harness: Harness) -> None:
        capped = harness.client(version_cap="1.2")
        assert [capped.can_send_version(v) for v in ("1.0", "1.2", "1.3", "2.0", "0.9")] \
            == [True, True, False, False, False]
        assert harness.client().can_send_version("9.9") is True
        raised = capped.prepare(version_cap="1.5")
        assert raised.can_send_version("1.3") is True
        assert capped.can_send_version("1.3") is False
