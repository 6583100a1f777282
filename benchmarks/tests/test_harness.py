"""The benchmark harness (``python -m benchmarks``): a quick run on memory://, the raw
references against real sockets and RabbitMQ, goals and the docs' plot."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import polymsg
from benchmarks import _measure, _raw, _report, _run
from benchmarks._child import Child, ChildFailed, cpu_seconds
from benchmarks._cli import bench as bench_command
from benchmarks._servers import oslo_conf
from benchmarks._subjects import OsloRemote, PolymsgRemote


def bench(*args: str) -> Result:
    return CliRunner().invoke(bench_command, list(args), catch_exceptions=False)


def rabbit_url() -> str:
    url = os.environ.get("POLYMSG_TEST_RABBIT_URL")
    assert url, ("POLYMSG_TEST_RABBIT_URL is not set: run scripts/services.sh start and "
                 'eval "$(scripts/services.sh env)"')
    return url


@pytest.fixture(scope="module")
def quick_memory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("results")
    return bench("--quick", "--only", "memory,pingpong,pingpong-1core", "--out", str(out)), out


def test_quick_memory_run_prints_figures_and_goals(quick_memory: tuple[Result, Path]) -> None:
    result, _ = quick_memory
    assert result.exit_code == 0, result.output
    for text in ("polymsg memory://", "thread ping-pong, 1 core", "Server RSS (MiB)",
                 "polymsg memory:// / thread ping-pong", "sequential calls >= 20,000/s"):
        assert text in result.output
    assert "[1/3] polymsg memory://" in result.stderr  # progress, on stderr


def test_quick_memory_run_writes_json_but_not_latest(quick_memory: tuple[Result, Path]) -> None:
    _, out = quick_memory
    files = sorted(out.iterdir())
    assert [f.name.endswith("-quick.json") for f in files] == [True]
    results = json.loads(files[0].read_text())
    memory = _report.subject(results, "memory")
    assert memory is not None and memory["status"] == "ok"
    figures = memory["figures"]
    for name in ("calls", "calls_16t", "casts", "notifications", "calls_1MiB", "casts_10KiB"):
        assert figures[name] > 0, name
    assert figures["call_median_us"] <= figures["call_p99_us"]
    assert figures["rss_last_MiB"] > 0 and figures["rss_first_MiB"] > 0
    assert results["meta"]["quick"] is True and results["meta"]["rss_casts"] == [500, 5000]
    assert {g["subject"] for g in results["goals"]} == {"memory"}


def test_plot_draws_png_and_tables(quick_memory: tuple[Result, Path], tmp_path: Path) -> None:
    _, out = quick_memory
    results_file = next(out.iterdir())
    result = bench("--plot", "--results", str(results_file), "--docs", str(tmp_path))
    if importlib.util.find_spec("matplotlib") is None:
        assert result.exit_code == 1
        assert "pip install -r benchmarks/requirements.txt" in result.output
        return
    assert result.exit_code == 0, result.output
    png = tmp_path / "_static" / "benchmarks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "benchmarks_latest.inc").read_text()
    assert ".. list-table::" in table and "polymsg memory://" in table
    assert_list_tables_are_rectangular(table)


def assert_list_tables_are_rectangular(rst: str) -> None:
    """Every row of every list-table has as many cells as its header row."""
    for table in rst.split(".. list-table::")[1:]:
        rows: list[int] = []
        for line in table.splitlines():
            if line.startswith("   * -"):
                rows.append(1)
            elif line.startswith("     -") and rows:
                rows[-1] += 1
            elif line and not line.startswith("   "):
                break
        assert rows and set(rows) == {rows[0]}, rows


def test_plot_without_results_says_what_to_do(tmp_path: Path) -> None:
    result = bench("--plot", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "run 'python -m benchmarks' first" in result.output


def test_unknown_subject_is_a_usage_error() -> None:
    result = bench("--only", "memory,carrierpigeon")
    assert result.exit_code == 2
    assert "unknown benchmark subject 'carrierpigeon'" in result.output


def test_only_expands_groups_in_run_order() -> None:
    assert _run.expand_only("oslo,memory") == ("memory", "oslo")
    assert _run.expand_only("rabbit") == ("kombu", "pika", "oslo", "raw-pika")
    assert _run.expand_only(None) == tuple(_run.SUBJECTS)


def test_rabbit_subjects_without_url_are_skipped_with_the_reason() -> None:
    results = _run.run(_run.Options(quick=True, only=("oslo",), url_rabbit=None,
                                    progress=_run.Progress(lambda text: None)))
    oslo = results["subjects"][0]
    assert oslo["status"] == "skipped" and "--url-rabbit" in oslo["note"]


def _results(**figures: dict[str, float]) -> dict[str, Any]:
    return {"meta": {}, "subjects": [
        {"key": key, "label": key, "status": "ok", "note": "", "figures": values}
        for key, values in figures.items()]}


def test_goals_pass_miss_and_not_measured() -> None:
    results = _results(kombu={"calls": 1500, "calls_16t": 2000, "casts": 20_000},
                       oslo={"calls": 500, "calls_16t": 500, "casts": 1000},
                       zmq={"calls": 1000, "casts": 150_000, "rss_growth_pct": 12.0},
                       **{"raw-zmq": {"calls": 4000.0}})
    status = {(g["subject"], g["goal"]): g["status"] for g in _report.evaluate_goals(results)}
    assert status["kombu", "sequential calls >= 3x oslo.messaging"] == "PASS"
    assert status["kombu", "16-thread calls >= 5x oslo.messaging"] == "MISS"
    assert status["kombu", "casts end to end >= 10x oslo.messaging"] == "PASS"
    assert status["kombu", "sequential calls within 1.3x of raw pika RPC"] == "n/a"
    assert status["zmq", "call round trip <= 3x raw pyzmq DEALER/ROUTER"] == "MISS"  # 4x
    assert status["zmq", "casts end to end >= 100,000/s"] == "PASS"
    assert status["zmq", "server RSS flat: <= 10% growth"] == "MISS"
    assert not any(subject == "pika" for subject, _ in status)


def test_render_shows_ratios_against_references() -> None:
    results = _results(kombu={"calls": 1500, "casts": 20_000},
                       oslo={"calls": 500, "casts": 1000})
    results["meta"] = {"started": "now", "python": "3", "cpus": 2, "loadavg_start": [1.0],
                       "loadavg_end": [1.5], "rss_casts": [1, 10]}
    results["goals"] = _report.evaluate_goals(results)
    text = _report.render(results)
    ratio_line = next(line for line in text.splitlines() if line.startswith("kombu / oslo"))
    assert ratio_line.split()[3:6] == ["3.00x", "-", "20.00x"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _measure.percentile(values, 0.5) == 50.0
    assert _measure.percentile(values, 0.99) == 99.0
    assert math.isnan(_measure.percentile([], 0.5))


def test_cpu_seconds_reads_user_and_system_time_from_proc() -> None:
    user, system = os.times()[:2]
    assert cpu_seconds(os.getpid()) == pytest.approx(user + system, abs=0.05)


def test_a_failing_child_reports_its_error() -> None:
    with pytest.raises(ChildFailed, match="DriverLoadFailure"):
        Child("serve", library="polymsg", url="carrierpigeon://coop", topic="t")


def test_raw_references_quick(tmp_path: Path) -> None:
    """Raw pyzmq between two processes and raw pika on the real RabbitMQ."""
    result = bench("--quick", "--only", "raw-zmq,raw-pika", "--url-rabbit", rabbit_url(),
                   "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    results = json.loads(next(tmp_path.iterdir()).read_text())
    for key in ("raw-zmq", "raw-pika"):
        figures = _report.subject(results, key)["figures"]  # type: ignore[index]
        for name in ("calls", "casts", "calls_10KiB", "casts_1MiB"):
            assert figures[name] > 0, (key, name)


def test_remote_server_figures_and_rss_on_rabbitmq() -> None:
    """A polymsg server in a child process: calls, casts end to end, RSS from /proc."""
    with PolymsgRemote(rabbit_url().replace("rabbit://", "rabbit+kombu://", 1)) as subject:
        calls = _measure.sequential_calls(subject, 100, 0.2)
        casts = _measure.casts_end_to_end(subject, 100, 0.2)
        rss = _measure.server_rss(subject, 50, 2)
    assert calls["calls"] > 0 and calls["call_median_us"] > 0
    assert casts["casts"] > 0 and casts["cast_cpu_us"] > 0
    assert 5 < rss["rss_first_MiB"] < 2000 and rss["rss_last_MiB"] > 0


def test_oslo_messaging_subject_on_rabbitmq() -> None:
    """The reference: oslo.messaging's server in a child process, the same figures."""
    if importlib.util.find_spec("oslo_messaging") is None:
        pytest.skip("oslo.messaging is not installed (pip install -r benchmarks/requirements.txt)")
    with OsloRemote(rabbit_url()) as subject:
        calls = _measure.sequential_calls(subject, 100, 0.2)
        casts = _measure.casts_end_to_end(subject, 100, 0.2)
        notes = _measure.notifications_end_to_end(subject, 0.2)
    assert calls["calls"] > 0 and casts["casts"] > 0 and casts["cast_cpu_us"] > 0
    assert notes["notifications"] > 0


