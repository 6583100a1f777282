"""polymsg.aio against an unreachable RabbitMQ (a closed port), on each RabbitMQ
driver: the loop never waits for the driver, calls end within their timeout,
casts within their retry budget (and a cast that retries forever can be
abandoned). A ticker task measures how long the loop was held.

Runs without a broker: nothing listens on the port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from transportkit import ticking

import polymsg
from polymsg import aio

#: The longest the loop may go without running the ticker (generous: the
#: machine running the tests is loaded; a driver blocking the loop holds it
#: for seconds).
MAX_GAP = 0.5


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["kombu", "pika"])
def transport(request: pytest.FixtureRequest) -> Iterator[polymsg.Transport]:
    pytest.importorskip(f"polymsg_{request.param}")
    url = f"rabbit+{request.param}://guest:guest@127.0.0.1:{_closed_port()}/"
    with polymsg.get_transport(url) as transport:
        yield transport


async def _timed(work: Callable[[], Awaitable[Any]]) -> tuple[BaseException | None, float, float]:
    """Run ``work`` beside a ticker: (what it raised, seconds it took, the longest
    the ticker waited for the loop)."""
    gaps: list[float] = []
    ticker = asyncio.create_task(ticking(gaps))
    await asyncio.sleep(0)
    started = time.monotonic()
    raised: BaseException | None = None
    try:
        await work()
    except Exception as exc:
        raised = exc
    elapsed = time.monotonic() - started
    ticker.cancel()
    # the ticker's wait still under way counts too
    return raised, elapsed, max([*gaps, time.monotonic() - started - sum(gaps)])


def _run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [None, 0])
def test_a_call_ends_within_its_timeout_and_never_holds_the_loop(
        transport: polymsg.Transport, retry: int | None) -> None:
    async def main() -> None:
        client = aio.RPCClient(transport, polymsg.Target(topic="outage"), timeout=1.5,
                               retry=retry)
        raised, elapsed, gap = await _timed(lambda: client.call({}, "ping"))
        assert isinstance(raised, (polymsg.MessagingTimeout, polymsg.MessageDeliveryFailure))
        assert not isinstance(raised, asyncio.TimeoutError)
        assert elapsed < 1.5 + 1.0
        assert gap < MAX_GAP

    _run(main())


@pytest.mark.parametrize("send", ["cast", "notify"])
def test_a_send_without_retries_fails_at_once_off_the_loop(transport: polymsg.Transport,
                                                          send: str) -> None:
    async def main() -> None:
        if send == "cast":
            client = aio.RPCClient(transport, polymsg.Target(topic="outage"), retry=0)
            work = lambda: client.cast({}, "ping")  # noqa: E731
        else:
            notifier = aio.Notifier(transport, "outage.test", retry=0)
            work = lambda: notifier.info({}, "outage.ping", {})  # noqa: E731
        raised, elapsed, gap = await _timed(work)
        assert isinstance(raised, polymsg.MessageDeliveryFailure)
        assert "connect" in str(raised)
        assert elapsed < 5.0
        assert gap < MAX_GAP

    _run(main())


@pytest.mark.parametrize("send", ["cast", "notify"])
def test_a_send_retrying_forever_can_be_abandoned_and_never_holds_the_loop(
        transport: polymsg.Transport, send: str) -> None:
    async def main() -> None:
        if send == "cast":
            client = aio.RPCClient(transport, polymsg.Target(topic="outage"), retry=None)
            pending = asyncio.create_task(client.cast({}, "ping"))
        else:
            notifier = aio.Notifier(transport, "outage.test", retry=None)
            pending = asyncio.create_task(notifier.info({}, "outage.ping", {}))

        async def abandon_after_a_while() -> None:
            done, _ = await asyncio.wait([pending], timeout=1.0)
            assert not done  # retry=None: it keeps trying while the broker is away
            pending.cancel()
            await asyncio.wait([pending])

        raised, elapsed, gap = await _timed(abandon_after_a_while)
        assert raised is None
        assert pending.cancelled()
        assert elapsed < 1.0 + 1.0  # the cancellation took effect at once
        assert gap < MAX_GAP

    _run(main())
