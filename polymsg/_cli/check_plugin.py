"""The pytest plugin ``polymsg check`` loads into the conformance run it starts.

It runs inside that pytest process (``-p polymsg._cli.check_plugin``), takes
the transport URL from the environment (so a password never shows in the
process list) and writes one JSON report: for every conformance test, the
mixin it comes from (its area), the capabilities it needed, its outcome and,
when it did not pass, the one-line reason. ``polymsg check`` turns that report
into the capability table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polymsg._cli.check import REPORT_ENV, URL_ENV
from polymsg.testing import DriverFixtures
from polymsg.testing.plugin import OPTION

__all__ = ["Collector", "TestRecord"]


@dataclass
class TestRecord:
    """What happened to one conformance test."""

    nodeid: str
    area: str
    name: str
    param: str | None = None
    capabilities: list[str] = field(default_factory=list)
    outcome: str = "not run"  # passed, failed, error, skipped, not run
    reason: str = ""
    duration: float = 0.0

    def needs(self, capabilities: tuple[str, ...]) -> None:
        """Note capabilities the test asked for (through ``require``)."""
        self.capabilities.extend(c for c in capabilities if c not in self.capabilities)


def _record_for(item: pytest.Item) -> TestRecord:
    function = getattr(item, "function", None)
    qualname = getattr(function, "__qualname__", "")
    area = qualname.split(".")[0] if "." in qualname else type(item).__name__
    callspec = getattr(item, "callspec", None)
    record = TestRecord(
        nodeid=item.nodeid, area=area,
        name=str(getattr(item, "originalname", None) or item.name),
        param=str(callspec.id) if callspec is not None else None,
    )
    # The undeclared-capability test is parametrized by the capability it checks.
    capability = callspec.params.get("capability") if callspec is not None else None
    if isinstance(capability, str):
        record.needs((capability,))
    return record


def _reason(report: pytest.TestReport) -> str:
    """One line saying why a test did not pass."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", "") or report.longreprtext or report.outcome)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else report.outcome


class Collector:
    """Records every test's outcome and writes the report at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, TestRecord] = {}
        self.current: TestRecord | None = None
        self.exitstatus: int | None = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # After -k and other deselection: only the tests that will run.
        self.records = {item.nodeid: _record_for(item) for item in session.items}

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = self.records.get(nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self.records.get(report.nodeid)
        if record is None:
            return
        record.duration += report.duration
        if report.when == "call":
            record.outcome = str(report.outcome)
            record.reason = "" if report.passed else _reason(report)
        elif not report.passed and record.outcome in ("not run", "passed"):
            # A fixture failed (an error) or skipped the test in setup.
            record.outcome = "error" if report.failed else "skipped"
            record.reason = _reason(report)

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.exitstatus = int(exitstatus)
        self.write()

    def write(self) -> None:
        """Write the report (atomically: a reader never sees half of it)."""
        data: dict[str, Any] = {
            "exitstatus": self.exitstatus,
            "tests": [asdict(record) for record in self.records.values()],
        }
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data), encoding="utf-8")
        partial.replace(self.path)


def _watch_require(monkeypatch: pytest.MonkeyPatch, collector: Collector) -> None:
    """Record the capabilities each test asks for through ``DriverFixtures.require``."""
    original = DriverFixtures.require

    def require(self: DriverFixtures, transport: Any, *capabilities: str) -> None:
        if collector.current is not None:
            collector.current.needs(capabilities)
        original(self, transport, *capabilities)

    monkeypatch.setattr(DriverFixtures, "require", require)


_PATCHES: list[pytest.MonkeyPatch] = []


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Take the URL from the environment and start recording."""
    url = os.environ.get(URL_ENV)
    if url:
        setattr(config.option, OPTION, url)
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    collector = Collector(Path(path))
    config.pluginmanager.register(collector, "polymsg-check-collector")
    monkeypatch = pytest.MonkeyPatch()
    _watch_require(monkeypatch, collector)
    _PATCHES.append(monkeypatch)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Undo the ``require`` wrapper."""
    for monkeypatch in _drain(_PATCHES):
        monkeypatch.undo()


def _drain(items: list[pytest.MonkeyPatch]) -> Iterator[pytest.MonkeyPatch]:
    while items:
        yield items.pop()
