"""``python -m benchmarks``: polymsg next to oslo.messaging and the raw clients, in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from benchmarks._plot import write_docs
from benchmarks._report import render
from benchmarks._run import Options, expand_only, expand_queues, run, write_results

__all__ = ["bench"]

#: This directory: ``results/`` lives here, ``docs/`` next to it.
_HERE = Path(__file__).resolve().parent

#: Subjects ``--only`` knows, for the help text.
_ONLY_HELP = ("Comma-separated subjects: memory, pingpong, pingpong-1core, zmq, raw-zmq, "
              "kombu, pika, oslo, raw-pika; or groups: polymsg, raw, rabbit. Default: all.")


@click.command()
@click.option("--quick", is_flag=True,
              help="Tiny counts: checks the harness works (figures not comparable).")
@click.option("--only", metavar="LIST", help=_ONLY_HELP)
@click.option("--url-rabbit", metavar="URL", envvar="POLYMSG_TEST_RABBIT_URL",
              show_envvar=True, help="RabbitMQ for kombu, pika, oslo and raw-pika "
              "(rabbit://user:pass@host:port/vhost).")
@click.option("--queues", metavar="LIST",
              help="Comma-separated queue types for the RabbitMQ RPC subjects (kombu, pika, "
              "oslo): classic, quorum. quorum runs them with rabbit_quorum_queue and "
              "rabbit_transient_quorum_queue on, polymsg and oslo.messaging alike, "
              "ratios against oslo.messaging on quorum queues. Default: classic.")
@click.option("--rounds", metavar="N", type=click.IntRange(min=1), default=1, show_default=True,
              help="Measure every subject's rates N times, the subjects taking turns; "
              "keep each figure's best round (steadier on a busy machine).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=_HERE / "results", show_default=True,
              help="Directory for the JSON results (latest.json unless --quick).")
@click.option("--no-save", is_flag=True, help="Do not write JSON results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON, not tables.")
@click.option("--strict", is_flag=True, help="Exit 1 when a goal is missed.")
@click.option("--plot", "plot_only", is_flag=True,
              help="Measure nothing: draw the docs' PNG and tables from --results.")
@click.option("--results", "results_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Results file for --plot (default: OUT/latest.json).")
@click.option("--docs", "docs_dir", type=click.Path(file_okay=False, path_type=Path),
              default=_HERE.parent / "docs", show_default=True,
              help="Docs directory for --plot.")
def bench(quick: bool, only: str | None, url_rabbit: str | None, queues: str | None,
          rounds: int, out_dir: Path,
          no_save: bool, as_json: bool, strict: bool, plot_only: bool,
          results_file: Path | None, docs_dir: Path) -> None:
    """Measure polymsg on every installed driver next to oslo.messaging, raw pika,
    raw pyzmq and a thread ping-pong; print figures, ratios and goals.

    Servers run in child processes; progress goes to standard error. A full
    run takes a few minutes; run it on a quiet machine.
    """
    if plot_only:
        _plot(results_file or out_dir / "latest.json", docs_dir)
        return
    try:
        subjects = expand_only(only)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--only") from exc
    try:
        queue_types = expand_queues(queues)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--queues") from exc
    results = run(Options(quick=quick, only=subjects, url_rabbit=url_rabbit,
                          queues=queue_types, rounds=rounds))
    click.echo(json.dumps(results, indent=2) if as_json else render(results))
    if not no_save:
        for path in write_results(results, out_dir):
            click.echo(f"wrote {path}", err=True)
    if any(s["status"] in ("failed", "partial") for s in results["subjects"]):
        raise click.ClickException("some measurements failed (see 'Not measured' above)")
    if strict and any(g["status"] == "MISS" for g in results["goals"]):
        raise click.ClickException("some goals were missed")


def _plot(results_file: Path, docs_dir: Path) -> None:
    if not results_file.is_file():
        raise click.ClickException(f"no results at {results_file}: run 'python -m benchmarks' "
                                   "first or pass --results FILE")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    try:
        written = write_docs(results, docs_dir)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"wrote {os.fspath(path)}", err=True)
