"""What a sender can say when a receiver's connection drops: the messages it may have lost.

A receiver that dies (or stops) loses what it had taken but not handed on,
and zmq drops what was queued on the dead connection; the sender's
``send`` had returned for all of it. So each connection to a receiver keeps
the last moments of what went out (:class:`Recent`: the batches of the last
second, at most 1 MiB), and a :class:`Watcher` thread reads the sockets'
monitor events: when a connection drops, the ids of those messages are
logged as possibly lost. Messages a receiver *held* (no consumer yet) for
longer than that window are not covered; see the README.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import zmq

from polymsg_zmq._wire import MAGIC

__all__ = ["Recent", "Watcher"]

LOG = logging.getLogger(__name__)

#: Seconds, and bytes, of what went to a receiver that are remembered.
WINDOW = 1.0
WINDOW_BYTES = 1 << 20
_POLL = 0.2
_EVENT = struct.Struct("=H")


class Recent:
    """The packed batches sent on one connection lately. Not thread-safe: the peer's
    lock guards it."""

    __slots__ = ("_bytes", "_items")

    def __init__(self) -> None:
        self._items: deque[tuple[float, bytes]] = deque()
        self._bytes = 0

    def add(self, frames: Sequence[bytes]) -> None:
        """Remember a message just sent (routing header and packed bodies)."""
        if len(frames) != 2 or not frames[0].startswith(MAGIC):
            return
        now = time.monotonic()
        items = self._items
        items.append((now, frames[1]))
        self._bytes += len(frames[1])
        while items and (self._bytes > WINDOW_BYTES or now - items[0][0] > WINDOW):
            self._bytes -= len(items.popleft()[1])

    def take(self) -> list[bytes]:
        """The batches of the window (forgotten here)."""
        now = time.monotonic()
        batches = [body for sent, body in self._items if now - sent <= WINDOW]
        self._items.clear()
        self._bytes = 0
        return batches


class Watcher:
    """A thread reading the monitor events of watched sockets; ``lost`` is called (on
    that thread) when a connection of one drops. Started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[zmq.Socket[bytes], Callable[[], None],
                                  Callable[[], bool]]] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, sock: zmq.Socket[bytes], lost: Callable[[], None],
              closed: Callable[[], bool]) -> None:
        """Watch ``sock`` (before it connects) until ``closed()`` is true."""
        monitor: zmq.Socket[bytes] = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        with self._lock:
            if self._stopping:
                monitor.close(linger=0)
                return
            self._pending.append((monitor, lost, closed))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="polymsg-zmq-watcher")
                self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        watched: dict[zmq.Socket[bytes], tuple[Callable[[], None], Callable[[], bool]]] = {}
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                    pending, self._pending = self._pending, []
                for monitor, lost, closed in pending:
                    watched[monitor] = (lost, closed)
                    poller.register(monitor, zmq.POLLIN)
                for monitor, (_, closed) in list(watched.items()):
                    if closed():
                        poller.unregister(monitor)
                        monitor.close(linger=0)
                        del watched[monitor]
                for monitor, _ in poller.poll(int(_POLL * 1000)):
                    self._read(monitor, watched[monitor][0])
        finally:
            for monitor in watched:
                monitor.close(linger=0)

    @staticmethod
    def _read(monitor: zmq.Socket[bytes], lost: Callable[[], None]) -> None:
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # [event id (uint16) + value (uint32), endpoint], native byte order
            if len(frames[0]) >= 2 and _EVENT.unpack_from(frames[0])[0] \
                    == zmq.EVENT_DISCONNECTED:
                try:
                    lost()
                except Exception:
                    LOG.exception("zmq: error reporting a lost connection")

    def stop(self) -> None:
        """End the thread (it closes the monitor sockets)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
            pending, self._pending = self._pending, []
        for monitor, _, _ in pending:
            monitor.close(linger=0)
        if thread is not None:
            thread.join()
