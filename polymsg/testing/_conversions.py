"""Conformance: values converted to JSON the way oslo.messaging converts them."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness

__all__ = ["ConversionTests"]

WHEN = datetime.datetime(2026, 1, 1, 12, 0, 0)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")

#: What is sent, and what the other side receives.
CONVERTED: list[tuple[str, Any, Any]] = [
    ("datetime", WHEN, "2026-01-01T12:00:00.000000"),
    ("uuid", ID, str(ID)),
    ("set", {3}, [3]),
    ("tuple", (1, "a"), [1, "a"]),
    ("int key", {1: "one"}, {"1": "one"}),
    ("nested", {"instance": {"created_at": WHEN, "tags": frozenset({"x"})}},
     {"instance": {"created_at": "2026-01-01T12:00:00.000000", "tags": ["x"]}}),
]

#: oslo.messaging's notification timestamp: ``str()`` of a naive UTC datetime.
_OSLO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?$")


class _Result:
    """An endpoint returning values that need converting."""

    def when(self, ctxt: Any) -> Any:
        return {"at": WHEN, "ids": {ID}}


class ConversionTests(DriverFixtures):
    """Datetimes, UUIDs, sets... cross every transport as oslo.messaging sends them;
    what still cannot be sent fails before sending, naming where it is."""

    @pytest.mark.parametrize("what, value, received", CONVERTED,
                             ids=[what for what, _, _ in CONVERTED])
    def test_arguments_are_converted(self, harness: Harness, what: str, value: Any,
                                     received: Any) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        assert harness.client().call({}, "echo", value=value) == received

    def test_results_are_converted(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(endpoints=[_Result()])
        assert harness.client().call({}, "when") == {
            "at": "2026-01-01T12:00:00.000000", "ids": [str(ID)]}

    def test_context_is_converted(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        got = harness.client().call({"timestamp": WHEN, "request_id": "req-1"}, "get_ctxt")
        assert got["timestamp"] == "2026-01-01T12:00:00.000000"
        assert got["request_id"] == "req-1"

    def test_error_names_the_path_and_type(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        with pytest.raises(polymsg.SerializationError,
                           match=r"args\.instance\.created_at: type object "):
            client.call({}, "echo", instance={"created_at": object()})
        with pytest.raises(polymsg.SerializationError, match=r"args\.value\[1\]: nan "):
            client.cast({}, "note", value=[1.0, float("nan")])
        assert client.call({}, "echo", value="after") == "after"
        assert [inv.method for inv in harness.calls.events] == ["echo"]

    def test_notification_payload_and_timestamp(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener()
        harness.notifier().info({}, "thing.created", {"created_at": WHEN, "ids": (ID,)})
        [note] = harness.notes.wait_for_count(1, self.wait_timeout)
        assert note.payload == {"created_at": "2026-01-01T12:00:00.000000", "ids": [str(ID)]}
        assert _OSLO_TIMESTAMP.match(note.metadata["timestamp"]), note.metadata["timestamp"]
        with pytest.raises(polymsg.SerializationError, match=r"payload\.ratio"):
            harness.notifier().info({}, "thing.created", {"ratio": float("inf")})
