"""Conformance: casts to a topic's servers are handed out one message at a time.

A broker's queue gives each message to the next consumer in turn (round
robin per message); a transport that spreads by batch (a run of casts to
one server, the next run to the next) passes a test that only counts
servers, but starves the others under a burst and sends the tail of every
burst to the same server. This test sends a burst and checks where each
cast ran.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from polymsg.testing._fixtures import DriverFixtures, Harness

__all__ = ["SpreadTests"]

#: Casts in the burst (ten per server).
BURST = 30


def _notes(events: list[Any]) -> list[Any]:
    return [inv for inv in events if inv.method == "note"]


class SpreadTests(DriverFixtures):
    """Casts spread over a topic's servers message by message, not batch by batch."""

    def _servers_all_answer(self, harness: Harness, names: list[str]) -> None:
        """Call until every server has answered once: each is routable before the burst."""
        client = harness.client()
        seen: set[str] = set()
        for _ in range(20 * len(names)):
            seen.add(client.call({}, "whoami"))
            if seen == set(names):
                return
        raise AssertionError(f"only {sorted(seen)} of {names} answered "
                             f"{20 * len(names)} calls")

    def test_casts_spread_one_message_at_a_time(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        names = ["server-1", "server-2", "server-3"]
        for name in names:
            harness.rpc_server(name, transport=harness.new_transport())
        self._servers_all_answer(harness, names)
        client = harness.client()
        for value in range(BURST):  # back to back: a batching transport batches them
            client.cast({}, "note", value=value)
        harness.calls.wait_for(lambda events: len(_notes(events)) >= BURST, self.wait_timeout,
                               f"{BURST} casts")
        harness.stop_all()
        ran = _notes(harness.calls.events)
        server_of = {inv.kwargs["value"]: inv.server for inv in ran}
        assert len(ran) == BURST and sorted(server_of) == list(range(BURST)), \
            "a cast was lost or ran twice"
        order = [server_of[value] for value in range(BURST)]
        repeats = sum(a == b for a, b in itertools.pairwise(order))
        assert repeats <= (BURST - 1) // 4, (
            f"{repeats} of {BURST - 1} consecutive casts ran on the same server: spread by "
            f"batch, not by message; servers in cast order: {order}")
        per_server = Counter(order)
        assert set(per_server) == set(names) \
            and min(per_server.values()) >= BURST // (2 * len(names)), \
            f"casts spread unevenly: {dict(per_server)}"
