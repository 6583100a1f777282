"""Results: what a run measured, the tables printed from it, ratios and goals.

A run's results are one JSON-ready dict::

    {"format": 1, "meta": {...}, "subjects": [{"key", "label", "status", "note",
     "figures": {name: value}}], "goals": [{"goal", "subject", "measured", "target",
     "status"}]}

Figure names: ``calls`` (sequential calls/s), ``call_median_us``,
``call_p99_us``, ``calls_16t`` (16 threads), ``casts``, ``casts_16t`` and
``notifications`` (per second, end to end), ``casts_confirmed`` (raw pika
only: publishes each waiting for its confirm), the call and cast figures
again with a ``_10KiB`` or ``_1MiB`` suffix, ``cast_cpu_us`` (the server
process's CPU time per cast, microseconds; servers in a child process only),
and ``rss_first_MiB``,
``rss_last_MiB``, ``rss_growth_pct``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GOALS", "RATIOS", "evaluate_goals", "figure", "ratio_rows", "render", "subject"]

#: Each polymsg subject and the references it is compared with.
RATIOS: tuple[tuple[str, str], ...] = (
    ("memory", "pingpong"), ("memory", "pingpong-1core"),
    ("kombu", "oslo"), ("pika", "oslo"), ("kombu", "raw-pika"), ("pika", "raw-pika"),
    ("zmq", "raw-zmq"),
    ("kombu-quorum", "oslo-quorum"), ("pika-quorum", "oslo-quorum"),
)
RATIO_FIGURES = ("calls", "calls_16t", "casts", "casts_16t", "notifications",
                 "calls_10KiB", "calls_1MiB", "casts_10KiB", "casts_1MiB")


def subject(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The subject ``key`` of ``results`` (``None`` when it was not run)."""
    return next((s for s in results["subjects"] if s["key"] == key), None)


def figure(results: dict[str, Any], key: str, name: str) -> float | None:
    """One figure, or ``None`` when it was not measured."""
    found = subject(results, key)
    value = None if found is None else found["figures"].get(name)
    return None if value is None or math.isnan(value) else float(value)


# -- goals (benchmarks/README.md) ---------------------------------------------------------

@dataclass(frozen=True)
class Goal:
    """One performance goal: ``subject``'s ``measure`` compared with ``target``."""

    text: str
    subject: str
    measure: Callable[[dict[str, Any]], float | None]
    target: float
    higher_is_better: bool
    unit: str

    def evaluate(self, results: dict[str, Any]) -> dict[str, Any]:
        """PASS, MISS or n/a (something it needs was not measured)."""
        value = self.measure(results)
        if value is None:
            status = "n/a"
        elif self.higher_is_better:
            status = "PASS" if value >= self.target else "MISS"
        else:
            status = "PASS" if value <= self.target else "MISS"
        return {"goal": self.text, "subject": self.subject, "measured": value,
                "target": self.target, "unit": self.unit, "status": status}


def _ratio(key: str, name: str, ref: str, ref_name: str | None = None,
           invert: bool = False) -> Callable[[dict[str, Any]], float | None]:
    def measure(results: dict[str, Any]) -> float | None:
        mine, theirs = figure(results, key, name), figure(results, ref, ref_name or name)
        if not mine or not theirs:
            return None
        return theirs / mine if invert else mine / theirs
    return measure


