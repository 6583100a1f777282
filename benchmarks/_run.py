"""One benchmark run: which subjects, in which order, with progress, into results."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polymsg
from benchmarks import _measure as m
from benchmarks import _raw
from benchmarks._child import Child
from benchmarks._report import evaluate_goals
from benchmarks._subjects import OsloRemote, PolymsgLocal, PolymsgRemote
from polymsg._registry import load_driver

__all__ = ["QUEUES", "SUBJECTS", "Options", "Progress", "expand_only", "expand_queues", "label",
           "run", "run_order", "write_results"]

#: Every subject, in the order a run measures them: key -> label.
SUBJECTS: dict[str, str] = {
    "memory": "polymsg memory://",
    "pingpong": "thread ping-pong",
    "pingpong-1core": "thread ping-pong, 1 core",
    "zmq": "polymsg zmq://",
    "raw-zmq": "raw pyzmq",
    "kombu": "polymsg rabbit+kombu",
    "pika": "polymsg rabbit+pika",
    "oslo": "oslo.messaging rabbit",
    "raw-pika": "raw pika",
}
#: Names ``--only`` accepts besides the subject keys.
GROUPS: dict[str, tuple[str, ...]] = {
    "rabbit": ("kombu", "pika", "oslo", "raw-pika"),
    "raw": ("pingpong", "pingpong-1core", "raw-zmq", "raw-pika"),
    "polymsg": ("memory", "zmq", "kombu", "pika"),
}
_RABBIT = frozenset(GROUPS["rabbit"])
#: Queue types ``--queues`` accepts. ``quorum`` runs the polymsg and oslo.messaging
#: RabbitMQ subjects again with ``rabbit_quorum_queue`` and
#: ``rabbit_transient_quorum_queue`` on (raw pika keeps its classic auto-delete queues:
#: a quorum queue cannot be auto-deleted, so its figures would not be comparable).
QUEUES = ("classic", "quorum")
#: Subjects measured once per queue type.
_QUEUED = ("kombu", "pika", "oslo")
#: Suffix of a subject key measured on quorum queues.
QUORUM = "-quorum"
#: The options that turn quorum queues on, for polymsg (URL) and oslo.messaging (config).
QUORUM_OPTIONS = {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True}
#: What oslo.messaging needs besides: durable queues (RabbitMQ refuses a non-durable
#: quorum queue), and an exchange of its own, as it declares its control exchange
#: durable then and fails on the classic rows' non-durable one.
OSLO_QUORUM = {**QUORUM_OPTIONS, "amqp_durable_queues": True}
OSLO_QUORUM_EXCHANGE = "openstack-quorum"
#: Seconds the in-process memory:// RSS run may take for each of its two reports.
RSS_TIMEOUT = 600.0
#: Seconds a subject has to answer one call after a measurement failed.
HEALTH_TIMEOUT = 10.0
_VERSIONS = ("polymsg", "polymsg-kombu", "polymsg-pika", "polymsg-zmq", "oslo.messaging",
             "kombu", "pika", "pyzmq")


def expand_only(text: str | None) -> tuple[str, ...]:
    """Subject keys from ``--only`` (``None``: all), in run order; ValueError names a bad one."""
    if not text:
        return tuple(SUBJECTS)
    wanted: set[str] = set()
    for name in (part.strip() for part in text.split(",") if part.strip()):
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in SUBJECTS:
            wanted.add(name)
        else:
            known = ", ".join([*SUBJECTS, *GROUPS])
            raise ValueError(f"unknown benchmark subject {name!r} (known: {known})")
    return tuple(key for key in SUBJECTS if key in wanted)


def expand_queues(text: str | None) -> tuple[str, ...]:
    """Queue types from ``--queues`` (``None``: classic only); ValueError names a bad one."""
    if not text:
        return ("classic",)
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(QUEUES))
    if unknown or not wanted:
        raise ValueError(f"unknown queue type {(unknown or [text])[0]!r} "
                         f"(known: {', '.join(QUEUES)})")
    return tuple(q for q in QUEUES if q in wanted)


def run_order(only: tuple[str, ...], queues: tuple[str, ...]) -> tuple[str, ...]:
    """The subject keys a run measures: ``only`` (without the RabbitMQ RPC subjects when
    ``classic`` is not in ``queues``), then those subjects on quorum queues."""
    keys = [key for key in only if key not in _QUEUED or "classic" in queues]
    if "quorum" in queues:
        keys += [key + QUORUM for key in only if key in _QUEUED]
    return tuple(keys)


def _base(key: str) -> str:
    """The subject key without its queue type."""
    return key.removesuffix(QUORUM)


def label(key: str) -> str:
    """What a subject key is called in progress lines and tables."""
    return SUBJECTS[_base(key)] + (", quorum queues" if key.endswith(QUORUM) else "")


class Progress:
    """Prints what is being measured, and the figure it gave, as the run goes."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or (lambda text: print(text, end="", file=sys.stderr, flush=True))

    def subject(self, index: int, total: int, label: str) -> None:
        """A subject starts."""
        self._write(f"[{index}/{total}] {label} (load average {os.getloadavg()[0]:.2f})\n")

    def note(self, text: str) -> None:
        """A line of its own (a skipped subject, a failure)."""
        self._write(f"      {text}\n")

    @contextmanager
    def step(self, label: str) -> Iterator[dict[str, float]]:
        """Around one measurement; the caller fills the yielded dict with its figures."""
        self._write(f"      {label:<34} ")
        started = time.perf_counter()
        figures: dict[str, float] = {}
        try:
            yield figures
        except BaseException as exc:
            self._write(f"FAILED ({type(exc).__name__})\n")
            raise
        shown = "  ".join(_show(name, value) for name, value in figures.items())
        self._write(f"{shown}  [{time.perf_counter() - started:.1f} s]\n")


