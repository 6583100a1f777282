"""The ``polymsg`` click group: error reporting, exit codes and plugin commands."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from polymsg._cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    describe_error,
    exit_code_for,
)

__all__ = [
    "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CLIError", "cli",
    "describe_error", "exit_code_for", "main",
]

#: Entry-point group where distributions add ``polymsg`` subcommands.
PLUGIN_GROUP = "polymsg.cli"



class _NeverRaised(Exception):
    """Stands in for click's NoArgsIsHelpError on click < 8.2 (which exits 0 instead)."""


#: What click >= 8.2 raises for ``polymsg`` run without a command.
_NO_ARGS_IS_HELP: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError", _NeverRaised)


def _broken(name: str, problem: str) -> click.Command:
    """A stand-in for a plugin command that cannot load: listed, and failing
    with ``problem`` when run, so one broken plugin never breaks the others."""

    def fail(args: tuple[str, ...]) -> None:
        raise CLIError(problem)

    return click.Command(name, callback=fail, help=f"(unavailable) {problem}",
                         context_settings={"ignore_unknown_options": True},
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)])


class PolymsgGroup(click.Group):
    """A group that adds plugin commands and turns errors into one line."""

    def _plugins(self) -> dict[str, EntryPoint]:
        found = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
        return {name: ep for name, ep in found.items() if name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.commands, *self._plugins()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        ep = self._plugins().get(cmd_name)
        if ep is None:
            return None
        what = f"the {cmd_name!r} command ({ep.value})"
        try:
            command = ep.load()
        except Exception as exc:
            return _broken(cmd_name, f"{what} failed to load: {exc}")
        if not isinstance(command, click.Command):
            return _broken(cmd_name, f"{what} is not a click command")
        return command

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """Like click's, but usage errors are one line too (and name the help)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            if isinstance(exc, _NO_ARGS_IS_HELP):  # bare ``polymsg``: the help, as click shows it
                exc.show()
                sys.exit(exc.exit_code)
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"polymsg: error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(status if isinstance(status, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            if ctx.params.get("debug"):
                raise
            if isinstance(exc, KeyboardInterrupt):
                click.echo("interrupted", err=True)
            else:
                click.echo(f"polymsg: error: {describe_error(exc)}", err=True)
            ctx.exit(exit_code_for(exc))


@click.group("polymsg", cls=PolymsgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Log at DEBUG level and show tracebacks on errors.")
@click.version_option(package_name="polymsg", prog_name="polymsg")
def cli(debug: bool) -> None:
    """polymsg: one RPC and notification API over RabbitMQ, ZeroMQ or memory.

    Exit codes: 0 success, 1 the messaging operation failed (timeout, remote
    error, delivery failure), 2 bad usage (unknown option, invalid URL or
    target, driver not installed), 130 interrupted.
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        # stevedore warns about a missing driver; the one-line error says it better.
        logging.getLogger("stevedore").setLevel(logging.ERROR)
        # pika logs each failed connection attempt as several ERROR lines; the
        # driver's one warning per attempt and the final error say it once.
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def _register_builtins() -> None:
    from polymsg._cli.check import check
    from polymsg._cli.demo import demo
    from polymsg._cli.ops import call, cast, listen, notify, serve_echo

    for command in (demo, call, cast, notify, listen, serve_echo, check):
        cli.add_command(command)


_register_builtins()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with its status."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="polymsg")
