"""How polymsg.aio awaits a driver's futures: timeouts without a timer per call,
cancellation, and completions from other threads (pure logic: plain futures
stand in for a driver's)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest

import polymsg
from polymsg.aio import _futures
from polymsg.aio._futures import wait_future


def _lanes() -> dict[float, Any]:
    return _futures._STATES[asyncio.get_running_loop()]._lanes


def test_timeouts_of_mixed_lengths_each_expire_on_time() -> None:
    async def one(timeout: float) -> float:
        started = time.monotonic()
        with pytest.raises(polymsg.MessagingTimeout) as caught:
            await wait_future(Future(), timeout)
        assert not isinstance(caught.value, asyncio.TimeoutError)
        return time.monotonic() - started

    async def main() -> None:
        timeouts = [0.3, 0.1, 0.3, 0.2, 0.1] * 20
        elapsed = await asyncio.gather(*(one(t) for t in timeouts))
        for timeout, took in zip(timeouts, elapsed, strict=True):
            assert timeout - 0.01 <= took < timeout + 3.0
        assert _lanes() == {}  # nothing left armed once every call ended

    asyncio.run(main())


def test_a_timeout_cancels_the_driver_future_and_uses_the_given_error() -> None:
    async def main() -> None:
        future: Future[Any] = Future()
        with pytest.raises(polymsg.MessagingTimeout, match="custom"):
            await wait_future(future, 0.05, lambda silent: polymsg.MessagingTimeout("custom"))
        assert future.cancelled()

    asyncio.run(main())


def test_finished_calls_do_not_pile_up_behind_a_slow_one() -> None:
    async def main() -> None:
        slow: Future[Any] = Future()
        slow_task = asyncio.create_task(wait_future(slow, 60))
        await asyncio.sleep(0)
        for _ in range(20):
            futures: list[Future[Any]] = [Future() for _ in range(200)]
            tasks = [asyncio.create_task(wait_future(f, 60)) for f in futures]
            await asyncio.sleep(0)
            for n, future in enumerate(futures):
                future.set_result(n)
            assert await asyncio.gather(*tasks) == list(range(200))
        [lane] = _lanes().values()
        # one call still waits: the queue is compacted, not 4,000 entries long
        assert len(lane._queue) <= 2 * lane._waiting + lane._COMPACT_AT
        slow.set_result("late")
        assert await slow_task == "late"
        assert _lanes() == {}

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_driver_future() -> None:
    async def main() -> None:
        future: Future[Any] = Future()
        task = asyncio.create_task(wait_future(future, 30))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert future.cancelled()
        assert _lanes() == {}

    asyncio.run(main())


def test_futures_completed_on_another_thread_wake_their_waiters() -> None:
    async def main() -> None:
        futures: list[Future[Any]] = [Future() for _ in range(500)]
        waiting = [asyncio.create_task(wait_future(f, 30)) for f in futures]
        await asyncio.sleep(0)

        def complete() -> None:
            for n, future in enumerate(futures):
                if n % 7 == 0:
                    future.set_exception(ConnectionResetError("peer gone"))
                else:
                    future.set_result(n)
        thread = threading.Thread(target=complete)
        thread.start()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        thread.join()
        for n, outcome in enumerate(outcomes):
            if n % 7 == 0:  # a driver's own error arrives wrapped, as on the sync side
                assert isinstance(outcome, polymsg.MessageDeliveryFailure)
                assert "peer gone" in str(outcome)
            else:
                assert outcome == n

    asyncio.run(main())


def test_a_driver_that_cancels_its_future_is_a_delivery_failure() -> None:
    async def main() -> None:
        future: Future[Any] = Future()
        task = asyncio.create_task(wait_future(future, 30))
        await asyncio.sleep(0)
        future.cancel()
        with pytest.raises(polymsg.MessageDeliveryFailure, match="cancelled"):
            await task

    asyncio.run(main())
