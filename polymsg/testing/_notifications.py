"""Conformance: notifications, priorities, pools, filters, requeue, serializers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness
from polymsg.testing._support import (
    NOTIFICATION_PRIORITIES,
    AlwaysRequeueEndpoint,
    Notification,
    NotificationEndpoint,
    Point,
    PointSerializer,
    Recorder,
    RequeueOnceEndpoint,
    is_iso8601,
)

__all__ = ["NotificationTests"]

#: Notifier method -> the endpoint method it reaches.
SENDERS = {"audit": "audit", "debug": "debug", "info": "info", "warn": "warn",
           "warning": "warn", "error": "error", "critical": "critical", "sample": "sample"}


def _event_types(notes: list[Notification]) -> list[str]:
    return sorted(note.event_type for note in notes)


class NotificationTests(DriverFixtures):
    """Notifier and notification listeners."""

    def test_every_priority_reaches_its_endpoint_method(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        notifier = harness.notifier()
        for sender in SENDERS:
            getattr(notifier, sender)({}, f"conformance.{sender}", {"sent_as": sender})
        notes = harness.notes.wait_for_count(len(SENDERS), self.wait_timeout)
        got = sorted((note.payload["sent_as"], note.priority) for note in notes)
        assert got == sorted(SENDERS.items())
        assert set(NOTIFICATION_PRIORITIES) == set(SENDERS.values())

    def test_notification_fields(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        ctxt = {"request_id": "req-9", "user": "bob", "nested": {"k": ["v"]}}
        payload = {"instance": "i-1", "size": 3, "tags": ["a", "ü"], "extra": None}
        harness.notifier("compute.host-1").info(ctxt, "compute.instance.create.end", payload)
        [note] = harness.notes.wait_for_count(1, self.wait_timeout)
        assert (note.priority, note.publisher_id, note.event_type) == \
            ("info", "compute.host-1", "compute.instance.create.end")
        assert note.ctxt == ctxt
        assert note.payload == payload
        assert isinstance(note.metadata.get("message_id"), str) and note.metadata["message_id"]
        assert is_iso8601(note.metadata.get("timestamp")), note.metadata

    def test_message_ids_are_unique(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        notifier = harness.notifier()
        for index in range(5):
            notifier.info({}, "conformance.unique", {"index": index})
        notes = harness.notes.wait_for_count(5, self.wait_timeout)
        assert len({note.metadata["message_id"] for note in notes}) == 5

    def test_notification_none_ctxt_becomes_empty_dict(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        harness.notifier().info(None, "conformance.none_ctxt", {})
        [note] = harness.notes.wait_for_count(1, self.wait_timeout)
        assert note.ctxt == {}

    def test_prepare_changes_publisher_id(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        base = harness.notifier("original.publisher")
        base.prepare(publisher_id="prepared.publisher").info({}, "conformance.prepared", {})
        base.info({}, "conformance.base", {})
        notes = harness.notes.wait_for_count(2, self.wait_timeout)
        assert sorted((n.event_type, n.publisher_id) for n in notes) == [
            ("conformance.base", "original.publisher"),
            ("conformance.prepared", "prepared.publisher"),
        ]

    def test_notifier_reaches_several_topics(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        second_topic = f"{harness.topic}-second"
        harness.listener()
        other = Recorder()
        harness.listener([NotificationEndpoint("second", other)], topics=[second_topic])
        harness.notifier(topics=[harness.topic, second_topic]).info({}, "conformance.both", {})
        assert _event_types(harness.notes.wait_for_count(1, self.wait_timeout)) == \
            ["conformance.both"]
        assert _event_types(other.wait_for_count(1, self.wait_timeout)) == ["conformance.both"]

    @pytest.mark.parametrize("pool", [None, "conformance-pool"])
    def test_listeners_of_one_pool_share_the_stream(
            self, harness: Harness, pool: str | None) -> None:
        self.require(harness.transport, "notify", *(["pools"] if pool else []))
        # The pool's queue is named after the test's own topic: a queue left by an
        # earlier run (perhaps of another queue type) must not be in the way.
        pool = f"{harness.topic}-{pool}" if pool else None
        for name in ("listener-1", "listener-2"):
            harness.listener([NotificationEndpoint(name, harness.notes)], pool=pool,
                             transport=harness.new_transport())
        notifier = harness.notifier()
        sent = [f"conformance.shared.{index}" for index in range(20)]
        for event_type in sent:
            notifier.info({}, event_type, {})
        harness.notes.wait_for_count(len(sent), self.wait_timeout)
        harness.stop_all()  # a duplicate in flight is recorded before this returns
        notes = harness.notes.events
        assert Counter(note.event_type for note in notes) == Counter(sent)
        assert {note.endpoint for note in notes} <= {"listener-1", "listener-2"}

    def test_each_pool_gets_its_own_copy(self, harness: Harness) -> None:
        self.require(harness.transport, "notify", "pools")
        recorders = {"pool-a": Recorder(), "pool-b": Recorder()}
        for pool, recorder in recorders.items():
            for index in (1, 2):
                harness.listener([NotificationEndpoint(f"{pool}-{index}", recorder)],
                                 pool=f"{harness.topic}-{pool}")
        notifier = harness.notifier()
        sent = [f"conformance.pooled.{index}" for index in range(6)]
        for event_type in sent:
            notifier.info({}, event_type, {})
        for recorder in recorders.values():
            recorder.wait_for_count(len(sent), self.wait_timeout)
        harness.stop_all()
        for pool, recorder in recorders.items():
            assert _event_types(recorder.events) == sorted(sent), pool

    def test_filter_rules_select_endpoints(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        rules = {
            "by-event-type": polymsg.NotificationFilter(event_type=r"^compute\.instance\."),
            "by-publisher": polymsg.NotificationFilter(publisher_id=r"^api\."),
            "by-context": polymsg.NotificationFilter(context={"user": r"^admin$"}),
            "by-payload": polymsg.NotificationFilter(payload={"state": r"^active$"}),
        }
        endpoints: list[object] = [NotificationEndpoint(name, harness.notes, filter_rule=rule)
                                   for name, rule in rules.items()]
        endpoints.append(NotificationEndpoint("catch-all", harness.notes))
        harness.listener(endpoints)
        sends: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
            ("api.host", {"user": "admin"}, "compute.instance.update", {"state": "active"}),
            ("api.host", {"user": "bob"}, "network.port.update", {"state": "down"}),
            ("conductor", {"user": "admin"}, "compute.volume.attach", {}),
            ("conductor", {"user": "administrator"}, "x.compute.instance", {"state": "active"}),
            ("xapi.host", {}, "other", {"state": "inactive"}),
        ]
        for publisher, ctxt, event_type, payload in sends:
            harness.notifier(publisher).info(ctxt, event_type, payload)
        harness.notes.wait_for(
            lambda notes: sum(n.endpoint == "catch-all" for n in notes) >= len(sends),
            self.wait_timeout, "the catch-all endpoint to see everything")
        harness.stop_all()
        got: dict[str, list[str]] = {}
        for note in harness.notes.events:
            got.setdefault(note.endpoint, []).append(note.event_type)
        assert {name: sorted(types) for name, types in got.items()} == {
            "by-event-type": ["compute.instance.update"],
            "by-publisher": ["compute.instance.update", "network.port.update"],
            "by-context": ["compute.instance.update", "compute.volume.attach"],
            "by-payload": ["compute.instance.update", "x.compute.instance"],
            "catch-all": sorted(event_type for _, _, event_type, _ in sends),
        }

    def test_requeue_redelivers(self, harness: Harness) -> None:
        self.require(harness.transport, "notify", "requeue")
        harness.listener([RequeueOnceEndpoint("requeuer", harness.notes)], allow_requeue=True)
        harness.notifier().info({}, "conformance.requeued", {"n": 1})
        first, second = harness.notes.wait_for_count(2, self.wait_timeout)[:2]
        assert first.metadata["message_id"] == second.metadata["message_id"]
        assert (second.event_type, second.payload) == ("conformance.requeued", {"n": 1})
        harness.stop_all()
        assert len(harness.notes.events) == 2, "handled after requeue, yet delivered again"

    def test_requeue_without_allow_requeue_is_acknowledged(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener([AlwaysRequeueEndpoint("requeuer", harness.notes)])
        notifier = harness.notifier()
        notifier.info({}, "conformance.not_requeued", {})
        harness.notes.wait_for_count(1, self.wait_timeout)
        notifier.info({}, "conformance.marker", {})
        harness.notes.wait_for(
            lambda notes: "conformance.marker" in _event_types(notes), self.wait_timeout)
        harness.stop_all()
        assert _event_types(harness.notes.events) == \
            ["conformance.marker", "conformance.not_requeued"]

    def test_notification_serializer_hooks_are_used(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        listener_side, notifier_side = PointSerializer(), PointSerializer()
        harness.listener(serializer=listener_side)
        harness.notifier(serializer=notifier_side).info(
            {"user": "u"}, "conformance.serialized", {"where": Point(1, 2), "list": [Point(3, 4)]})
        [note] = harness.notes.wait_for_count(1, self.wait_timeout)
        assert note.payload == {"where": Point(1, 2), "list": [Point(3, 4)]}
        assert note.ctxt == {"user": "u", "serialized": True, "deserialized": True}
        assert notifier_side.calls.get("serialize_entity", 0) >= 1
        assert notifier_side.calls.get("serialize_context", 0) >= 1
        assert listener_side.calls.get("deserialize_entity", 0) >= 1
        assert listener_side.calls.get("deserialize_context", 0) >= 1

    def test_unserializable_payload_fails_before_sending(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        notifier = harness.notifier()
        with pytest.raises(polymsg.SerializationError):
            notifier.info({}, "conformance.bad", {"bad": object()})
        notifier.info({}, "conformance.good", {})
        harness.notes.wait_for_count(1, self.wait_timeout)
        harness.stop_all()
        assert _event_types(harness.notes.events) == ["conformance.good"]
