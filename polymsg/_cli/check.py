"""``polymsg check URL``: the conformance suite against a live deployment.

The suite (:mod:`polymsg.testing`) runs in a pytest subprocess, on its live
module, with :mod:`polymsg._cli.check_plugin` recording what each test needed
and how it ended. This module turns that record into a table: per capability
(declared or not, and whether its behaviours conform) and per behaviour,
grouped by area.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import polymsg
from polymsg._cli.errors import EXIT_USAGE, CLIError

__all__ = ["CAPABILITY_ORDER", "REPORT_ENV", "URL_ENV", "Results", "check", "pytest_command"]

#: Environment variable naming the JSON report file the plugin writes.
REPORT_ENV = "POLYMSG_CHECK_REPORT"
#: Environment variable holding the transport URL under test (kept off the
#: command line, where a password would show in the process list).
URL_ENV = "POLYMSG_CHECK_URL"

#: Capabilities in the order the table lists them (the documented order).
CAPABILITY_ORDER = ("rpc", "fanout", "notify", "pools", "requeue", "store_and_forward",
                    "queue_ttl", "message_ttl", "multi_host")

#: The conformance mixins, in the order and under the titles the table uses.
AREAS = {
    "CapabilityTests": "Capabilities",
    "RPCTests": "RPC",
    "ErrorTests": "Errors",
    "VersionTests": "Versions and namespaces",
    "NotificationTests": "Notifications",
    "DeliveryTests": "Delivery and TTL hints",
    "LifecycleTests": "Lifecycle",
}

UNDECLARED_TEST = "test_undeclared_capability_raises_not_supported"

_MARKS = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "skipped": "skip",
          "not run": "-"}

_IMPLIED = frozenset({"rpc", "notify"})

# pytest's exit statuses (pytest.ExitCode), spelled out so this module needs no pytest.
_PYTEST_INTERRUPTED, _PYTEST_NO_TESTS = 2, 5


class CheckUsageError(CLIError):
    """``polymsg check`` cannot run as asked (exit status 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Test:
    """One conformance test's outcome, as the check plugin recorded it."""

    area: str
    name: str
    param: str | None
    capabilities: tuple[str, ...]
    outcome: str
    reason: str
    duration: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Test:
        return cls(area=str(data["area"]), name=str(data["name"]), param=data.get("param"),
                   capabilities=tuple(data.get("capabilities", ())),
                   outcome=str(data["outcome"]), reason=str(data.get("reason", "")),
                   duration=float(data.get("duration", 0.0)))

    @property
    def behaviour(self) -> str:
        """The test name as words: ``call round trips every json type [param]``."""
        words = self.name.removeprefix("test_").replace("_", " ")
        return f"{words} [{self.param}]" if self.param else words

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error")


@dataclass(frozen=True)
class CapabilityVerdict:
    """How one capability fared: ``status`` is pass, FAIL, "not tested" (declared,
    but none of its behaviours ran) or "-" (not declared and not probed)."""

    capability: str
    declared: bool
    status: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"capability": self.capability, "declared": self.declared,
                "status": self.status, "detail": self.detail}


