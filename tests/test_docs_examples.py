"""The code of docs/examples runs, so the guides that show it cannot rot.

* ``murano_style.py`` (the migration guide's worked example) runs end to end
  on memory://;
* ``loopback_driver.py`` (the driver guide's complete driver) passes the
  conformance suite exactly as a driver distribution's own tests run it,
  registered through an entry point in a temporary directory: nothing is
  installed;
* ``polymsg check`` on a deliberately broken variant of it says which
  capability fails.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import pytest

from polymsg import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

BROKEN_DRIVER = '''
import itertools

from loopback_driver import LoopbackDriver


class OneServerDriver(LoopbackDriver):
    """Gives every call and cast to the first server: work is never spread."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hub.turn = itertools.repeat(0)
'''


def advertise(directory: Path, dist: str, drivers: dict[str, str]) -> None:
    """Make ``directory``, once on sys.path, advertise ``drivers`` on the
    ``polymsg.drivers`` entry-point group, as an installed distribution does."""
    info = directory / f"{dist.replace('-', '_')}-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in drivers.items())
    (info / "entry_points.txt").write_text(f"[polymsg.drivers]\n{lines}")


@pytest.fixture(scope="module")
def drivers_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PYTHONPATH under which the loopback driver and its broken variant
    are importable and registered on ``polymsg.drivers``.

    Used by subprocesses only: a process caches the entry points it has
    looked at, so registering drivers inside this one would come too late.
    """
    directory = tmp_path_factory.mktemp("example-drivers")
    (directory / "loopback_broken.py").write_text(textwrap.dedent(BROKEN_DRIVER))
    advertise(directory, "polymsg-loopback", {
        "loopback": "loopback_driver:LoopbackDriver",
        "loopback+oneserver": "loopback_broken:OneServerDriver",
    })
    return os.pathsep.join([str(directory), str(EXAMPLES)])


def polymsg_cli(pythonpath: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``polymsg`` command in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", "from polymsg.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


# -- the Murano-style example ----------------------------------------------------


def test_murano_style_example_on_memory() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        murano_style = importlib.import_module("murano_style")
    finally:
        sys.path.remove(str(EXAMPLES))
    report = murano_style.run(f"memory://murano-{uuid.uuid4().hex[:8]}", agent_queue_ttl=0.5)
    # Agents booted after their plans were sent still ran them (store and
    # forward); agent-4's first plan expired with its queue (queue_ttl), so
    # the new agent-4 ran only dep-5.
    assert sorted(report.executed) == [("agent-1", "dep-1"), ("agent-2", "dep-2"),
                                       ("agent-3", "dep-3"), ("agent-4", "dep-5")]
    assert sorted(report.finished) == ["dep-1", "dep-2", "dep-3", "dep-5"]
    assert report.finished["dep-2"]["outputs"][0] == "install packages: done"
    # Each task ran on exactly one of the two engines, and both took some.
    handled = Counter(d for ds in report.tasks_by_engine.values() for d in ds)
    assert handled == Counter({f"dep-{n}": 1 for n in range(1, 6)})
    assert set(report.tasks_by_engine) == {"engine-1", "engine-2"}
    # The api instances shared the progress stream; the dashboard saw all of it.
    assert set(report.progress_by_api) == {"api-1", "api-2"}
    assert sum(report.progress_by_api.values()) == report.dashboard_events == 9


# -- the loopback driver ---------------------------------------------------------


def test_loopback_driver_passes_its_conformance_tests(
        pytester: pytest.Pytester, drivers_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Exactly what the guide tells a driver author to write, run as they would.
    monkeypatch.setenv("PYTHONPATH", drivers_path)
    test_module = pytester.path / "test_loopback_conformance.py"
    shutil.copy(EXAMPLES / "test_loopback_conformance.py", test_module)
    result = pytester.runpytest_subprocess(str(test_module), "-p", "no:cacheprovider",
                                           "-rs", timeout=300)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 60
    # What it does not declare is skipped, and each skip says why.
    result.stdout.fnmatch_lines(["*driver does not declare store_and_forward*",
                                 "*driver does not declare pools*"])


def test_check_names_the_capability_a_broken_driver_fails(drivers_path: str) -> None:
    result = polymsg_cli(drivers_path, "check", "loopback+oneserver://broken", "-k",
                         "spread_over_servers or call_round_trips_every or notification_fields")
    assert result.returncode == cli.EXIT_FAILURE, result.stdout + result.stderr
    out = result.stdout
    row = next(line for line in out.splitlines() if line.startswith("  rpc "))
    assert row.split()[:3] == ["rpc", "yes", "FAIL"]
    assert "2 of 3 behaviours failed" in row
    assert "  pass  call round trips every json type\n" in out
    assert "  FAIL  calls spread over servers\n" in out
    assert "all calls went to one server" in out
    notify = next(line for line in out.splitlines() if line.startswith("  notify "))
    assert notify.split()[:3] == ["notify", "yes", "pass"]
    assert out.splitlines()[-1].startswith("4 behaviours: 2 passed, 2 failed, 0 skipped")


def test_check_passes_the_loopback_driver(drivers_path: str) -> None:
    result = polymsg_cli(drivers_path, "check", "loopback://", "-k",
                         "undeclared or fanout_reaches or notification_fields")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines()
            if line.startswith("  ") and len(line.split()) > 2}
    assert rows["fanout"] == ["yes", "pass"]
    assert rows["queue_ttl"] == ["no", "pass"]  # undeclared, and refused with NotSupported
    assert rows["store_and_forward"] == ["no", "-"]
