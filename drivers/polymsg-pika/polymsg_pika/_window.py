"""The confirm window: how many casts and notifications may await their confirm.

With ``confirm_window = N > 0`` a transport lets ``cast()`` and ``notify()``
return as soon as the message is published on a live confirm channel, while
fewer than N of its casts and notifications are unconfirmed. A sender
*enters* the window in its own thread before handing the message to the I/O
thread (waiting there while N are in flight, never on the I/O thread), and
the publisher makes the message *leave* once it is settled for good:
confirmed, finally given up (logged with its id) or dropped by
``cleanup()``, which first waits up to ``confirm_flush_timeout`` seconds for
the window to empty (:meth:`ConfirmWindow.drain`).
"""

from __future__ import annotations

import threading

__all__ = ["ConfirmWindow"]


class ConfirmWindow:
    """A counting gate of ``size`` places, usable from any thread."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a confirm window needs at least one place, not {size}")
        self.size = size
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._empty = threading.Condition(self._lock)
        self._waiting = 0
        #: Messages inside the window now (published or about to be, not yet settled).
        self.in_flight = 0
        #: The most messages ever inside the window at once (diagnostics and tests).
        self.most_in_flight = 0

    def enter(self) -> None:
        """Take a place, waiting while the window is full (caller threads only)."""
        with self._lock:
            if self.in_flight >= self.size:
                self._waiting += 1
                try:
                    while self.in_flight >= self.size:
                        self._room.wait()
                finally:
                    self._waiting -= 1
            self.in_flight += 1
            if self.in_flight > self.most_in_flight:
                self.most_in_flight = self.in_flight

    def leave(self) -> None:
        """Give a place back (the message is settled); wakes one waiting sender."""
        with self._lock:
            self.in_flight -= 1
            if self._waiting:
                self._room.notify()
            if self.in_flight == 0:
                self._empty.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the window to be empty; True if it is."""
        with self._lock:
            return self._empty.wait_for(lambda: self.in_flight == 0, timeout)
