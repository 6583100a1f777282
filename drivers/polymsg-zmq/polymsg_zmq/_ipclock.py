"""The lock that makes one receiver the only one serving an IPC directory."""

from __future__ import annotations

import fcntl
import os
import weakref
from typing import IO, Any

from polymsg import MessageDeliveryFailure, MessagingError
from polymsg_zmq._wire import prepare_dir

__all__ = ["RUNNING", "ReceiverRunning", "take_ipc_lock"]

#: The receiver of each IPC directory that runs in this process (transports of the
#: same host report its health, whoever started it).
RUNNING: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


class ReceiverRunning(MessagingError):
    """Another receiver already serves this IPC directory."""


def take_ipc_lock(ipc_dir: str) -> IO[str]:
    """Prepare ``ipc_dir`` and lock it for this process; close the file to release.

    Raises :class:`ReceiverRunning` when another receiver holds the lock and
    :class:`polymsg.MessageDeliveryFailure` when the directory cannot be made.
    """
    try:
        prepare_dir(ipc_dir)
        prepare_dir(os.path.join(ipc_dir, "t"))
    except OSError as exc:
        raise MessageDeliveryFailure(f"zmq: cannot prepare IPC directory {ipc_dir!r}: "
                                     f"{exc}") from exc
    handle = open(os.path.join(ipc_dir, "receiver.lock"), "a")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ReceiverRunning(f"zmq: a receiver already serves {ipc_dir}") from None
    return handle
