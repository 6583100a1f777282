"""Exception classes the conformance suite raises on the server side.

A client transport lists this module in ``allowed_remote_exmods`` to have
:class:`ConformanceError` re-created as itself rather than as
:class:`polymsg.RemoteError`.
"""

from __future__ import annotations

__all__ = ["ConformanceError", "UnlistedError"]

#: The module name to pass to ``allowed_remote_exmods``.
MODULE = __name__


class ConformanceError(Exception):
    """An application error whose module a client may allow."""


class UnlistedError(Exception):
    """An application error from a module no client allows.

    Its ``__module__`` names a module that does not exist, so a client can
    neither allow it by accident (as part of ``polymsg``) nor import it.
    """


UnlistedError.__module__ = "polymsg_conformance_unlisted"