class Results:
    """The outcome of one conformance run and the tables made from it."""

    def __init__(self, url: str, declared: Iterable[str], tests: Sequence[Test],
                 seconds: float, *, selected: bool = False) -> None:
        self.url = url
        self.selected = selected  # -k (or pytest arguments) ran part of the suite
        self.declared = frozenset(declared)
        self.tests = list(tests)
        self.seconds = seconds

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests if t.outcome == outcome)

    @property
    def failures(self) -> int:
        return sum(1 for t in self.tests if t.failed)

    def capability(self, name: str) -> CapabilityVerdict:
        """The verdict on one capability."""
        if name not in self.declared:
            probe = [t for t in self.tests if t.name == UNDECLARED_TEST and name in t.capabilities]
            if any(t.failed for t in probe):
                return CapabilityVerdict(name, False, "FAIL", "not declared, yet not refused "
                                         "with NotSupported")
            if any(t.outcome == "passed" for t in probe):
                return CapabilityVerdict(name, False, "pass", "not declared; using it raises "
                                         "NotSupported")
            # No probe (store_and_forward is a guarantee, not a call), or -k left it out.
            return CapabilityVerdict(name, False, "-", "not declared")
        ran = [t for t in self.tests if name in t.capabilities and t.name != UNDECLARED_TEST
               and t.outcome in ("passed", "failed", "error")]
        failed = sum(1 for t in ran if t.failed)
        if failed:
            return CapabilityVerdict(name, True, "FAIL",
                                     f"{failed} of {_behaviours(len(ran))} failed")
        if ran:
            return CapabilityVerdict(name, True, "pass", f"{_behaviours(len(ran))} passed")
        why = ("the selection ran none of its behaviours" if self.selected
               else "the conformance suite has no test of it")
        return CapabilityVerdict(name, True, "not tested", why)

    def capabilities(self) -> list[CapabilityVerdict]:
        extra = sorted(self.declared - set(CAPABILITY_ORDER))
        return [self.capability(name) for name in (*CAPABILITY_ORDER, *extra)]

    def areas(self) -> list[tuple[str, list[Test]]]:
        """Tests grouped by area, areas in the suite's order."""
        order = list(AREAS)
        names = sorted({t.area for t in self.tests},
                       key=lambda a: (order.index(a) if a in order else len(order), a))
        return [(AREAS.get(a, a.removesuffix("Tests")), [t for t in self.tests if t.area == a])
                for a in names]

    def _covered_probe(self, test: Test) -> bool:
        """The NotSupported probe of a declared capability: skipped by design,
        and the capability's row already says how its behaviours fared."""
        return (test.name == UNDECLARED_TEST and test.outcome == "skipped"
                and bool(set(test.capabilities) & self.declared))

    def summary(self) -> str:
        counts = (f"{self.count('passed')} passed, {self.failures} failed, "
                  f"{self.count('skipped')} skipped")
        not_run = self.count("not run")
        if not_run:
            counts += f", {not_run} not run"
        return f"{_behaviours(len(self.tests))}: {counts} ({self.seconds:.1f} s)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "declared": sorted(self.declared),
            "ok": self.failures == 0,
            "summary": {"passed": self.count("passed"), "failed": self.failures,
                        "skipped": self.count("skipped"), "not_run": self.count("not run"),
                        "seconds": round(self.seconds, 3)},
            "capabilities": [v.as_dict() for v in self.capabilities()],
            "tests": [{"area": AREAS.get(t.area, t.area), "behaviour": t.behaviour,
                       "test": t.name, "param": t.param, "capabilities": list(t.capabilities),
                       "outcome": t.outcome, "reason": t.reason,
                       "seconds": round(t.duration, 3)} for t in self.tests],
        }

    def render(self) -> list[str]:
        """The human-readable tables."""
        lines = [f"conformance of {self.url}", "",
                 f"  {'capability':<20}{'declared':<10}{'result':<12}detail"]
        for v in self.capabilities():
            lines.append(f"  {v.capability:<20}{'yes' if v.declared else 'no':<10}"
                         f"{v.status:<12}{v.detail}")
        for title, tests in self.areas():
            shown = [t for t in tests if not self._covered_probe(t)]
            if shown:
                lines += ["", title]
                for t in shown:
                    lines += _test_lines(t)
        lines += ["", self.summary()]
        return lines


def _behaviours(n: int) -> str:
    return f"{n} behaviour{'' if n == 1 else 's'}"


def _test_lines(test: Test) -> list[str]:
    # rpc and notify are implied by the area; name the more particular ones.
    tags = [c for c in test.capabilities if c not in _IMPLIED]
    if test.name == UNDECLARED_TEST:
        tags = []  # the parameter names it
    caps = f"  [{', '.join(tags)}]" if tags else ""
    line = f"  {_MARKS.get(test.outcome, test.outcome):<6}{test.behaviour}{caps}"
    if test.outcome == "skipped" and test.reason:
        return [f"{line}  ({test.reason})"]
    if test.failed and test.reason:
        return [line, f"          {test.reason}"]
    return [line]