def _show(name: str, value: float) -> str:
    if name.startswith(("call_median", "call_p99")):
        return f"{name.split('_')[1]} {value:,.0f} us"
    if name.startswith("cast_cpu_us"):
        return f"server CPU {value:,.1f} us/cast"
    if name.startswith("rss_growth"):
        return f"growth {value:+.1f}%"
    if name.startswith("rss"):
        return f"{value:,.1f} MiB"
    return f"{value:,.0f}/s"


@dataclass
class Options:
    """What to run: the budget, the subjects, the RabbitMQ URL."""

    quick: bool = False
    only: tuple[str, ...] = tuple(SUBJECTS)
    url_rabbit: str | None = None
    #: Queue types the RabbitMQ RPC subjects run on (:data:`QUEUES`).
    queues: tuple[str, ...] = ("classic",)
    #: Times every subject's rates are measured, the subjects taking turns; each
    #: figure keeps its best round (the RSS measurements run once).
    rounds: int = 1
    progress: Progress = field(default_factory=Progress)

    @property
    def budget(self) -> m.Budget:
        """Seconds and counts of each measurement."""
        return m.QUICK if self.quick else m.FULL


@dataclass
class _Outcome:
    key: str
    figures: dict[str, float] = field(default_factory=dict)
    skipped: str = ""
    failures: list[str] = field(default_factory=list)
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])

    def fail(self, what: str, exc: BaseException) -> None:
        self.failures.append(f"{what}: {_first_line(exc)}")

    def merge(self, later: _Outcome) -> None:
        """Take a later round's figures where they are better, and its failures."""
        for name, value in later.figures.items():
            mine = self.figures.get(name)
            if mine is None or math.isnan(mine) or _better(name, value, mine):
                self.figures[name] = value
        self.failures += later.failures

    def as_dict(self) -> dict[str, Any]:
        if self.skipped:
            status, note = "skipped", self.skipped
        else:
            status = "ok" if not self.failures else "partial" if self.figures else "failed"
            note = "; ".join(self.failures)
        return {"key": self.key, "label": label(self.key), "status": status,
                "note": note, "loadavg": round(self.loadavg, 2), "figures": self.figures}


def _better(name: str, value: float, than: float) -> bool:
    """Whether figure ``name`` at ``value`` beats ``than`` (latencies and CPU times
    are better lower, rates higher)."""
    return value < than if name.endswith("_us") or "_us_" in name else value > than


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _answers(subject: m.RpcSubject) -> bool:
    """Whether ``subject`` still answers a call within :data:`HEALTH_TIMEOUT` seconds."""
    answered = threading.Event()

    def ping() -> None:
        with contextlib.suppress(Exception):
            subject.call("ping")
            answered.set()

    threading.Thread(target=ping, name="bench-health", daemon=True).start()
    return answered.wait(HEALTH_TIMEOUT)


# -- what each subject runs ----------------------------------------------------------------

