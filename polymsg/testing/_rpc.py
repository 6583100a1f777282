"""Conformance: calls and casts reach the right servers with their data intact."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness, unique_name
from polymsg.testing._support import Invocation, Point, PointSerializer, expect_timeout

__all__ = ["RPCTests"]

#: Every kind of JSON value, alone and nested.
JSON_VALUES: list[Any] = [
    "text", "", 0, 1, -42, 2**53, -(2**63), 2**63 - 1, 3.25, -0.5, 1e300, True, False, None,
    [], {}, [1, "two", 3.0, None, True], {"a": 1, "b": [1, 2, {"c": None}]},
    {"deep": [[[[{"x": [{"y": {"z": "bottom"}}]}]]]]},
    "héllo wörld ✓ 日本語 🎉", {"ключ": "значение", "键": ["值", "🎉"]},
    "quotes \" and \\ backslashes \n newlines \t tabs \u0000 nul",
]


def _same_json(left: Any, right: Any) -> bool:
    """Equal and of the same JSON type all the way down (``True != 1`` here)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    return bool(left == right)


def _notes(invocations: list[Any]) -> list[Invocation]:
    return [inv for inv in invocations if inv.method == "note"]


class RPCTests(DriverFixtures):
    """call and cast: payloads, contexts, routing to servers, concurrency."""

    def test_call_round_trips_every_json_type(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        wrong = []
        for value in JSON_VALUES:
            result = client.call({}, "echo", value=value)
            if not _same_json(result, value):
                wrong.append((value, result))
        assert wrong == [], "values changed on the way (sent, received)"

    def test_call_passes_many_keyword_arguments(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        kwargs = {f"arg_{index}": value for index, value in enumerate(JSON_VALUES)}
        result = harness.client().call({}, "echo_kwargs", **kwargs)
        assert _same_json(result, kwargs)

    def test_cast_delivers_every_json_type(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        harness.client().cast({}, "note", value=JSON_VALUES)
        [invocation] = harness.calls.wait_for_count(1, self.wait_timeout)
        assert _same_json(invocation.kwargs["value"], JSON_VALUES)

    def test_call_round_trips_one_mebibyte(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        payload = "".join(chr(0x41 + (index * 7) % 26) for index in range(1024)) * 1024
        assert len(payload.encode()) == 1024 * 1024
        result = harness.client().call({}, "echo", value={"blob": payload, "tail": "end"})
        assert result == {"blob": payload, "tail": "end"}

    def test_cast_delivers_one_mebibyte(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        payload = "é" * (512 * 1024)
        harness.client().cast({}, "note", value=payload)
        [invocation] = harness.calls.wait_for_count(1, self.wait_timeout)
        assert invocation.kwargs["value"] == payload

    def test_ctxt_reaches_server_unchanged(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        ctxt = {"request_id": "req-1", "user": "alice", "project": None, "roles": ["a", "b"],
                "nested": {"level": 2, "ok": True}, "ünïcode": "✓", "ratio": 0.5}
        assert harness.client().call(ctxt, "get_ctxt") == ctxt
        harness.client().cast(ctxt, "note", value=1)
        [cast] = _notes(harness.calls.wait_for(lambda e: _notes(e) != [], self.wait_timeout))
        assert cast.ctxt == ctxt

    def test_rpc_none_ctxt_becomes_empty_dict(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        assert harness.client().call(None, "get_ctxt") == {}
        harness.client().cast(None, "note", value=1)
        [cast] = _notes(harness.calls.wait_for(lambda e: _notes(e) != [], self.wait_timeout))
        assert cast.ctxt == {}

    def _three_servers(self, harness: Harness) -> list[str]:
        names = ["server-1", "server-2", "server-3"]
        for name in names:
            harness.rpc_server(name, transport=harness.new_transport())
        return names

    def test_call_to_named_server_runs_only_there(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        self._three_servers(harness)
        client = harness.client(server="server-2")
        answers = [client.call({}, "whoami") for _ in range(12)]
        assert answers == ["server-2"] * 12
        harness.calls.wait_for_count(12, self.wait_timeout)
        assert {inv.server for inv in harness.calls.events} == {"server-2"}

    def test_cast_to_named_server_runs_only_there(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        self._three_servers(harness)
        client = harness.client(server="server-3")
        for index in range(12):
            client.cast({}, "note", value=index)
        events = harness.calls.wait_for_count(12, self.wait_timeout)
        assert {inv.server for inv in events} == {"server-3"}

    def test_casts_spread_over_servers_each_executed_once(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        names = self._three_servers(harness)
        client = harness.client()
        sent = list(range(60))
        for value in sent:
            client.cast({}, "note", value=value)
        harness.calls.wait_for_count(len(sent), self.wait_timeout)
        harness.stop_all()  # late duplicates would arrive before this returns
        executed = Counter(inv.kwargs["value"] for inv in harness.calls.events)
        assert sorted(executed) == sent
        assert [value for value, count in executed.items() if count > 1] == []
        per_server = Counter(inv.server for inv in harness.calls.events)
        assert set(per_server) <= set(names)
        assert len(per_server) >= 2, f"all casts went to one server: {per_server}"

    def test_calls_spread_over_servers(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        names = self._three_servers(harness)
        client = harness.client()
        answers = Counter(client.call({}, "whoami") for _ in range(30))
        assert sum(answers.values()) == 30
        assert set(answers) <= set(names)
        assert len(harness.calls.events) == 30, "a call executed more than once"
        assert len(answers) >= 2, f"all calls went to one server: {answers}"

    def test_fanout_reaches_every_server_once(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "fanout")
        names = self._three_servers(harness)
        client = harness.client(fanout=True)
        client.cast({}, "note", value="all")
        client.cast({}, "note", value="again")
        harness.calls.wait_for_count(2 * len(names), self.wait_timeout)
        harness.stop_all()
        got = Counter((inv.server, inv.kwargs["value"]) for inv in harness.calls.events)
        assert got == Counter({(name, value): 1 for name in names for value in ("all", "again")})

    def test_fanout_call_raises_invalid_target(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client(fanout=True)
        with pytest.raises(polymsg.InvalidTarget):
            client.call({}, "whoami")
        assert harness.client().call({}, "whoami") == "server-1"
        assert [inv.method for inv in harness.calls.events] == ["whoami"]

    def test_exchanges_isolate(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        exchange_a, exchange_b = unique_name("exchange-a"), unique_name("exchange-b")
        harness.rpc_server(exchange=exchange_b)
        wrong = harness.client(exchange=exchange_a, timeout=self.short_timeout)
        wrong.cast({}, "note", value="wrong exchange")
        wrong.prepare(server="server-1").cast({}, "note", value="wrong exchange, pinned")
        with pytest.raises(polymsg.MessagingTimeout):
            wrong.call({}, "whoami")
        right = harness.client(exchange=exchange_b)
        assert right.call({}, "echo", value="right") == "right"
        self._markers_then_stop(harness, right, right.prepare(server="server-1"))

    def test_exchanges_isolate_fanout(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc", "fanout")
        exchange_a, exchange_b = unique_name("exchange-a"), unique_name("exchange-b")
        harness.rpc_server(exchange=exchange_b)
        harness.client(exchange=exchange_a, fanout=True).cast({}, "note", value="wrong exchange")
        self._markers_then_stop(harness, harness.client(exchange=exchange_b, fanout=True))

    def _markers_then_stop(self, harness: Harness, *clients: polymsg.RPCClient) -> None:
        """Cast a marker through each client, wait for all, stop the servers, and
        check nothing but the markers was executed."""
        markers = [f"marker-{index}" for index in range(len(clients))]
        for client, marker in zip(clients, markers, strict=True):
            client.cast({}, "note", value=marker)
        harness.calls.wait_for(lambda e: len(_notes(e)) >= len(markers), self.wait_timeout)
        harness.stop_all()  # anything that leaked in before the markers has run by now
        assert sorted(inv.kwargs["value"] for inv in _notes(harness.calls.events)) == markers

    def test_shared_client_many_threads_no_crossed_replies(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()

        def worker(thread: int) -> list[tuple[Any, Any]]:
            crossed = []
            for index in range(50):
                sent = {"thread": thread, "index": index, "pad": "x" * (thread * 7)}
                got = client.call({"thread": thread}, "echo", value=sent)
                if got != sent:
                    crossed.append((sent, got))
            return crossed

        futures = [harness.spawn(worker, thread) for thread in range(20)]
        crossed = [pair for future in futures for pair in future.result(self.wait_timeout * 6)]
        assert crossed == [], "replies reached the wrong caller (sent, received)"
        assert len(harness.calls.events) == 20 * 50

    def test_rpc_serializer_hooks_are_used(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        server_side, client_side = PointSerializer(), PointSerializer()
        harness.rpc_server(serializer=server_side)
        client = harness.client(serializer=client_side)
        value = {"where": Point(1, 2), "path": [Point(3, 4), Point(5, 6)]}
        assert client.call({"user": "u"}, "echo", value=value) == value
        [invocation] = harness.calls.events
        assert invocation.kwargs["value"] == value
        assert invocation.ctxt == {"user": "u", "serialized": True, "deserialized": True}
        for hook in ("serialize_entity", "serialize_context", "deserialize_entity"):
            assert client_side.calls.get(hook, 0) >= 1, f"client serializer: {hook} not called"
        for hook in ("deserialize_entity", "deserialize_context", "serialize_entity"):
            assert server_side.calls.get(hook, 0) >= 1, f"server serializer: {hook} not called"

    def test_prepare_changes_target_and_keeps_original(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        other_topic = unique_name("topic")
        harness.rpc_server("server-a")
        harness.rpc_server("server-b", topic=other_topic)
        base = harness.client()
        assert base.prepare(topic=other_topic).call({}, "whoami") == "server-b"
        assert base.prepare(server="server-a").call({}, "whoami") == "server-a"
        assert base.call({}, "whoami") == "server-a"

    def test_prepare_changes_timeout(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        base = harness.client(timeout=self.wait_timeout * 6)
        short = base.prepare(timeout=self.short_timeout)
        expect_timeout(short, self.short_timeout, self.timeout_margin)

