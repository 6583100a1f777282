"""How polymsg.aio awaits a driver's futures: timeouts without a timer per call,
cancellation, and completions from other threads (pure logic: plain futures
stand in for a driver's)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest
from transportkit import ticking

import polymsg
from polymsg.aio import _futures
from polymsg.aio._futures import wait_future
from polymsg.aio._senders import MAX_THREADS, Senders


def given(future: Future[Any]) -> Callable[[], Future[Any]]:
    """A send that returns ``future`` (what a driver's call or cast does)."""
    return lambda: future


def _lanes() -> dict[float, Any]:
    return _futures._STATES[asyncio.get_running_loop()]._lanes


def test_timeouts_of_mixed_lengths_each_expire_on_time() -> None:
    async def one(timeout: float) -> float:
        started = time.monotonic()
        with pytest.raises(polymsg.MessagingTimeout) as caught:
            await wait_future(given(Future()), timeout)
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
            await wait_future(given(future), 0.05, lambda _: polymsg.MessagingTimeout("custom"))
        assert future.cancelled()

    asyncio.run(main())


def test_finished_calls_do_not_pile_up_behind_a_slow_one() -> None:
    async def main() -> None:
        slow: Future[Any] = Future()
        slow_task = asyncio.create_task(wait_future(given(slow), 60))
        await asyncio.sleep(0)
        for _ in range(20):
            futures: list[Future[Any]] = [Future() for _ in range(200)]
            tasks = [asyncio.create_task(wait_future(given(f), 60)) for f in futures]
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
        task = asyncio.create_task(wait_future(given(future), 30))
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
        waiting = [asyncio.create_task(wait_future(given(f), 30)) for f in futures]
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
        task = asyncio.create_task(wait_future(given(future), 30))
        await asyncio.sleep(0)
        future.cancel()
        with pytest.raises(polymsg.MessageDeliveryFailure, match="cancelled"):
            await task

    asyncio.run(main())


class Held:
    """Sends that block their thread until released (a driver connecting)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.futures: list[Future[Any]] = []
        self.lock = threading.Lock()

    def send(self) -> Future[Any]:
        with self.lock:
            self.started += 1
        self.release.wait(10)
        future: Future[Any] = Future()
        self.futures.append(future)
        return future


def test_a_blocking_send_runs_off_the_loop_and_its_call_ends_on_time() -> None:
    async def main() -> None:
        held, gaps = Held(), []
        ticker = asyncio.create_task(ticking(gaps))
        senders = Senders("test")
        started = time.monotonic()
        with pytest.raises(polymsg.MessagingTimeout):
            await wait_future(held.send, 0.3, senders=senders)
        elapsed = time.monotonic() - started
        ticker.cancel()
        assert 0.29 <= elapsed < 0.3 + 3.0
        assert gaps and max(gaps) < 0.5  # the loop kept running meanwhile
        held.release.set()
        await asyncio.to_thread(_until, lambda: held.futures)
        # the driver's future came after the caller gave up: cancelled, so dropped
        assert held.futures[0].cancelled()

    asyncio.run(main())


def _until(predicate: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 10
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_send_abandoned_before_a_thread_took_it_is_never_made() -> None:
    async def main() -> None:
        held = Held()
        senders = Senders("test")
        busy = [asyncio.create_task(wait_future(held.send, 30, senders=senders))
                for _ in range(MAX_THREADS)]
        await asyncio.to_thread(_until, lambda: held.started == MAX_THREADS)
        made: list[bool] = []

        def late() -> Future[Any]:
            made.append(True)
            return Future()
        with pytest.raises(polymsg.MessagingTimeout):
            await wait_future(late, 0.1, senders=senders)  # every thread is held
        held.release.set()
        for future in await asyncio.to_thread(_wait_for_futures, held, MAX_THREADS):
            future.set_result("ok")
        assert await asyncio.gather(*busy) == ["ok"] * MAX_THREADS
        assert made == []

    asyncio.run(main())


def _wait_for_futures(held: Held, count: int) -> list[Future[Any]]:
    _until(lambda: len(held.futures) == count)
    return held.futures


def test_what_a_send_raises_on_a_sender_thread_is_raised_to_the_caller() -> None:
    def refused() -> Future[Any]:
        raise polymsg.SerializationError("args: a set is not JSON")

    def buggy() -> Future[Any]:
        raise ValueError("a serializer's own error")

    def fine() -> Future[Any]:
        future: Future[Any] = Future()
        threading.Timer(0.05, future.set_result, ("done",)).start()
        return future

    async def main() -> None:
        senders = Senders("test")
        with pytest.raises(polymsg.SerializationError, match="set"):
            await wait_future(refused, 5, senders=senders)
        with pytest.raises(ValueError, match="serializer"):  # as the sync client raises it
            await wait_future(buggy, 5, senders=senders)
        assert await wait_future(fine, 5, senders=senders) == "done"
        assert await wait_future(fine, None, senders=senders) == "done"

    asyncio.run(main())


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def test_a_send_on_a_sender_thread_sees_the_callers_context() -> None:
    seen: list[tuple[str, str]] = []

    def send() -> Future[Any]:
        seen.append((REQUEST_ID.get("unset"), threading.current_thread().name))
        future: Future[Any] = Future()
        future.set_result(None)
        return future

    async def main() -> None:
        REQUEST_ID.set("req-1")  # what a tracer or a logging filter keeps in the context
        await wait_future(send, 5, senders=Senders("test"))

    asyncio.run(main())
    [(request_id, thread)] = seen
    assert request_id == "req-1"
    assert thread.startswith("polymsg-aio-send")