def _failing() -> dict[str, float]:
    raise RuntimeError("lost in the post")


@pytest.mark.parametrize("healthy", [True, False])
def test_a_failed_step_is_noted_and_the_subject_goes_on_while_healthy(healthy: bool) -> None:
    lines: list[str] = []
    options = _run.Options(quick=True, progress=_run.Progress(lines.append))
    runner = _run._Runner(options, Path("."))
    outcome = _run._Outcome("memory")
    steps = iter([("first", _failing), ("second", lambda: {"casts": 5.0})])
    runner.steps(outcome, steps, lambda: healthy)
    record = outcome.as_dict()
    assert record["note"] == "first: RuntimeError: lost in the post"
    assert record["status"] == ("partial" if healthy else "failed")
    assert record["figures"] == ({"casts": 5.0} if healthy else {})
    assert any("FAILED (RuntimeError)" in line for line in lines)


def test_an_unreachable_rabbitmq_fails_fast_with_the_address() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results = _run.run(_run.Options(quick=True, only=("pika", "raw-pika"),
                                    url_rabbit=f"rabbit://guest:guest@127.0.0.1:{port}/",
                                    progress=_run.Progress(lambda text: None)))
    for found in results["subjects"]:
        assert found["status"] == "failed"
        assert f"RabbitMQ at 127.0.0.1:{port} does not answer" in found["note"]


