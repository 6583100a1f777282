"""An asyncio caller is never blocked by the driver: calls return their future at once.

A call that must wait for a connection (here: nothing listens, ``retry=None``)
ends with its timeout while the event loop keeps running other tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from amqptest import FAST_RETRY, make_url
from proxy import free_port

import polymsg
from polymsg import aio

TIMEOUT = 2.0
MARGIN = 2.5
#: Longest the loop may go without running the ticking task (seconds).
STALL = 0.5


def test_a_call_waiting_for_a_connection_does_not_block_the_loop(scheme: str, vhost: str,
                                                                 topic: str) -> None:
    url = make_url(scheme, vhost, FAST_RETRY, port=free_port())

    async def run() -> tuple[BaseException | None, float, float]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def tick() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        with polymsg.get_transport(url) as transport:
            client = aio.RPCClient(transport, polymsg.Target(topic=topic), timeout=TIMEOUT,
                                   retry=None)
            ticker = asyncio.create_task(tick())
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await client.call({}, "ping")
            except polymsg.MessagingError as exc:
                error = exc
            elapsed = time.monotonic() - started
            stop.set()
            await ticker
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return error, elapsed, max(gaps, default=float("inf"))

    error, elapsed, stall = asyncio.run(run())
    assert isinstance(error, polymsg.MessagingTimeout | polymsg.MessageDeliveryFailure), \
        repr(error)
    assert elapsed < TIMEOUT + MARGIN
    assert stall < STALL, f"the event loop stalled {stall:.2f} s"