Step = tuple[str, Callable[[], dict[str, float]]]


def _sizes(budget: m.Budget) -> Iterator[tuple[str, int, str, int]]:
    """The larger payloads: figure suffix, bytes, label and the most casts to send."""
    for suffix, size in m.SIZES[1:]:
        label = suffix.lstrip("_").replace("KiB", " KiB").replace("MiB", " MiB")
        yield suffix, size, label, budget.max_sized_casts * (1 if size > 100_000 else 100)


def _rpc_steps(subject: m.RpcSubject, budget: m.Budget) -> Iterator[Step]:
    yield "sequential calls, 100 B", lambda: m.sequential_calls(subject, 100, budget.calls)
    yield (f"{budget.threads} threads calling, 100 B",
           lambda: m.threaded_calls(subject, budget.threads, budget.calls))
    yield "casts end to end, 100 B", lambda: m.casts_end_to_end(subject, 100, budget.calls)
    yield (f"{budget.threads} threads casting, 100 B",
           lambda: m.threaded_casts(subject, budget.threads, budget.calls))
    if subject.notify_supported:
        yield ("notifications end to end, 100 B",
               lambda: m.notifications_end_to_end(subject, budget.calls))
    for suffix, size, label, cap in _sizes(budget):
        yield (f"sequential calls, {label}",
               partial(m.sequential_calls, subject, size, budget.sized, suffix))
        yield (f"casts end to end, {label}",
               partial(m.casts_end_to_end, subject, size, budget.sized, cap, suffix))


def _raw_steps(raw: _raw.RawPika | _raw.RawZmq, budget: m.Budget) -> Iterator[Step]:
    cast_label = "publish/consume" if isinstance(raw, _raw.RawPika) else "PUSH/PULL"
    call_label = "direct reply-to RPC" if isinstance(raw, _raw.RawPika) else "DEALER/ROUTER"
    yield f"{call_label}, 100 B", lambda: raw.calls(100, budget.calls)
    yield f"{cast_label}, 100 B", lambda: raw.casts(100, budget.calls)
    if isinstance(raw, _raw.RawPika):
        yield ("publish, confirmed one by one, 100 B",
               lambda: raw.confirmed_casts(100, budget.calls))
    for suffix, size, label, cap in _sizes(budget):
        yield f"{call_label}, {label}", partial(raw.calls, size, budget.sized, suffix)
        yield f"{cast_label}, {label}", partial(raw.casts, size, budget.sized, cap, suffix)