def test_rounds_keep_each_figures_best() -> None:
    outcome = _run._Outcome("kombu")
    outcome.figures.update(calls=900.0, call_median_us=700.0, cast_cpu_us=60.0, casts=5000.0)
    later = _run._Outcome("kombu")
    later.figures.update(calls=1000.0, call_median_us=800.0, cast_cpu_us=50.0, casts=4000.0,
                         calls_16t=2000.0)
    later.fail("casts end to end, 1 MiB", RuntimeError("lost"))
    outcome.merge(later)
    assert outcome.figures == {"calls": 1000.0, "call_median_us": 700.0, "cast_cpu_us": 50.0,
                               "casts": 5000.0, "calls_16t": 2000.0}
    assert outcome.failures == ["casts end to end, 1 MiB: RuntimeError: lost"]


def test_rounds_take_turns_and_measure_rss_once() -> None:
    lines: list[str] = []
    results = _run.run(_run.Options(quick=True, only=("memory", "pingpong"), rounds=2,
                                    progress=_run.Progress(lines.append)))
    subjects = [line.split("] ", 1)[1].split(" (load")[0] for line in lines
                if line.startswith("[")]
    assert subjects == ["polymsg memory://, round 1 of 2", "thread ping-pong, round 1 of 2",
                        "polymsg memory://, round 2 of 2", "thread ping-pong, round 2 of 2",
                        "server RSS: polymsg memory://"]
    assert results["meta"]["rounds"] == 2
    memory = _report.subject(results, "memory")
    assert memory is not None and memory["status"] == "ok"
    assert memory["figures"]["calls"] > 0 and memory["figures"]["rss_last_MiB"] > 0
    assert "best of 2 rounds" in _report.render(results).splitlines()[0]


