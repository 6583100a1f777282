"""The ``polymsg`` command line.

``polymsg demo`` shows every messaging shape on one transport; ``call``,
``cast``, ``notify``, ``listen`` and ``serve-echo`` talk to a live
deployment. Driver distributions add commands on the ``polymsg.cli``
entry-point group (a :class:`click.Command` per entry point, named after
it); they are looked up when the command line runs, never on
``import polymsg``.

Exit codes: ``0`` success, ``1`` the messaging operation failed (timeout,
remote error, delivery failure…), ``2`` bad usage (unknown option, invalid
URL or target, driver not installed), ``130`` interrupted.
"""

from __future__ import annotations

from polymsg._cli.main import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, cli, main

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "cli", "main"]