class _Runner:
    """Runs the subjects of one :class:`Options`, collecting outcomes."""

    def __init__(self, options: Options, scratch: Path) -> None:
        self.options = options
        self.budget = options.budget
        self.progress = options.progress
        self.scratch = scratch
        self.deferred: list[tuple[_Outcome, Callable[[], dict[str, float]]]] = []
        #: The round being measured, from 1.
        self.round = 1

    def steps(self, outcome: _Outcome, steps: Iterator[Step],
              healthy: Callable[[], bool] | None = None) -> None:
        """Run ``steps``; after a failure go on only while ``healthy()`` says so."""
        for label, measure in steps:
            try:
                with self.progress.step(label) as figures:
                    figures.update(measure())
            except Exception as exc:
                outcome.fail(label, exc)
                self.progress.note(f"failed: {_first_line(exc)}")
                if healthy is None or not healthy():
                    self.progress.note("the rest of this subject is skipped")
                    return
                continue
            outcome.figures.update(figures)

    def rpc(self, outcome: _Outcome, factory: Callable[[], Any],
            rss: Callable[[], dict[str, float]] | None, durable: bool = False) -> None:
        """Measure the rates of the RPC subject ``factory`` makes; ``rss`` waits in
        :attr:`deferred` (first round only). ``durable``: the subject's topic queues
        outlive it (quorum queues), so they are deleted afterwards."""
        topic = None
        try:
            with factory() as subject:
                topic = subject.topic if durable else None
                m.timed_loop(self.budget.warmup, lambda: subject.call("warm-up"))
                self.steps(outcome, _rpc_steps(subject, self.budget), lambda: _answers(subject))
        except Exception as exc:
            outcome.fail("start or stop", exc)
            self.progress.note(f"failed: {_first_line(exc)}")
        if topic is not None:
            try:
                _raw.delete_queues(self.options.url_rabbit or "", [
                    topic, f"{topic}.bench", f"{topic}-notifications.info"])
            except Exception as exc:
                self.progress.note(f"could not delete the queues of {topic}: "
                                   f"{_first_line(exc)}")
        if rss is not None and self.round == 1:  # on a server of its own, once
            self.deferred.append((outcome, rss))  # every subject's rates are in

    def run_deferred(self) -> None:
        """The RSS measurements: long, so they come after the rates, which then are
        taken close together in time (the machine's load drifts)."""
        total = self.budget.rss_batch * self.budget.rss_batches
        for index, (outcome, rss) in enumerate(self.deferred, 1):
            self.progress.subject(index, len(self.deferred),
                                  f"server RSS: {label(outcome.key)}")
            self.steps(outcome, iter([(f"{total:,} casts", rss)]))

    def remote_rss(self, factory: Callable[[], Any]) -> Callable[[], dict[str, float]]:
        def measure() -> dict[str, float]:
            with factory() as subject:
                return m.server_rss(subject, self.budget.rss_batch, self.budget.rss_batches)
        return measure

    def memory_rss(self) -> dict[str, float]:
        with Child("memory-rss", batch=self.budget.rss_batch, batches=self.budget.rss_batches,
                   payload=100) as child:
            first = child.expect("rss", RSS_TIMEOUT)["rss"]
            last = child.expect("rss", RSS_TIMEOUT)["rss"]
        return m.rss_figures(first, last)

    def zmq_url(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ipc = tempfile.mkdtemp(prefix="ipc-", dir=self.scratch)
        return f"zmq://127.0.0.1:{port}/?ipc_dir={ipc}"

    def rabbit_url(self, scheme: str, quorum: bool = False) -> str:
        """The RabbitMQ URL with ``scheme``; with ``quorum``, the quorum options in its query."""
        url = f"{scheme}://{(self.options.url_rabbit or '').split('://', 1)[1]}"
        if not quorum:
            return url
        query = "&".join(f"{name}=true" for name in QUORUM_OPTIONS)
        return f"{url}{'&' if '?' in url else '?'}{query}"

    def raw(self, outcome: _Outcome, factory: Callable[[], Any]) -> None:
        raw = factory()
        try:
            self.steps(outcome, _raw_steps(raw, self.budget))
        finally:
            raw.close()

    def measure(self, key: str, outcome: _Outcome) -> None:
        """Run subject ``key`` into ``outcome``."""
        budget = self.budget
        if key == "memory":
            url = f"memory://bench-{os.getpid()}"
            self.rpc(outcome, lambda: PolymsgLocal(url), self.memory_rss)
        elif key in ("pingpong", "pingpong-1core"):
            pin = key == "pingpong-1core"
            self.steps(outcome, iter([("thread round trips",
                                       lambda: _raw.pingpong(budget.calls, pin))]))
        elif key == "zmq":
            self.rpc(outcome, lambda: PolymsgRemote(self.zmq_url()),
                     self.remote_rss(lambda: PolymsgRemote(self.zmq_url())))
        elif _base(key) in ("kombu", "pika"):
            quorum = key.endswith(QUORUM)
            url = self.rabbit_url(f"rabbit+{_base(key)}", quorum)
            self.rpc(outcome, lambda: PolymsgRemote(url),
                     None if quorum else self.remote_rss(lambda: PolymsgRemote(url)), quorum)
        elif _base(key) == "oslo":
            url = self.rabbit_url("rabbit")
            if key.endswith(QUORUM):
                self.rpc(outcome, lambda: OsloRemote(url, OSLO_QUORUM, OSLO_QUORUM_EXCHANGE),
                         None, durable=True)
            else:
                self.rpc(outcome, lambda: OsloRemote(url), None)
        elif key == "raw-zmq":
            self.raw(outcome, _raw.RawZmq)
        elif key == "raw-pika":
            url = self.options.url_rabbit or ""
            self.raw(outcome, lambda: _raw.RawPika(url))


def _rabbit_unreachable(url: str) -> str | None:
    """Why RabbitMQ at ``url`` cannot be reached (a TCP connect), or ``None``."""
    try:
        params = _raw.amqp_params(url)
    except polymsg.InvalidTransportURL as exc:
        return str(exc)
    try:
        with socket.create_connection((params["host"], params["port"]), timeout=5):
            return None
    except OSError as exc:
        return f"RabbitMQ at {params['host']}:{params['port']} does not answer: {exc}"


def _unavailable(key: str, options: Options) -> str | None:
    """Why ``key`` cannot run here, or ``None``."""
    key = _base(key)
    if key in _RABBIT and not options.url_rabbit:
        return "no RabbitMQ URL (--url-rabbit or $POLYMSG_TEST_RABBIT_URL)"
    needs = {"kombu": "rabbit+kombu", "pika": "rabbit+pika", "zmq": "zmq"}
    modules = {"oslo": "oslo_messaging", "raw-pika": "pika", "raw-zmq": "zmq"}
    if key in needs:
        try:
            load_driver(needs[key])
        except polymsg.DriverLoadFailure as exc:
            return f"not installed: {exc}"
    if key in modules and importlib.util.find_spec(modules[key]) is None:
        return f"not installed: no module {modules[key]!r}"
    return None


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _meta(options: Options) -> dict[str, Any]:
    budget = options.budget
    return {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg_start": list(os.getloadavg()),
        "quick": options.quick,
        "rounds": options.rounds,
        "only": list(options.only),
        "queues": list(options.queues),
        "rabbit_url": str(polymsg.TransportURL.parse(options.url_rabbit))
        if options.url_rabbit else None,
        "versions": _versions(),
        "budget": asdict(budget),
        "rss_casts": [budget.rss_batch, budget.rss_batch * budget.rss_batches],
    }


def _first_round(runner: _Runner, options: Options, key: str, outcome: _Outcome) -> bool:
    """Measure ``key`` into ``outcome`` unless it cannot run here; whether it could."""
    reason = _unavailable(key, options)
    if reason is not None:
        outcome.skipped = reason
        options.progress.note(f"skipped: {reason}")
        return False
    if _base(key) in _RABBIT and options.url_rabbit:
        broken = _rabbit_unreachable(options.url_rabbit)
        if broken is not None:
            outcome.failures.append(f"setup: {broken}")
            options.progress.note(f"failed: {broken}")
            return False
    _measure_into(runner, key, outcome)
    return True


def _measure_into(runner: _Runner, key: str, outcome: _Outcome) -> None:
    try:
        runner.measure(key, outcome)
    except Exception as exc:
        outcome.fail("setup", exc)
        runner.progress.note(f"failed: {_first_line(exc)}")


def run(options: Options) -> dict[str, Any]:
    """Measure every subject of ``options``; the results (see :mod:`._report`)."""
    meta = _meta(options)
    started = time.perf_counter()
    outcomes: dict[str, _Outcome] = {}  # in run order: round 1 runs every key
    with tempfile.TemporaryDirectory(prefix="polymsg-bench-") as scratch:
        runner = _Runner(options, Path(scratch))
        runnable = list(run_order(options.only, options.queues))
        for round_no in range(1, options.rounds + 1):
            runner.round = round_no
            keys, runnable = runnable, []
            for index, key in enumerate(keys, 1):
                shown = label(key) + (f", round {round_no} of {options.rounds}"
                                      if options.rounds > 1 else "")
                options.progress.subject(index, len(keys), shown)
                if round_no == 1:
                    outcomes[key] = _Outcome(key)  # its load average: now
                    if _first_round(runner, options, key, outcomes[key]):
                        runnable.append(key)
                    continue
                later = _Outcome(key)
                _measure_into(runner, key, later)
                outcomes[key].merge(later)
                runnable.append(key)
        runner.run_deferred()
    meta["loadavg_end"] = list(os.getloadavg())
    meta["seconds"] = round(time.perf_counter() - started, 1)
    results: dict[str, Any] = {"format": 1, "meta": meta,
                               "subjects": [o.as_dict() for o in outcomes.values()]}
    results["goals"] = evaluate_goals(results)
    return results


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``results`` as ``<UTC time>.json`` under ``out_dir``, and as
    ``latest.json`` unless it was a ``--quick`` run; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["meta"]["started"].replace(":", "").replace("+0000", "Z")
    text = json.dumps(_finite(results), indent=2, sort_keys=True, allow_nan=False) + "\n"
    paths = [out_dir / f"{stamp}{'-quick' if results['meta']['quick'] else ''}.json"]
    if not results["meta"]["quick"]:
        paths.append(out_dir / "latest.json")
    for path in paths:
        path.write_text(text, encoding="utf-8")
    return paths