def test_queues_option_adds_quorum_rows_after_the_classic_ones() -> None:
    assert _run.expand_queues(None) == ("classic",)
    assert _run.expand_queues("quorum, classic") == ("classic", "quorum")
    only = _run.expand_only("rabbit")
    assert _run.run_order(only, ("classic",)) == only
    assert _run.run_order(only, ("classic", "quorum")) == (
        *only, "kombu-quorum", "pika-quorum", "oslo-quorum")
    assert _run.run_order(("memory", "pika", "raw-pika"), ("quorum",)) == (
        "memory", "raw-pika", "pika-quorum")
    assert _run.label("oslo-quorum") == "oslo.messaging rabbit, quorum queues"
    result = bench("--only", "memory", "--queues", "classic,lazy")
    assert result.exit_code == 2
    assert "unknown queue type 'lazy'" in result.output


def test_quorum_options_reach_polymsg_url_and_oslo_config(tmp_path: Path) -> None:
    runner = _run._Runner(_run.Options(url_rabbit="rabbit://u:p@h:5672/"), tmp_path)
    assert runner.rabbit_url("rabbit+pika") == "rabbit+pika://u:p@h:5672/"
    quorum = runner.rabbit_url("rabbit+pika", quorum=True)
    assert quorum == ("rabbit+pika://u:p@h:5672/"
                      "?rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true")
    query = polymsg.TransportURL.parse(quorum).query
    assert {name: query[name] for name in _run.QUORUM_OPTIONS} == {
        name: "true" for name in _run.QUORUM_OPTIONS}
    if importlib.util.find_spec("oslo_messaging") is None:
        pytest.skip("oslo.messaging is not installed")
    conf = oslo_conf(_run.OSLO_QUORUM, _run.OSLO_QUORUM_EXCHANGE)
    assert conf.oslo_messaging_rabbit.rabbit_quorum_queue is True
    assert conf.oslo_messaging_rabbit.rabbit_transient_quorum_queue is True
    assert conf.oslo_messaging_rabbit.amqp_durable_queues is True
    assert conf.control_exchange == "openstack-quorum"
    assert "oslo_messaging_rabbit" not in oslo_conf()  # the driver's defaults


def test_quorum_rows_run_in_the_same_run_and_compare_with_oslo_on_quorum() -> None:
    lines: list[str] = []
    results = _run.run(_run.Options(quick=True, only=("kombu", "oslo", "raw-pika"),
                                    queues=("classic", "quorum"), url_rabbit=None,
                                    progress=_run.Progress(lines.append)))
    assert [s["key"] for s in results["subjects"]] == [
        "kombu", "oslo", "raw-pika", "kombu-quorum", "oslo-quorum"]
    assert results["meta"]["queues"] == ["classic", "quorum"]
    assert any("[5/5] oslo.messaging rabbit, quorum queues" in line for line in lines)
    assert all(s["status"] == "skipped" for s in results["subjects"])
    figures = {"calls": 900.0, "casts": 4000.0}
    rows = dict(_report.ratio_rows(_results(
        **{"kombu-quorum": figures, "oslo-quorum": {"calls": 300.0, "casts": 400.0}})))
    assert rows["kombu-quorum / oslo-quorum"][:3] == [3.0, None, 10.0]


def test_delete_queues_removes_a_quorum_queue_and_ignores_a_missing_one() -> None:
    pika = importlib.import_module("pika")  # untyped: imported by name, as _raw does
    name = f"bench-test-{os.urandom(4).hex()}"
    conn = _raw._pika_connect(_raw.amqp_params(rabbit_url()))
    try:
        conn.channel().queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        _raw.delete_queues(rabbit_url(), [name, f"{name}-never-declared"])
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            conn.channel().queue_declare(name, passive=True)
    finally:
        conn.close()
