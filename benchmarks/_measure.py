"""How each figure is measured, for any subject that can call, cast and notify.

Measurements are bounded by time rather than by count, so a fast driver and
a slow one each take about as long: calls run for ``seconds``; casts and
notifications are sent for ``seconds`` and timed until the server has
executed the last one (end to end).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "FULL",
    "QUICK",
    "SIZES",
    "Budget",
    "RpcSubject",
    "call_figures",
    "casts_end_to_end",
    "in_threads",
    "notifications_end_to_end",
    "payload",
    "percentile",
    "sequential_calls",
    "server_rss",
    "threaded_calls",
    "threaded_casts",
    "wait_for",
]

#: Payload sizes measured: (figure suffix, bytes). The first is the default.
SIZES: tuple[tuple[str, int], ...] = (("", 100), ("_10KiB", 10 * 1024), ("_1MiB", 1024 * 1024))

#: Seconds the server side may go without executing anything more before a
#: measurement gives up waiting for it to catch up (messages were lost).
STALL_TIMEOUT = 30.0
#: Seconds one wait for the server lasts before checking it still makes progress.
_WAIT_SLICE = 5.0


class BenchError(RuntimeError):
    """A measurement went wrong (a crossed reply, casts that never ran)."""


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs, and how many casts the RSS figure takes."""

    warmup: float
    calls: float
    threads: int
    sized: float
    max_sized_casts: int
    rss_batch: int
    rss_batches: int


#: The full run: figures worth comparing (a few minutes in all).
FULL = Budget(warmup=0.5, calls=3.0, threads=16, sized=1.5, max_sized_casts=300,
              rss_batch=20_000, rss_batches=10)
#: ``--quick``: everything runs, briefly, to check the harness works.
QUICK = Budget(warmup=0.05, calls=0.25, threads=16, sized=0.1, max_sized_casts=20,
               rss_batch=500, rss_batches=10)


class RpcSubject(Protocol):
    """A library under test, seen from the client side."""

    notify_supported: bool

    def call(self, payload: str) -> Any:
        """Call ``echo(payload)`` and return the result."""

    def cast(self, payload: str) -> None:
        """Cast ``tick(payload)``."""

    def notify(self, payload: str) -> None:
        """Send one ``info`` notification."""

    def reset(self) -> None:
        """Zero the server's counters of executed casts and notifications."""

    def wait_executed(self, casts: int, notes: int, timeout: float) -> tuple[int, int]:
        """Block until the server ran that many; return the counts it saw."""

    def server_rss(self) -> int | None:
        """The server process's RSS in bytes (``None`` when not a separate process)."""

    def server_cpu(self) -> float | None:
        """CPU seconds the server process has used (``None`` when not a separate process)."""


def payload(size: int) -> str:
    """A string of ``size`` bytes."""
    return "x" * size


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def call_figures(latencies: list[float], elapsed: float, suffix: str = "") -> dict[str, float]:
    """Rate, median and p99 (microseconds) of sequential round trips."""
    latencies.sort()
    return {
        f"calls{suffix}": len(latencies) / elapsed,
        f"call_median_us{suffix}": percentile(latencies, 0.5) * 1e6,
        f"call_p99_us{suffix}": percentile(latencies, 0.99) * 1e6,
    }


def timed_loop(seconds: float, once: Callable[[], None], max_count: int = 1 << 62,
               ) -> tuple[list[float], float]:
    """Run ``once`` for ``seconds`` (at least once); its latencies and the time taken."""
    clock = time.perf_counter
    latencies: list[float] = []
    started = now = clock()
    deadline = started + seconds
    while True:
        once()
        before, now = now, clock()
        latencies.append(now - before)
        if now >= deadline or len(latencies) >= max_count:
            return latencies, now - started


def sequential_calls(subject: RpcSubject, size: int, seconds: float,
                     suffix: str = "") -> dict[str, float]:
    """Calls one after the other: rate, median and p99 latency."""
    body = payload(size)

    def once() -> None:
        if subject.call(body) != body:
            raise BenchError("a call returned something other than its payload")

    return call_figures(*timed_loop(seconds, once), suffix=suffix)


def in_threads(threads: int, seconds: float, once: Callable[[], None]) -> tuple[int, float]:
    """Run ``once`` in a loop on ``threads`` threads for ``seconds``, started together;
    how many times it ran in all, and the ``perf_counter`` time they started at. The
    first error of any thread is raised once all have stopped."""
    counts = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        start.wait()
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                once()
                counts[index] += 1
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts), started


def threaded_calls(subject: RpcSubject, threads: int, seconds: float) -> dict[str, float]:
    """``threads`` threads calling at once through one client: calls/s."""
    body = payload(100)

    def once() -> None:
        if subject.call(body) != body:
            raise BenchError("a call returned something other than its payload")

    done, started = in_threads(threads, seconds, once)
    return {f"calls_{threads}t": done / (time.perf_counter() - started)}


