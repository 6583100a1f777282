"""The in-process registry: listeners a receiver of the same process hands messages to.

A receiver running in the process of its consumers skips the IPC hop and
the consumer thread: it calls :meth:`Direct.deliver_direct` of the listener
registered under the consumer identity it would have sent to. There is one
:class:`InProcess` registry per IPC directory (per simulated host), shared
by the receiver and the listeners of that directory, found with
:func:`registry`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

__all__ = ["Direct", "InProcess", "registry"]


class Direct(Protocol):
    """What a receiver needs of an in-process listener."""

    def deliver_direct(self, frames: list[bytes]) -> bool:
        """Take ``[b"M", deadline, header, bodies]``; False when it no longer takes any."""

    def congested(self, resume: bool = False) -> bool:
        """True while its workers lag too far behind to take more."""


class InProcess:
    """Listeners of this process by consumer identity (weakly held)."""

    def __init__(self) -> None:
        self._listeners: weakref.WeakValueDictionary[bytes, Direct] = \
            weakref.WeakValueDictionary()

    def add(self, ident: bytes, listener: Direct) -> None:
        """Make ``listener`` reachable under ``ident``."""
        self._listeners[ident] = listener

    def remove(self, ident: bytes) -> None:
        """Forget ``ident`` (no error when unknown)."""
        self._listeners.pop(ident, None)

    def get(self, ident: bytes) -> Direct | None:
        """The listener registered under ``ident``, if it is in this process."""
        return self._listeners.get(ident)

    def __len__(self) -> int:
        return len(self._listeners)


_REGISTRIES: dict[str, InProcess] = {}
_LOCK = threading.Lock()


def registry(ipc_dir: str) -> InProcess:
    """The registry of the host whose IPC directory is ``ipc_dir``."""
    with _LOCK:
        found = _REGISTRIES.get(ipc_dir)
        if found is None:
            found = _REGISTRIES[ipc_dir] = InProcess()
        return found
