"""Conformance: store and forward, TTL hints, and calls that expire unanswered.

The TTL tests are the only ones that wait for time to pass (a TTL is a span
of time; there is no event to wait on). Each expired message is checked
against a marker sent afterwards: queues are first in, first out, so once
the marker has run and the server has been stopped and waited for, anything
queued before the marker would have run too.
"""

from __future__ import annotations

import time
from typing import Any

from polymsg.testing._fixtures import DriverFixtures, Harness, unique_name
from polymsg.testing._support import expect_timeout

__all__ = ["DeliveryTests"]

#: A message_ttl long enough never to expire during a test.
LONG_TTL = 300.0


def _values(events: list[Any]) -> list[Any]:
    return [inv.kwargs.get("value") for inv in events if inv.method == "note"]


def _event_types(events: list[Any]) -> list[str]:
    return [note.event_type for note in events]


class DeliveryTests(DriverFixtures):
    """Messages sent while nobody listens: kept, or expired by a TTL."""

    def _prime_rpc(self, harness: Harness, topic: str | None = None, **kwargs: Any) -> None:
        """Start and stop a server so the topic's queue exists without a consumer."""
        harness.stop(harness.rpc_server("primer", topic=topic, **kwargs))

    def _serve_until_marker(self, harness: Harness, topic: str | None = None,
                            **kwargs: Any) -> list[Any]:
        """Start a one-worker server, cast a marker, wait for it, stop; values seen."""
        server = harness.rpc_server("late", topic=topic, max_workers=1, **kwargs)
        client = harness.client(topic=topic, queue_ttl=kwargs.get("queue_ttl"))
        marker = f"marker-{topic}"
        client.cast({}, "note", value=marker)
        harness.calls.wait_for(lambda events: marker in _values(events), self.wait_timeout,
                               f"the marker cast on {topic or harness.topic}")
        harness.stop(server)
        return _values(harness.calls.events)

    def _ttl_passes(self) -> None:
        # A TTL is a span of time: nothing signals its end, so wait it out,
        # with a grace period for the transport's expiry timer.
        time.sleep(self.ttl + self.ttl_grace)

    def test_cast_before_server_starts_is_delivered(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "store_and_forward")
        harness.client().cast({}, "note", value="early")
        harness.rpc_server()
        events = harness.calls.wait_for(lambda e: "early" in _values(e), self.wait_timeout)
        assert _values(events) == ["early"]

    def test_notification_before_listener_starts_is_delivered(self, harness: Harness) -> None:
        self.require(harness.transport, "notify", "store_and_forward")
        harness.notifier().info({"user": "early"}, "conformance.early", {"n": 1})
        harness.listener()
        [note] = harness.notes.wait_for_count(1, self.wait_timeout)
        assert (note.event_type, note.payload, note.ctxt) == \
            ("conformance.early", {"n": 1}, {"user": "early"})

    def test_message_ttl_expires_waiting_cast(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "message_ttl")
        stores = "store_and_forward" in harness.transport.capabilities
        self._prime_rpc(harness)
        client = harness.client()
        client.prepare(message_ttl=self.ttl).cast({}, "note", value="expired")
        if stores:
            client.prepare(message_ttl=LONG_TTL).cast({}, "note", value="kept")
        self._ttl_passes()
        values = self._serve_until_marker(harness)
        assert "expired" not in values, "a cast ran after its message_ttl had passed"
        if stores:
            assert "kept" in values, "a cast within its message_ttl was lost"

    def test_message_ttl_set_on_client(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "message_ttl")
        self._prime_rpc(harness)
        harness.client(message_ttl=self.ttl).cast({}, "note", value="expired")
        self._ttl_passes()
        assert "expired" not in self._serve_until_marker(harness)

    def test_queue_ttl_drops_unused_queue_with_its_messages(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "queue_ttl")
        stores = "store_and_forward" in harness.transport.capabilities
        plain_topic = unique_name("topic")
        self._prime_rpc(harness, queue_ttl=self.ttl)
        harness.client(queue_ttl=self.ttl).cast({}, "note", value="dropped")
        if stores:
            self._prime_rpc(harness, topic=plain_topic)
            harness.client(topic=plain_topic).cast({}, "note", value="kept")
        self._ttl_passes()
        values = self._serve_until_marker(harness, queue_ttl=self.ttl)
        assert "dropped" not in values, "a message outlived its queue's queue_ttl"
        if stores:
            assert "kept" in self._serve_until_marker(harness, topic=plain_topic), \
                "a message in a queue without queue_ttl was lost"

    def test_queue_ttl_keeps_queue_while_consumed(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "queue_ttl")
        harness.rpc_server(queue_ttl=self.ttl)
        self._ttl_passes()
        client = harness.client(queue_ttl=self.ttl)
        assert client.call({}, "echo", value="still here") == "still here"
        client.cast({}, "note", value="cast")
        harness.calls.wait_for(lambda e: "cast" in _values(e), self.wait_timeout)

    def test_call_request_expires_with_its_timeout(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        self._prime_rpc(harness)
        expect_timeout(harness.client(timeout=self.short_timeout), self.short_timeout,
                       self.timeout_margin, "note", value="abandoned")
        # The request's expiry starts when it is sent, a moment after the
        # caller's clock started: give the transport that moment.
        time.sleep(min(self.ttl_grace, 0.5))
        assert "abandoned" not in self._serve_until_marker(harness), \
            "a call ran after its caller had timed out"

    def test_notification_message_ttl_expires(self, harness: Harness) -> None:
        self.require(harness.transport, "notify", "message_ttl")
        stores = "store_and_forward" in harness.transport.capabilities
        harness.stop(harness.listener())
        notifier = harness.notifier()
        notifier.prepare(message_ttl=self.ttl).info({}, "conformance.expired", {})
        if stores:
            notifier.prepare(message_ttl=LONG_TTL).info({}, "conformance.kept", {})
        self._ttl_passes()
        listener = harness.listener()
        notifier.info({}, "conformance.marker", {})
        harness.notes.wait_for(lambda e: "conformance.marker" in _event_types(e),
                               self.wait_timeout)
        harness.stop(listener)
        got = _event_types(harness.notes.events)
        assert "conformance.expired" not in got, "a notification outlived its message_ttl"
        if stores:
            assert "conformance.kept" in got
