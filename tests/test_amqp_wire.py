"""The AMQP wire format shared by the RabbitMQ drivers (pure logic, no broker)."""

from __future__ import annotations

import json

import pytest

import polymsg
from polymsg import amqp

CTXT = {"request_id": "req-1", "user": "alice"}
REQUEST = {"method": "echo", "args": {"value": [1, "two"]}, "namespace": None, "version": None}
NOTE = {"message_id": "m-1", "publisher_id": "compute.host1", "event_type": "instance.create",
        "priority": "INFO", "payload": {"id": 7}, "timestamp": "2024-01-02T03:04:05.000006"}


def inner(body: bytes) -> dict:
    envelope = json.loads(body)
    assert set(envelope) == {"oslo.version", "oslo.message"}
    assert envelope["oslo.version"] == "2.0"
    assert isinstance(envelope["oslo.message"], str)
    return json.loads(envelope["oslo.message"])


# -- requests -----------------------------------------------------------------

def test_cast_body_is_oslo_envelope_with_flat_context() -> None:
    raw = inner(amqp.encode_request(CTXT, REQUEST))
    assert raw["method"] == "echo" and raw["args"] == {"value": [1, "two"]}
    assert raw["_context_request_id"] == "req-1" and raw["_context_user"] == "alice"
    assert len(raw["_unique_id"]) == 32
    # oslo.messaging servers read a missing version as "1.0": None is left out.
    assert "namespace" not in raw and "version" not in raw
    assert "_msg_id" not in raw and "_reply_q" not in raw


def test_call_body_names_reply_queue_and_message_id() -> None:
    message = dict(REQUEST, namespace="ns", version="1.2")
    raw = inner(amqp.encode_request({}, message, msg_id="abc", reply_q="reply_x"))
    assert (raw["_msg_id"], raw["_reply_q"], raw["_timeout"]) == ("abc", "reply_x", None)
    assert (raw["namespace"], raw["version"]) == ("ns", "1.2")


def test_request_round_trip() -> None:
    body = amqp.encode_request(CTXT, REQUEST, msg_id="abc", reply_q="reply_x")
    request = amqp.decode_request(body)
    assert request.ctxt == CTXT
    assert request.message == REQUEST
    assert (request.msg_id, request.reply_q) == ("abc", "reply_x")
    assert request.unique_id == inner(body)["_unique_id"]


def test_each_message_gets_its_own_unique_id() -> None:
    first, second = (inner(amqp.encode_request({}, REQUEST)) for _ in range(2))
    assert first["_unique_id"] != second["_unique_id"]


def test_decode_accepts_unenveloped_version_1_messages() -> None:
    body = json.dumps({"method": "ping", "args": {}, "_context_user": "bob"}).encode()
    request = amqp.decode_request(body)
    assert request.message["method"] == "ping" and request.ctxt == {"user": "bob"}
    assert request.msg_id is None


def test_non_string_context_key_is_a_serialization_error() -> None:
    with pytest.raises(polymsg.SerializationError):
        amqp.encode_request({1: "x"}, REQUEST)  # type: ignore[dict-item]


def test_non_json_argument_is_a_serialization_error() -> None:
    with pytest.raises(polymsg.SerializationError):
        amqp.encode_request({}, dict(REQUEST, args={"value": object()}))


# -- garbage ------------------------------------------------------------------

