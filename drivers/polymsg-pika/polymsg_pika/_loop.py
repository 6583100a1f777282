"""The I/O thread: the one thread that touches pika objects of a transport.

Other threads never call pika; they hand work to the loop with
:meth:`IOThread.submit`. Submissions are batched (core's
:class:`~polymsg._amqp_loop.LoopThread`): one wake-up of pika's ``IOLoop``
(``add_callback_threadsafe``) drains every callable queued since, so a burst
of publishes or acknowledgements from many threads costs one wake-up rather
than one each. After each batch the ``after_batch`` hooks run (the links
flush what the batch wrote, see :meth:`Link.flush`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pika.adapters.select_connection import IOLoop

from polymsg._amqp_loop import LoopThread

__all__ = ["IOThread"]

LOG = logging.getLogger(__name__)


class IOThread(LoopThread):
    """A pika ``IOLoop`` running on a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ioloop = IOLoop()

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        """Schedule ``fn`` after ``delay`` seconds (I/O thread only); returns a handle."""
        return self.ioloop.call_later(delay, fn)

    def cancel(self, handle: Any) -> None:
        """Cancel a :meth:`call_later` handle (I/O thread only)."""
        self.ioloop.remove_timeout(handle)

    def _signal(self) -> None:
        self.ioloop.add_callback_threadsafe(self._run_batch)

    def _stop(self) -> None:
        self.ioloop.stop()

    def _main(self) -> None:
        try:
            self.ioloop.start()
        except Exception:
            LOG.exception("%s: the I/O loop failed", self.name)
        finally:
            self._release()

    def _release(self) -> None:
        try:
            self.ioloop.close()
        except Exception:
            LOG.debug("%s: error closing the I/O loop", self.name, exc_info=True)