def wait_for(subject: RpcSubject, casts: int, notes: int) -> tuple[int, int]:
    """Wait until the server ran ``casts`` casts and ``notes`` notifications, or made no
    progress for :data:`STALL_TIMEOUT` seconds; the counts it reached."""
    last, stalled_since = (-1, -1), time.monotonic()
    while True:
        got = subject.wait_executed(casts, notes, _WAIT_SLICE)
        if got[0] >= casts and got[1] >= notes:
            return got
        if got != last:
            last, stalled_since = got, time.monotonic()
        elif time.monotonic() - stalled_since > STALL_TIMEOUT:
            return got


def _end_to_end(subject: RpcSubject, send: Callable[[], None], seconds: float,
                max_count: int, wait: Callable[[int], int]) -> float:
    subject.reset()
    sent, elapsed = timed_loop(seconds, send, max_count)
    started = time.perf_counter() - elapsed
    executed = wait(len(sent))
    if executed < len(sent):
        raise BenchError(f"only {executed} of {len(sent)} sent were executed (nothing more "
                         f"within {STALL_TIMEOUT:g} s)")
    return len(sent) / (time.perf_counter() - started)


def casts_end_to_end(subject: RpcSubject, size: int, seconds: float, max_count: int = 1 << 62,
                     suffix: str = "") -> dict[str, float]:
    """Casts sent for ``seconds``, timed until the server executed the last: casts/s,
    and the server's CPU time per cast in microseconds when it runs in a process of
    its own (``cast_cpu_us``: steadier than rates on a busy machine)."""
    body = payload(size)
    cpu_before = subject.server_cpu()
    sent = 0

    def cast() -> None:
        nonlocal sent
        subject.cast(body)
        sent += 1

    rate = _end_to_end(subject, cast, seconds, max_count,
                       lambda n: wait_for(subject, n, 0)[0])
    cpu_after = subject.server_cpu()
    figures = {f"casts{suffix}": rate}
    if cpu_before is not None and cpu_after is not None:
        figures[f"cast_cpu_us{suffix}"] = (cpu_after - cpu_before) / sent * 1e6
    return figures


def threaded_casts(subject: RpcSubject, threads: int, seconds: float) -> dict[str, float]:
    """``threads`` threads casting through one client for ``seconds``, timed until the
    server executed the last: casts/s."""
    body = payload(100)
    subject.reset()
    sent, started = in_threads(threads, seconds, lambda: subject.cast(body))
    executed = wait_for(subject, sent, 0)[0]
    if executed < sent:
        raise BenchError(f"only {executed} of {sent} casts were executed (nothing more "
                         f"within {STALL_TIMEOUT:g} s)")
    return {f"casts_{threads}t": sent / (time.perf_counter() - started)}


def notifications_end_to_end(subject: RpcSubject, seconds: float) -> dict[str, float]:
    """Notifications sent for ``seconds``, timed until the listener had the last: per s."""
    body = payload(100)
    rate = _end_to_end(subject, lambda: subject.notify(body), seconds, 1 << 62,
                       lambda n: wait_for(subject, 0, n)[1])
    return {"notifications": rate}


def server_rss(subject: RpcSubject, batch: int, batches: int, senders: int = 16,
               ) -> dict[str, float]:
    """Server RSS after ``batch`` casts and after ``batch * batches``.

    Casts go a batch at a time from ``senders`` threads, each batch waited
    for, so the backlog is the same every time and growth means memory the
    server kept.
    """
    body = payload(100)
    subject.reset()
    first = 0

    errors: list[BaseException] = []

    def send(count: int) -> None:
        try:
            for _ in range(count):
                subject.cast(body)
        except BaseException as exc:
            errors.append(exc)

    for n in range(1, batches + 1):
        shares = [batch // senders + (1 if i < batch % senders else 0) for i in range(senders)]
        threads = [threading.Thread(target=send, args=(share,), daemon=True) for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        done = wait_for(subject, n * batch, 0)[0]
        if done < n * batch:
            raise BenchError(f"only {done} of {n * batch} casts ran (nothing more "
                             f"within {STALL_TIMEOUT:g} s)")
        if n == 1:
            first = subject.server_rss() or 0
    last = subject.server_rss() or 0
    return rss_figures(first, last)


def rss_figures(first: int, last: int) -> dict[str, float]:
    """RSS figures in MiB and the growth from the first to the last, in percent."""
    return {
        "rss_first_MiB": first / 2**20,
        "rss_last_MiB": last / 2**20,
        "rss_growth_pct": (last - first) / first * 100 if first else math.nan,
    }