def pytest_command(workdir: Path, keyword: str | None, test_timeout: float,
                   extra: Sequence[str]) -> list[str]:
    """The command line of the pytest subprocess.

    Its own empty ``pytest.ini`` and ``--noconftest`` keep the configuration
    of whatever directory the operator stands in out of the run.
    """
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(workdir),
               "--noconftest", "-p", "no:cacheprovider", "-p", "polymsg.testing.plugin",
               "-p", "polymsg._cli.check_plugin", "-q", "--disable-warnings",
               "--pyargs", "polymsg.testing.live"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command += ["-o", f"timeout={test_timeout:g}"]
    if keyword:
        command += ["-k", keyword]
    return [*command, *extra]


def _run_pytest(command: list[str], env: dict[str, str], cwd: Path, show_output: bool,
                ) -> tuple[int, list[str]]:
    """Run pytest, streaming its output to stderr when asked; (status, last lines)."""
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        try:
            for line in proc.stdout or ():
                tail.append(line.rstrip("\n"))
                if show_output:
                    click.echo(line, nl=False, err=True)
            return proc.wait(), list(tail)
        except KeyboardInterrupt:
            # The child got the same Ctrl-C; let it write its report and end.
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _read_report(path: Path, status: int, tail: list[str]) -> list[Test]:
    if status == _PYTEST_INTERRUPTED:
        raise KeyboardInterrupt
    if status == _PYTEST_NO_TESTS:
        raise CheckUsageError("no conformance test matches the selection (-k)")
    if status not in (0, 1) or not path.exists():
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        raise CLIError(f"the conformance run ended with pytest status {status}: {last} "
                       "(run with --show-output for details)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Test.from_json(item) for item in data["tests"]]


#: Connection retries of the reachability probe before the suite runs.
_PROBE_RETRY = 2


def _declared(url: str) -> tuple[str, frozenset[str]]:
    """Open the transport once: bad URLs, missing drivers and an unreachable or
    refusing broker fail here, in one line, before the suite runs."""
    with polymsg.get_transport(url) as transport:
        if "fanout" in transport.capabilities:
            # A fanout cast nobody receives: it needs a connection, stores nothing.
            probe = polymsg.RPCClient(transport, polymsg.Target(topic="polymsg-check-probe",
                                                                fanout=True),
                                      retry=_PROBE_RETRY)
            probe.cast({}, "probe")
        return str(transport.url), transport.capabilities


@click.command()
@click.argument("url")
@click.option("-k", "keyword", metavar="EXPRESSION",
              help="Run only the behaviours matching this pytest -k expression, "
                   "e.g. 'not ttl' or 'call and not fanout'.")
@click.option("--test-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds one behaviour may take before it counts as failed "
                   "(needs pytest-timeout).")
@click.option("--show-output", is_flag=True,
              help="Stream pytest's own output (tracebacks of failures) to stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PYTEST_ARGS]...")
def check(url: str, keyword: str | None, test_timeout: float, show_output: bool, as_json: bool,
          pytest_args: tuple[str, ...]) -> None:
    """Run the conformance suite against URL and print, per capability and per
    behaviour, whether the deployment conforms.

    Every behaviour uses topics of its own, but the run leaves queues named
    conformance-* behind on a broker: give it a virtual host of its own.
    Exit status 0 when every behaviour that ran passed, 1 when one failed,
    2 for a bad URL, a missing driver or a -k selecting nothing. Arguments
    after -- go to pytest unchanged (e.g. -- -x to stop at the first failure).
    """
    if importlib.util.find_spec("pytest") is None:
        raise CheckUsageError("polymsg check runs the conformance suite with pytest: "
                              "pip install pytest pytest-timeout")
    shown_url, declared = _declared(url)
    if not as_json:
        click.echo(f"running the conformance suite against {shown_url}...", err=True)
    with tempfile.TemporaryDirectory(prefix="polymsg-check-") as tmp:
        workdir = Path(tmp)
        report = workdir / "report.json"
        env = {**os.environ, URL_ENV: url, REPORT_ENV: str(report)}
        command = pytest_command(workdir, keyword, test_timeout, pytest_args)
        started = time.monotonic()
        status, tail = _run_pytest(command, env, workdir, show_output)
        tests = _read_report(report, status, tail)
    results = Results(shown_url, declared, tests, time.monotonic() - started,
                      selected=bool(keyword or pytest_args))
    if as_json:
        click.echo(json.dumps(results.as_dict(), indent=2))
    else:
        for line in results.render():
            click.echo(line)
    if results.failures:
        raise click.exceptions.Exit(1)
