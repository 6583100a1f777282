"""``benchmarks/bench_observe.py``: a short run on memory:// with every mode,
the baseline revision included, and its reST table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


#: The last revision before the observer hook.
BASELINE = "5652bda"


def _has(rev: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q",
                           f"{rev}^{{commit}}"], capture_output=True, check=False).returncode == 0


def test_a_short_run_measures_every_mode(tmp_path: Path) -> None:
    table = tmp_path / "bench.inc"
    baseline = ["--baseline-rev", BASELINE] if _has(BASELINE) else []  # a shallow clone: none
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_observe.py"), "--only", "memory",
         "--calls", "50", "--rounds", "1", *baseline, "--rst", str(table)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    modes = [line.split()[1] for line in done.stdout.splitlines()
             if line.startswith("memory ")]
    assert modes == ["baseline"] * bool(baseline) + ["off", "tracing", "metrics", "both"]
    text = table.read_text()
    assert text.startswith(".. list-table::") and text.count("   * - memory") == len(modes)
