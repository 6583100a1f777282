"""core's QueueWatch: where a stream resumes, and requeues past a quorum queue's limit.

Pure logic (the drivers' tests run it on RabbitMQ).
"""

from __future__ import annotations

import logging

import pytest

from polymsg import amqp

STREAM = amqp.Layout().stream_queue("t_fanout")
QUORUM = amqp.QueueSpec("t", durable=True,
                        arguments={"x-queue-type": "quorum", "x-delivery-limit": 3})
CLASSIC = amqp.QueueSpec("c")


def test_what_is_watched() -> None:
    assert amqp.QueueWatch.watches(STREAM) and amqp.QueueWatch.watches(QUORUM)
    assert not amqp.QueueWatch.watches(CLASSIC)


def test_a_stream_resumes_after_the_last_delivery() -> None:
    watch = amqp.QueueWatch()
    assert watch.consume_arguments(STREAM) == {"x-stream-offset": "next"}
    watch.delivered(STREAM, 1, {"x-stream-offset": 41}, b"{}", acked=False)
    assert watch.consume_arguments(STREAM) == {"x-stream-offset": 42}
    assert watch.consume_arguments(CLASSIC) is None


def test_a_requeue_past_the_delivery_limit_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = amqp.QueueWatch()
    watch.delivered(QUORUM, "near", {"x-delivery-count": 3}, b"{}")
    watch.delivered(QUORUM, "early", {"x-delivery-count": 0}, b"{}")
    with caplog.at_level(logging.WARNING):
        watch.settled("early", requeue=True)
        watch.settled("near", requeue=True, prefix="link: ")
        watch.settled("near", requeue=True)
    assert [r.getMessage()[:6] for r in caplog.records] == ["link: "]
    assert "past the queue's delivery limit of 3" in caplog.text


def test_acknowledged_or_lost_deliveries_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    watch = amqp.QueueWatch()
    watch.delivered(QUORUM, 1, {"x-delivery-count": 5}, b"{}")
    watch.delivered(QUORUM, 2, {"x-delivery-count": 5}, b"{}")
    with caplog.at_level(logging.WARNING):
        watch.settled(1, requeue=False)
        watch.lost()
        watch.settled(2, requeue=True)
    assert caplog.records == []
