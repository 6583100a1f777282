"""The part servers and listeners share: a driver subscription feeding a worker pool."""

from __future__ import annotations

import abc
import logging
import threading
from types import TracebackType
from typing import Any

from polymsg._exceptions import NotSupported, SerializationError
from polymsg._ratelimit import LogLimiter
from polymsg._transport import Transport
from polymsg._workers import WorkerPool
from polymsg.driver import IncomingMessage, Listener

__all__ = ["Runner"]

LOG = logging.getLogger(__name__)

#: Bad input from the wire is logged a few times per interval, then counted
#: (a flood of garbage must not become a flood of log lines).
UNDECODABLE = LogLimiter(LOG, "messages that could not be decoded")

EXECUTORS = ("threading",)


class Runner(abc.ABC):
    """Lifecycle of a server or listener: ``start`` subscribes, ``stop`` stops taking
    messages, ``wait`` returns once messages already taken are processed.

    Each message the driver delivers is handed to a bounded pool of worker
    threads (``max_workers``, default ``[DEFAULT] executor_thread_pool_size``).
    """

    def __init__(self, transport: Transport, executor: str, max_workers: int | None) -> None:
        if executor not in EXECUTORS:
            raise NotSupported(f"executor {executor!r} is not supported; use 'threading'")
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
        self.transport = transport
        self.executor = executor
        self._max_workers = max_workers or int(transport.conf.executor_thread_pool_size)
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._listener: Listener | None = None
        self._running = False

    @abc.abstractmethod
    def _check(self) -> None:
        """Raise NotSupported for a feature the transport lacks (called by start)."""

    @abc.abstractmethod
    def _listen(self) -> Listener:
        """Create the driver subscription, delivering to :meth:`_on_message`."""

    @abc.abstractmethod
    def _process(self, incoming: IncomingMessage) -> None:
        """Handle one message on a worker thread; must acknowledge or requeue it."""

    def start(self) -> None:
        """Subscribe and start handing messages to the workers. A no-op when running."""
        with self._lock:
            if self._running:
                return
            self._check()
            self._pool = WorkerPool(self._max_workers, self._safe_process, type(self).__name__)
            try:
                self._listener = self._listen()
            except BaseException:
                self._pool.shutdown()
                self._pool = None
                raise
            self._running = True
        self.transport._track(self)

    def _on_message(self, incoming: IncomingMessage) -> None:
        pool = self._pool
        if pool is None:  # cannot happen after Listener.stop(); never lose it regardless
            incoming.requeue()
            return
        pool.submit(incoming)

    def _safe_process(self, incoming: IncomingMessage) -> None:
        try:
            self._process(incoming)
        except SerializationError as exc:  # a driver decodes lazily: bad input on the wire
            UNDECODABLE.log("dropped a message that cannot be decoded: %s", exc)
        except Exception:
            LOG.exception("unexpected error processing a message; it was dropped")

    def stop(self) -> None:
        """Stop taking new messages; those already taken still run (see :meth:`wait`)."""
        with self._lock:
            listener, self._running = self._listener, False
        if listener is not None:
            listener.stop()

    def wait(self) -> None:
        """Return once every message taken before :meth:`stop` has been processed
        (calls replied). Stops first if still running."""
        if self._running:
            self.stop()
        with self._lock:
            pool, self._pool = self._pool, None
            listener, self._listener = self._listener, None
        if pool is not None:
            pool.shutdown()
        if listener is not None:
            listener.cleanup()

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.wait()