def _value(key: str, name: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda results: figure(results, key, name)


def _goals() -> list[Goal]:
    goals: list[Goal] = []
    for key in ("kombu", "pika"):
        goals += [
            Goal("sequential calls >= 3x oslo.messaging", key,
                 _ratio(key, "calls", "oslo"), 3.0, True, "x"),
            Goal("16-thread calls >= 5x oslo.messaging", key,
                 _ratio(key, "calls_16t", "oslo"), 5.0, True, "x"),
            Goal("casts end to end >= 10x oslo.messaging", key,
                 _ratio(key, "casts", "oslo"), 10.0, True, "x"),
            Goal("sequential calls within 1.3x of raw pika RPC", key,
                 _ratio(key, "calls", "raw-pika", invert=True), 1.3, False, "x slower"),
        ]
    goals += [
        # The round trip is 1 / the sequential call rate; the ratio of rates is
        # the ratio of mean round-trip times.
        Goal("call round trip <= 3x raw pyzmq DEALER/ROUTER", "zmq",
             _ratio("zmq", "calls", "raw-zmq", invert=True), 3.0, False, "x slower"),
        Goal("casts end to end >= 100,000/s", "zmq", _value("zmq", "casts"), 100_000, True, "/s"),
        Goal("sequential calls >= 20,000/s", "memory", _value("memory", "calls"), 20_000, True,
             "/s"),
    ]
    goals += [Goal("server RSS flat: <= 10% growth", key, _value(key, "rss_growth_pct"), 10.0,
                   False, "%") for key in ("memory", "kombu", "pika", "zmq")]
    return goals


GOALS: tuple[Goal, ...] = tuple(_goals())


def evaluate_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal whose subject was run, evaluated."""
    ran = {s["key"] for s in results["subjects"]}
    return [goal.evaluate(results) for goal in GOALS if goal.subject in ran]


# -- text tables ---------------------------------------------------------------------------

def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:+.1f}%"
    if unit == "load":
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]],
           left: int = 1) -> list[str]:
    """A text table; the first ``left`` columns are left-aligned, the others right."""
    rows = list(rows)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i < left else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    header = line(headers)
    return ["", title, header, "-" * len(header), *(line(row) for row in rows)]


def _figure_rows(results: dict[str, Any], columns: Sequence[tuple[str, str]],
                 ) -> list[list[str]]:
    """One row per subject that has at least one of ``columns``."""
    rows = []
    for found in results["subjects"]:
        values = [found["figures"].get(name, found.get(name)) for name, _ in columns]
        if any(v is not None for (name, _), v in zip(columns, values, strict=True)
               if name != "loadavg"):
            rows.append([found["label"], *map(_fmt, values, [unit for _, unit in columns])])
    return rows


def _note_lines(results: dict[str, Any]) -> list[str]:
    notes = [f"  {s['label']}: {s['status']}: {s['note']}"
             for s in results["subjects"] if s["status"] != "ok"]
    return ["", "Not measured", *notes] if notes else []


def render(results: dict[str, Any]) -> str:
    """The results as text: figure tables, ratios and goals."""
    meta = results["meta"]
    calls = [("calls", ""), ("call_median_us", ""), ("call_p99_us", ""), ("calls_16t", ""),
             ("loadavg", "load")]
    oneway = [("casts", ""), ("casts_16t", ""), ("notifications", ""), ("casts_confirmed", ""),
              ("cast_cpu_us", "")]
    sized = [("calls_10KiB", ""), ("call_p99_us_10KiB", ""), ("calls_1MiB", ""),
             ("call_p99_us_1MiB", ""), ("casts_10KiB", ""), ("casts_1MiB", "")]
    first, last = meta.get("rss_casts", [0, 0])
    rss = [("rss_first_MiB", ""), ("rss_last_MiB", ""), ("rss_growth_pct", "%")]
    lines = [f"polymsg benchmarks, {meta['started']}: Python {meta['python']}, "
             f"{meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at start, "
             f"{meta.get('loadavg_end', [math.nan])[0]:.2f} at end"
             + (f", best of {meta['rounds']} rounds" if meta.get("rounds", 1) > 1 else "")
             + (" (--quick: figures are not comparable)" if meta.get("quick") else "")]
    lines += _table("Calls, 100 B payload (per second; latency in microseconds)",
                    ["", "sequential/s", "median us", "p99 us", "16 threads/s",
                     "load average"],
                    _figure_rows(results, calls))
    lines += _table("One-way, 100 B payload (per second, sent -> executed)",
                    ["", "casts/s", "casts/s 16 threads", "notifications/s",
                     "confirmed one by one/s", "server CPU us/cast"],
                    _figure_rows(results, oneway))
    lines += _table("Payload sizes (per second; p99 in microseconds)",
                    ["", "calls 10KiB", "p99 10KiB", "calls 1MiB", "p99 1MiB", "casts 10KiB",
                     "casts 1MiB"], _figure_rows(results, sized))
    lines += _table(f"Server RSS (MiB) after {first:,} and {last:,} casts",
                    ["", f"after {first:,}", f"after {last:,}", "growth"],
                    _figure_rows(results, rss))
    lines += _ratio_lines(results)
    lines += _goal_lines(results.get("goals", []))
    lines += _note_lines(results)
    return "\n".join(lines)


def ratio_rows(results: dict[str, Any], names: Sequence[str] = RATIO_FIGURES,
               ) -> list[tuple[str, list[float | None]]]:
    """Each pair of :data:`RATIOS` that was run with a figure of ``names`` in common:
    its label, and ``mine / theirs`` for each name (``None`` where one is missing)."""
    rows = []
    for key, ref in RATIOS:
        mine, theirs = subject(results, key), subject(results, ref)
        if mine is None or theirs is None:
            continue
        values = [_ratio(key, name, ref)(results) for name in names]
        if any(value is not None for value in values):
            rows.append((f"{mine['label']} / {theirs['label']}", values))
    return rows


def _ratio_lines(results: dict[str, Any]) -> list[str]:
    rows = [[label, *(_fmt(v, "x") for v in values)] for label, values in ratio_rows(results)]
    if not rows:
        return []
    return _table("Ratios (rates; > 1x means polymsg is faster)",
                  ["", "calls", "16-thr", "casts", "16-thr", "notes", "calls 10K", "calls 1M",
                   "casts 10K", "casts 1M"], rows)


def _measured(goal: dict[str, Any]) -> str:
    value, unit = goal["measured"], goal["unit"]
    if value is None:
        return "-"
    if unit.startswith("x"):
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:+.1f}%"
    return f"{value:,.0f}{unit}"


def _goal_lines(goals: Sequence[dict[str, Any]]) -> list[str]:
    if not goals:
        return []
    rows = [[g["status"], g["subject"], g["goal"], _measured(g)] for g in goals]
    return _table("Goals (benchmarks/README.md)", ["status", "subject", "goal", "measured"],
                  rows, left=3)