@pytest.mark.parametrize("body, complaint", [
    (b"\x00\xffnot json", "invalid JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"oslo.version": "3.0", "oslo.message": "{}"}', "envelope version"),
    (b'{"oslo.version": "2.0", "oslo.message": 5}', "oslo.message"),
    (b'{"oslo.version": "2.0"}', "oslo.message"),
    (b'{"oslo.version": "2.0", "oslo.message": "not json"}', "invalid JSON"),
    (b'{"oslo.version": "2.0", "oslo.message": "[]"}', "not an object"),
    (b'{"args": {}}', "method"),
    (b'{"method": 5}', "method"),
    (b'{"method": "m", "args": []}', "args"),
    (b'{"method": "m", "namespace": 3}', "namespace"),
    (b'{"method": "m", "_msg_id": "x"}', "reply queue"),
])
def test_garbage_requests_raise_serialization_error(body: bytes, complaint: str) -> None:
    with pytest.raises(polymsg.SerializationError, match=complaint):
        amqp.decode_request(body)


@pytest.mark.parametrize("fields", [
    {"publisher_id": "p", "priority": "INFO", "payload": 1},
    {"event_type": "e", "priority": "INFO", "payload": 1},
    {"publisher_id": "p", "event_type": "e", "payload": 1},
    {"publisher_id": "p", "event_type": "e", "priority": "INFO"},
])
def test_notification_missing_a_field_is_garbage(fields: dict) -> None:
    with pytest.raises(polymsg.SerializationError):
        amqp.decode_notification(json.dumps(fields).encode())


@pytest.mark.parametrize("body", [
    b'{"result": 1, "ending": true}',
    b'{"_msg_id": "x", "ending": "yes"}',
    b'{"_msg_id": "x", "failure": "[1]", "ending": true}',
    b'{"_msg_id": "x", "failure": "not json", "ending": true}',
])
def test_garbage_replies_raise_serialization_error(body: bytes) -> None:
    with pytest.raises(polymsg.SerializationError):
        amqp.decode_reply(body)


# -- replies ------------------------------------------------------------------

def test_reply_carries_result_and_ending() -> None:
    body = amqp.encode_reply("abc", {"answer": 42})
    raw = inner(body)
    assert raw["result"] == {"answer": 42} and raw["failure"] is None and raw["ending"] is True
    assert raw["_msg_id"] == "abc"
    frame = amqp.decode_reply(body)
    assert (frame.msg_id, frame.result, frame.failure, frame.ending) == (
        "abc", {"answer": 42}, None, True)


def test_failure_travels_as_json_text() -> None:
    failure = {"class": "ValueError", "module": "builtins", "message": "bad",
               "tb": ["Traceback...", "ValueError: bad"], "args": ["bad"], "kwargs": {}}
    body = amqp.encode_reply("abc", failure=failure)
    assert json.loads(inner(body)["failure"]) == failure
    assert amqp.decode_reply(body).failure == failure


def test_partial_failure_dict_is_completed() -> None:
    body = json.dumps({"_msg_id": "x", "ending": True,
                       "failure": json.dumps({"class": "KeyError", "message": "k"})}).encode()
    failure = amqp.decode_reply(body).failure
    assert failure == {"class": "KeyError", "module": "", "message": "k", "tb": [],
                       "args": [], "kwargs": {}}


def test_interim_reply_is_not_ending() -> None:
    frame = amqp.decode_reply(amqp.encode_reply("abc", ending=False))
    assert frame.ending is False and frame.result is None and frame.failure is None


# -- notifications --------------------------------------------------------------

def test_notification_round_trip() -> None:
    body = amqp.encode_notification(CTXT, NOTE)
    raw = inner(body)
    assert {k: raw[k] for k in NOTE} == NOTE and raw["_context_user"] == "alice"
    note = amqp.decode_notification(body)
    assert note.message == NOTE and note.ctxt == CTXT


def test_notification_priority_is_read_upper_case() -> None:
    body = json.dumps(dict(NOTE, priority="warn")).encode()
    assert amqp.decode_notification(body).message["priority"] == "WARN"


# -- interoperability with oslo.messaging's own encoder ------------------------

def test_oslo_reads_our_envelope_and_we_read_theirs() -> None:
    common = pytest.importorskip("oslo_messaging._drivers.common")
    ours = amqp.encode_request(CTXT, REQUEST)
    theirs = common.deserialize_msg(json.loads(ours))
    assert theirs["method"] == "echo" and theirs["_context_user"] == "alice"
    oslo_body = json.dumps(common.serialize_msg({"method": "m", "args": {"a": 1},
                                                 "_context_user": "u"})).encode()
    request = amqp.decode_request(oslo_body)
    assert request.message["args"] == {"a": 1} and request.ctxt == {"user": "u"}


# -- names and declarations ------------------------------------------------------

LAYOUT = amqp.Layout(control_exchange="polymsg")


def test_topic_and_server_routes() -> None:
    route = LAYOUT.send_route(polymsg.Target(topic="compute", exchange="polymsg"))
    assert (route.exchange_name, route.routing_key, route.queue.name) == (
        "polymsg", "compute", "compute")
    assert route.exchange.type == "topic" and not route.exchange.durable
    # Durable although amqp_durable_queues is off: RabbitMQ 4.3 refuses transient shared queues.
    assert route.queue.durable and not route.queue.auto_delete and not route.queue.arguments
    pinned = LAYOUT.send_route(polymsg.Target(topic="compute", server="h1", exchange="polymsg"))
    assert (pinned.routing_key, pinned.queue.name) == ("compute.h1", "compute.h1")


def test_fanout_route_declares_only_an_auto_delete_exchange() -> None:
    route = LAYOUT.send_route(polymsg.Target(topic="compute", fanout=True, exchange="polymsg"))
    assert route.queue is None
    assert (route.exchange.name, route.exchange.type, route.exchange.auto_delete) == (
        "compute_fanout", "fanout", True)


def test_server_consumes_topic_server_and_its_own_fanout_queue() -> None:
    target = polymsg.Target(topic="compute", server="h1", exchange="polymsg")
    topic, server, fanout = LAYOUT.server_routes(target)
    assert topic.queue.name == "compute" and server.queue.name == "compute.h1"
    assert fanout.exchange.name == "compute_fanout"
    assert fanout.queue.name.startswith("compute_fanout_")
    assert fanout.queue.arguments == {"x-expires": 1_800_000}
    other = LAYOUT.server_routes(target)[2].queue.name
    assert other != fanout.queue.name


def test_names_off_the_control_exchange_are_prefixed() -> None:
    target = polymsg.Target(topic="compute", server="h1", exchange="other")
    names = [r.queue.name for r in LAYOUT.server_routes(target)]
    assert names[:2] == ["other/compute", "other/compute.h1"]
    assert names[2].startswith("other/compute_fanout_")
    fanout = LAYOUT.send_route(target.replace(server=None, fanout=True))
    assert fanout.exchange.name == "other/compute_fanout"
    assert LAYOUT.send_route(target).exchange_name == "other"


def test_notification_queue_is_topic_dot_priority_or_the_pool() -> None:
    target = polymsg.Target(topic="notifications", exchange="nova")
    route = LAYOUT.notification_route(target, "INFO")
    assert (route.exchange_name, route.routing_key, route.queue.name) == (
        "nova", "notifications.info", "notifications.info")
    pooled = LAYOUT.notification_route(target, "error", pool="audit")
    assert (pooled.routing_key, pooled.queue.name) == ("notifications.error", "audit")


def test_ttl_hints_become_queue_and_message_arguments() -> None:
    route = LAYOUT.send_route(polymsg.Target(topic="t", exchange="polymsg"), queue_ttl=1.5)
    assert route.queue.arguments == {"x-expires": 1500}
    assert amqp.queue_arguments(0.0001) == {"x-expires": 1}
    assert amqp.expiration(None, None) is None
    assert amqp.expiration(30, 0.25) == "250"
    props = LAYOUT.message_properties(amqp.expiration(2))
    assert props == {"content_type": "application/json", "content_encoding": "utf-8",
                     "delivery_mode": 1, "expiration": "2000"}
    assert amqp.Layout(durable=True).message_properties()["delivery_mode"] == 2


def test_durability_follows_the_layout() -> None:
    layout = amqp.Layout(durable=True, auto_delete=True, transient_queue_ttl=None)
    route = layout.send_route(polymsg.Target(topic="t", exchange="x"))
    assert route.exchange.durable and route.exchange.auto_delete
    assert route.queue.durable and route.queue.auto_delete
    assert layout.reply_route("reply_1").queue.arguments == {}


def test_reply_route_uses_the_default_exchange() -> None:
    name = amqp.reply_queue_name()
    assert name.startswith("reply_") and len(name) == len("reply_") + 32
    route = LAYOUT.reply_route(name)
    assert route.exchange is None and route.exchange_name == ""
    assert route.routing_key == name and route.queue.name == name


def test_route_needs_topic_and_exchange() -> None:
    with pytest.raises(polymsg.InvalidTarget):
        LAYOUT.send_route(polymsg.Target(topic="t"))
    with pytest.raises(polymsg.InvalidTarget):
        LAYOUT.server_routes(polymsg.Target(topic="t", exchange="x"))
