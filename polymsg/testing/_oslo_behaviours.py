"""Conformance: behaviours oslo.messaging services rely on (call monitoring,
at-least-once sends, batch listeners, dispatch errors caught as RemoteError)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness, unique_name

__all__ = ["OsloBehaviourTests"]


class _Batches:
    """A batch endpoint recording each batch it gets."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.changed = threading.Condition()

    def info(self, messages: list[dict[str, Any]]) -> None:
        with self.changed:
            self.batches.append(messages)
            self.changed.notify_all()

    def wait_total(self, count: int, timeout: float) -> list[list[dict[str, Any]]]:
        with self.changed:
            self.changed.wait_for(lambda: sum(map(len, self.batches)) >= count, timeout)
            return list(self.batches)


class OsloBehaviourTests(DriverFixtures):
    """What an oslo.messaging service moved to polymsg expects of every transport."""

    def _send_feature(self, harness: Harness, feature: str) -> None:
        if feature not in type(harness.transport._driver).send_features:
            pytest.skip(f"the driver does not implement the {feature!r} send feature")

    # -- call monitoring --------------------------------------------------------
    def test_call_monitor_keeps_a_long_call_alive(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        self._send_feature(harness, "call_monitor")
        harness.rpc_server()
        client = harness.client(timeout=self.wait_timeout * 3, call_monitor_timeout=1.0)
        releaser = threading.Timer(3.0, harness.release.set)  # the call runs ~3 s: 3 monitors
        releaser.start()
        try:
            assert client.call({}, "block", value="done") == "done"
        finally:
            releaser.cancel()

    def test_call_monitor_fails_a_call_nobody_runs(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "store_and_forward")
        self._send_feature(harness, "call_monitor")
        client = harness.client(topic=unique_name("unserved"),
                                timeout=self.wait_timeout * 3, call_monitor_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(polymsg.MessagingTimeout, match="call-monitor"):
            client.call({}, "whoami")
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < self.wait_timeout, f"failed after {elapsed:.2f}s"

    def test_call_monitor_needs_the_send_feature(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        if "call_monitor" in type(harness.transport._driver).send_features:
            pytest.skip("the driver implements call monitoring")
        with pytest.raises(polymsg.NotSupported, match="call_monitor"):
            harness.client(call_monitor_timeout=1.0).call({}, "whoami")

    # -- at least once ------------------------------------------------------------
    def test_at_least_once_send_to_nobody_fails_at_once(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        self._send_feature(harness, "at_least_once")
        options = polymsg.TransportOptions(at_least_once=True)
        client = harness.client(topic=unique_name("nobody"), transport_options=options,
                                timeout=self.wait_timeout * 3)
        started = time.monotonic()
        with pytest.raises(polymsg.MessageUndeliverable):
            client.call({}, "whoami")
        with pytest.raises(polymsg.MessageUndeliverable):
            client.cast({}, "note", value=1)
        elapsed = time.monotonic() - started
        assert elapsed < self.wait_timeout, f"took {elapsed:.2f}s to fail"
        assert isinstance(polymsg.MessageUndeliverable("x"), polymsg.MessageDeliveryFailure)

    def test_at_least_once_send_to_a_server_works(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        self._send_feature(harness, "at_least_once")
        harness.rpc_server()
        client = harness.client(transport_options=polymsg.TransportOptions(at_least_once=True))
        assert client.call({}, "echo", value=5) == 5
        client.cast({}, "note", value=6)
        harness.calls.wait_for_count(2, self.wait_timeout)

    # -- dispatch errors, caught the oslo.messaging way ---------------------------
    def test_version_and_method_mismatch_are_remote_errors(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        with pytest.raises(polymsg.RemoteError) as caught:
            harness.client(version="2.0").call({}, "whoami")
        assert isinstance(caught.value, polymsg.UnsupportedVersion)
        assert caught.value.exc_type == "UnsupportedVersion"
        assert "2.0" in str(caught.value)
        with pytest.raises(polymsg.RemoteError) as missing:
            harness.client().call({}, "no_such_method")
        assert isinstance(missing.value, polymsg.NoSuchMethod)
        assert missing.value.exc_type == "NoSuchMethod"

    # -- batches ------------------------------------------------------------------
    def test_batch_listener_hands_over_full_and_timed_out_batches(
            self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        endpoint = _Batches()
        listener = polymsg.get_batch_notification_listener(
            harness.transport, [polymsg.Target(topic=harness.topic)], [endpoint],
            batch_size=3, batch_timeout=0.5)
        harness._runners.append(listener)
        listener.start()
        notifier = harness.notifier()
        for number in range(7):
            notifier.info({"n": number}, "thing.happened", {"number": number})
        batches = endpoint.wait_total(7, self.wait_timeout)
        assert sorted(m["payload"]["number"] for b in batches for m in b) == list(range(7))
        assert all(1 <= len(b) <= 3 for b in batches)
        assert sum(len(b) == 3 for b in batches) >= 1
        message = batches[0][0]
        assert set(message) == {"ctxt", "publisher_id", "event_type", "payload", "metadata"}
        assert message["event_type"] == "thing.happened"
        assert message["metadata"]["message_id"]
