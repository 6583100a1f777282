"""How the ``polymsg`` command reports failures: one line and an exit code."""

from __future__ import annotations

from typing import IO, Any

import click

from polymsg._exceptions import (
    DriverLoadFailure,
    InvalidTarget,
    InvalidTransportURL,
    MessagingError,
    NotSupported,
    RemoteError,
)

__all__ = [
    "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CLIError", "describe_error",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_USAGE_ERRORS = (InvalidTransportURL, InvalidTarget, DriverLoadFailure, NotSupported)


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    if isinstance(exc, RemoteError):
        return f"remote error: {exc.exc_type}: {exc.value}"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    name = type(exc).__name__
    if getattr(exc, "remote_traceback", None) is not None:
        return f"remote error: {name}: {first_line}"
    if isinstance(exc, MessagingError):
        return f"{name}: {first_line}" if first_line else name
    return f"unexpected {name}: {first_line} (run with --debug for the traceback)"


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, _USAGE_ERRORS):
        return EXIT_USAGE
    return EXIT_FAILURE


class CLIError(click.ClickException):
    """A failure worth one line: ``polymsg: error: ...``, exit status 1."""

    exit_code = EXIT_FAILURE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"polymsg: error: {self.format_message()}", file=file, err=file is None)


