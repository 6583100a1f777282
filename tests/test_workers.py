"""The threading executor's worker pool (polymsg._workers), with real threads."""

from __future__ import annotations

import threading

import pytest

from polymsg._workers import WorkerPool

TIMEOUT = 30.0


def _pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def test_items_run_in_order_on_one_worker_and_shutdown_joins_it() -> None:
    done: list[int] = []
    pool = WorkerPool(1, done.append, "order")
    for n in range(5000):
        pool.submit(n)
    pool.shutdown()
    assert done == list(range(5000))
    assert _pool_threads("order") == []


def test_shutdown_runs_everything_queued_behind_a_busy_worker() -> None:
    release = threading.Event()
    started = threading.Event()
    done: list[int] = []

    def handler(n: int) -> None:
        if n == 0:
            started.set()
            assert release.wait(TIMEOUT)
        done.append(n)

    pool = WorkerPool(2, handler, "drain")
    for n in range(200):
        pool.submit(n)
    assert started.wait(TIMEOUT)
    stopper = threading.Thread(target=pool.shutdown)
    stopper.start()
    release.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert sorted(done) == list(range(200))
    assert _pool_threads("drain") == []


def test_blocked_handlers_get_up_to_max_workers_threads_and_never_more() -> None:
    cond = threading.Condition()
    running = 0
    most = 0
    release = threading.Event()

    def handler(_: int) -> None:
        nonlocal running, most
        with cond:
            running += 1
            most = max(most, running)
            cond.notify_all()
        assert release.wait(TIMEOUT)
        with cond:
            running -= 1

    pool = WorkerPool(3, handler, "bound")
    for n in range(10):  # one burst: nobody submits after it
        pool.submit(n)
    with cond:
        assert cond.wait_for(lambda: running == 3, TIMEOUT)
        # a fourth never starts while three are blocked
        assert not cond.wait_for(lambda: running > 3, 0.3)
    release.set()
    pool.shutdown()
    assert most == 3


def test_a_message_waiting_for_a_later_one_of_the_same_burst_is_not_stuck() -> None:
    parties = 6
    barrier = threading.Barrier(parties, timeout=TIMEOUT)
    passed: list[int] = []

    def handler(n: int) -> None:
        barrier.wait()  # every one of them must be running at once
        passed.append(n)

    pool = WorkerPool(parties, handler, "meet")
    for n in range(parties):
        pool.submit(n)
    pool.shutdown()
    assert sorted(passed) == list(range(parties))
    assert not barrier.broken


def test_quick_handlers_do_not_wake_the_whole_pool() -> None:
    done = threading.Event()
    lock = threading.Lock()
    count = 0
    total = 20000

    def handler(_: int) -> None:
        nonlocal count
        with lock:
            count += 1
            if count == total:
                done.set()

    pool = WorkerPool(64, handler, "quick")
    for n in range(total):
        pool.submit(n)
    assert done.wait(TIMEOUT)
    started = len(_pool_threads("quick"))
    pool.shutdown()
    # A pool waking (or starting) a worker per item while the others are busy would
    # have all 64 by now; computing handlers gain nothing from more than one or two.
    assert 1 <= started <= 32


def test_submit_after_shutdown_is_refused() -> None:
    pool = WorkerPool(2, lambda _: None, "closed")
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(1)
