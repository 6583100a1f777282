"""amqp.Unrouted: returned messages nobody waits for, logged at a bounded rate."""

from __future__ import annotations

import logging

import pytest

from polymsg import amqp


def test_each_kind_is_logged_up_to_its_burst_naming_what_came_back(
        caplog: pytest.LogCaptureFixture) -> None:
    unrouted = amqp.Unrouted(interval=3600.0, burst=2)
    with caplog.at_level(logging.INFO, logger="polymsg"):
        for n in range(5):
            unrouted.fanout(f"the cast {n}", "topic_fanout")
            unrouted.reply(f"id{n}", "reply_abc", "NO_ROUTE (312)")
    fanouts = [r.getMessage() for r in caplog.records if "reached no server" in r.getMessage()]
    replies = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert fanouts == ["the cast 0 reached no server: no queue is bound to 'topic_fanout'",
                       "the cast 1 reached no server: no queue is bound to 'topic_fanout'"]
    assert len(replies) == 2 and "'reply_abc'" in replies[0] and "'id0'" in replies[0]
    assert all(r.levelno == logging.INFO for r in caplog.records)
