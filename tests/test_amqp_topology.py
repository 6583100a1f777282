"""The declarations of the RabbitMQ drivers per queue role and option (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

import polymsg
from polymsg._amqp import Layout, QueueSpec
from polymsg._amqp_options import layout_from_options, rabbit_opts
from polymsg._amqp_topology import QueueNamer, conflict_error

TARGET = polymsg.Target(exchange="nova", topic="compute", server="host1")

COMBINATIONS: dict[str, dict[str, Any]] = {
    "classic": {},
    "classic durable": {"amqp_durable_queues": True},
    "quorum": {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True},
    "quorum + stream": {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True,
                        "rabbit_stream_fanout": True, "rabbit_qos_prefetch_count": 64},
}


def _layout(**options: Any) -> Layout:
    return layout_from_options(options)


def _all_queues(layout: Layout) -> list[QueueSpec]:
    routes = [*layout.server_routes(TARGET), layout.send_route(TARGET),
              layout.notification_route(TARGET, "info"),
              layout.notification_route(TARGET, "error", pool="pool"),
              layout.reply_route(layout.reply_queue_name())]
    return [route.queue for route in routes if route.queue is not None]


@pytest.mark.parametrize("name", COMBINATIONS)
def test_no_queue_is_transient_and_non_exclusive(name: str) -> None:
    # RabbitMQ 4.3 refuses any non-durable queue that is not exclusive.
    queues = _all_queues(_layout(**COMBINATIONS[name]))
    assert len(queues) == 7
    assert all(q.durable for q in queues), [q.name for q in queues if not q.durable]


def test_classic_defaults_keep_store_and_forward_and_expire_transient_queues() -> None:
    layout = _layout()
    topic, server, fanout = (r.queue for r in layout.server_routes(TARGET))
    assert topic is not None and server is not None and fanout is not None
    assert dict(topic.arguments) == {} and not topic.auto_delete
    assert dict(fanout.arguments) == {"x-expires": 1_800_000} and not fanout.auto_delete
    reply = layout.reply_route("reply_x").queue
    assert reply is not None and dict(reply.arguments) == {"x-expires": 1_800_000}
    assert not layout.exchange("nova").durable
    assert layout.message_properties()["delivery_mode"] == 1


def test_quorum_arguments_are_oslo_messagings() -> None:
    layout = _layout(rabbit_quorum_queue=True, rabbit_quorum_delivery_limit=5,
                     rabbit_quorum_max_memory_length=100, rabbit_quorum_max_memory_bytes=4096)
    topic = layout.send_route(TARGET).queue
    assert topic is not None
    assert dict(topic.arguments) == {"x-queue-type": "quorum", "x-delivery-limit": 5,
                                     "x-max-in-memory-length": 100,
                                     "x-max-in-memory-bytes": 4096}
    # Durable exchanges and persistent messages, as oslo.messaging's `durable` property.
    assert layout.exchange("nova").durable
    assert layout.message_properties()["delivery_mode"] == 2
    # Transient queues stay classic unless rabbit_transient_quorum_queue says so.
    reply = layout.reply_route("reply_x").queue
    assert reply is not None and "x-queue-type" not in reply.arguments
    assert not layout.fanout_exchange("compute").durable


def test_transient_quorum_queues_expire() -> None:
    layout = _layout(rabbit_transient_quorum_queue=True, rabbit_transient_queues_ttl=60)
    reply = layout.reply_route("reply_x").queue
    assert reply is not None
    assert dict(reply.arguments) == {"x-queue-type": "quorum", "x-expires": 60_000}
    assert layout.fanout_exchange("compute").durable


def test_quorum_queues_are_never_auto_delete() -> None:
    layout = _layout(rabbit_quorum_queue=True, amqp_auto_delete=True)
    assert all(not q.auto_delete for q in _all_queues(layout))
    assert _layout(amqp_auto_delete=True).send_route(TARGET).queue.auto_delete  # type: ignore[union-attr]


def test_stream_fanout_is_one_stream_per_topic() -> None:
    layout = _layout(**COMBINATIONS["quorum + stream"])
    fanout = layout.server_routes(TARGET)[2]
    assert fanout.queue is not None and fanout.queue.name == "compute_fanout"
    assert dict(fanout.queue.arguments) == {"x-queue-type": "stream", "x-max-age": "1800s"}
    assert dict(fanout.queue.consume_arguments) == {"x-stream-offset": "next"}
    other = polymsg.Target(exchange="nova", topic="compute", server="host2")
    assert layout.server_routes(other)[2].queue == fanout.queue


@pytest.mark.parametrize(("options", "needs"), [
    ({"rabbit_stream_fanout": True}, "rabbit_transient_quorum_queue"),
    ({"rabbit_stream_fanout": True, "rabbit_transient_quorum_queue": True},
     "rabbit_qos_prefetch_count"),
    ({"rabbit_stream_fanout": True, "rabbit_transient_quorum_queue": True,
      "rabbit_qos_prefetch_count": 0}, "rabbit_qos_prefetch_count"),
])
def test_stream_fanout_needs_its_companions(options: dict[str, Any], needs: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match=needs):
        _layout(**options)


def test_queue_manager_names_are_stable_per_process_name() -> None:
    layout = _layout(use_queue_manager=True, hostname="node1", processname="nova-api")
    assert layout.reply_queue_name() == "reply_node1:nova-api:1"
    assert layout.fanout_queue_name("compute") == "compute_fanout_node1:nova-api:2"
    again = QueueNamer("node1", "nova-api")  # the same service, restarted
    assert again() == "node1:nova-api:1"
    assert _layout().reply_queue_name().startswith("reply_")


def test_options_are_registered_with_oslo_messagings_names_and_defaults() -> None:
    opts = {opt.name: opt.default for opt in rabbit_opts()}
    assert opts["rabbit_quorum_queue"] is False
    assert opts["rabbit_transient_quorum_queue"] is False
    assert opts["rabbit_quorum_delivery_limit"] == 0
    assert opts["rabbit_quorum_max_memory_length"] == 0
    assert opts["rabbit_quorum_max_memory_bytes"] == 0
    assert opts["rabbit_stream_fanout"] is False
    assert opts["use_queue_manager"] is False


def test_a_conflict_on_the_queue_type_names_queue_argument_and_option() -> None:
    quorum = _layout(rabbit_quorum_queue=True).send_route(TARGET).queue
    assert quorum is not None
    text = ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'compute' in "
            "vhost '/': received the value 'quorum' of type 'longstr' but current is none")
    error = conflict_error(quorum, text)
    assert error is not None
    assert "'compute'" in error and "'x-queue-type'" in error
    assert "rabbit_quorum_queue=false" in error
    reply = _layout(rabbit_transient_quorum_queue=True).reply_route("reply_a").queue
    assert reply is not None
    error = conflict_error(reply, text.replace("x-queue-type", "durable"))
    assert error is not None and "rabbit_transient_quorum_queue=false" in error
    classic = _layout().send_route(TARGET).queue
    assert classic is not None
    error = conflict_error(classic, text)
    assert error is not None and "rabbit_quorum_queue=true" in error


def test_harmless_conflicts_are_not_errors() -> None:
    classic = _layout().send_route(TARGET).queue
    assert classic is not None
    # A legacy non-durable queue (oslo.messaging's defaults on RabbitMQ 3): used as it is.
    assert conflict_error(classic, "PRECONDITION_FAILED - inequivalent arg 'durable' for "
                                   "queue 'compute'") is None
    assert conflict_error(classic, "PRECONDITION_FAILED - inequivalent arg 'x-expires'") is None


@pytest.mark.parametrize(("version", "durable"), [
    ("3.10.8", False), (b"3.13.7", False), ("4.0.5", True), ("4.3.0", True), (None, True),
])
def test_rabbitmq_3_keeps_oslo_messagings_durability_of_classic_shared_queues(
        version: str | bytes | None, durable: bool) -> None:
    from polymsg._amqp_topology import for_broker

    props = {"version": version} if version is not None else {}
    topic = _layout().send_route(TARGET).queue
    assert topic is not None
    assert for_broker(topic, props).durable is durable
    # Quorum queues, queues made durable by amqp_durable_queues and transient
    # queues are durable on every broker.
    for layout in (_layout(rabbit_quorum_queue=True), _layout(amqp_durable_queues=True)):
        queue = layout.send_route(TARGET).queue
        assert queue is not None and for_broker(queue, props).durable
    reply = _layout().reply_route("reply_x").queue
    assert reply is not None and for_broker(reply, props).durable


def test_stream_consumers_start_at_next_and_resume_after_their_last_message() -> None:
    from polymsg._amqp_topology import consume_arguments, next_stream_offset

    stream = _layout(**COMBINATIONS["quorum + stream"]).server_routes(TARGET)[2].queue
    assert stream is not None
    assert consume_arguments(stream) == {"x-stream-offset": "next"}
    assert next_stream_offset({"x-stream-offset": 41}) == 42
    assert consume_arguments(stream, 42) == {"x-stream-offset": 42}
    for garbage in ({}, None, {"x-stream-offset": "41"}, {"x-stream-offset": True},
                    {"x-stream-offset": -1}):
        assert next_stream_offset(garbage) is None
    classic = _layout().send_route(TARGET).queue
    assert classic is not None and consume_arguments(classic, 42) is None


def test_requeue_warning_names_the_message_past_the_delivery_limit() -> None:
    from polymsg._amqp import encode_notification
    from polymsg._amqp_topology import requeue_warning

    body = encode_notification({}, {"publisher_id": "p", "event_type": "e", "payload": 1,
                                    "priority": "INFO"}, unique_id="abc123")
    quorum = _layout(rabbit_quorum_queue=True, rabbit_quorum_delivery_limit=3)
    queue = quorum.notification_route(TARGET, "info").queue
    assert queue is not None
    assert requeue_warning(queue, {"x-delivery-count": 2}, body) is None
    text = requeue_warning(queue, {"x-delivery-count": 3}, body)
    assert text is not None and "abc123" in text and "'compute.info'" in text and " 3" in text
    # RabbitMQ 4's default limit of 20 where the option sets none.
    default = _layout(rabbit_quorum_queue=True).notification_route(TARGET, "info").queue
    assert default is not None
    assert requeue_warning(default, {"x-delivery-count": 19}, body) is None
    assert requeue_warning(default, {"x-delivery-count": 20}, body) is not None
    # Garbage is named by its queue; classic queues have no limit.
    assert "message ?" in (requeue_warning(queue, {"x-delivery-count": 9}, b"\xff") or "")
    classic = _layout().notification_route(TARGET, "info").queue
    assert classic is not None and requeue_warning(classic, {"x-delivery-count": 99}, body) is None
