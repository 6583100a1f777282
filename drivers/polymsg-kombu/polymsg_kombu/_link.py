"""A Link: one AMQP connection, (re)established and read by its own I/O thread.

The I/O thread connects (trying the URL's hosts in turn, with backoff between
failed rounds), then sleeps in ``poll()`` on the socket and a wake-up pipe.
When frames arrive it reads them; between reads it sends heartbeats. When
the connection breaks it drops the :class:`Session`, tells the owner
(``on_lost``) and connects again; the owner's ``on_open`` re-creates its
channels, consumers and confirm handlers on the new session.

Every use of a session -- the I/O thread's reads and heartbeats, and any
other thread's publish, acknowledgement or declaration -- happens under
``Link.lock``, so kombu and py-amqp never see two threads at once.

The lock is held briefly and never waited for on the hot paths:

* publishes and acknowledgements are :class:`Op` objects handed to
  :meth:`Link.submit`. The thread that finds the lock free runs every queued
  op, writing all their frames with one system call; a thread that finds it
  taken leaves its op to the holder, who runs queued ops before letting go.
* frame callbacks (deliveries, replies) only queue work with :meth:`Link.post`;
  the I/O thread runs it after releasing the lock, so decoding and handing
  messages to the facade never delays other threads' writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import kombu.connection

from polymsg import amqp
from polymsg.driver import MessageDeliveryFailure
from polymsg_kombu._errors import BACKEND_ERRORS, SessionLost, describe, failure_of
from polymsg_kombu._options import connection_kwargs
from polymsg_kombu._session import SOCKET_TIMEOUT, Session

__all__ = ["Link", "Op", "Session"]

LOG = logging.getLogger(__name__)

#: Frames read in a row before queued ops get their turn.
_READ_BURST = 32

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*BACKEND_ERRORS, MessageDeliveryFailure)

#: kombu's connection class (untyped: kept as Any for the type checker).
_KombuConnection: Any = kombu.connection.Connection


def _always() -> bool:
    return True


def _never() -> bool:
    return False


class Op:
    """Something to write on a session (a publish, an ack), run under the lock by
    whichever thread holds it. ``run`` may only write, never wait for a
    reply; ``finish`` is told whether the frames reached the socket."""

    __slots__ = ()

    def run(self, session: Session) -> None:
        """Write the frames (inside :meth:`Session.batched_writes`)."""
        raise NotImplementedError

    def finish(self, error: BaseException | None) -> None:
        """Called once the frames were sent (``None``) or could not be."""


class _Locked:
    """``with link.locked:`` -- the link's lock, for synchronous work (declaring,
    consuming). On release it runs ops queued meanwhile and wakes the I/O
    thread if the holder read frames it did not handle (py-amqp buffers whole
    chunks, and poll() cannot see bytes already taken off the socket)."""

    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    def __enter__(self) -> None:
        self._link.lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        link = self._link
        session = link._session
        link.lock.release()
        link._combine()
        if link._inbox or (session is not None and session.buffered()):
            link._wake()


class Link:
    """One connection to RabbitMQ for one role (``name``: "publisher" or
    "consumer"), kept alive by an I/O thread started on first use."""

    def __init__(self, name: str, settings: amqp.RabbitSettings, *,
                 on_open: Callable[[Session], None],
                 on_lost: Callable[[Session], None],
                 watch_socket: Callable[[], bool] | None = None,
                 needed: Callable[[], bool] | None = None) -> None:
        self.name = name
        self._needed = needed or _never
        self._watch_socket = watch_socket or _always
        self.watching = True
        self.settings = settings
        self.lock = threading.RLock()
        self.locked = _Locked(self)
        self.connects = 0
        self._on_open = on_open
        self._on_lost = on_lost
        self._ops: deque[Op] = deque()
        self._inbox: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._session: Session | None = None
        self._reconnect = amqp.Reconnect(settings.spec, role=name)
        self._failed_rounds = 0  # ever: waiting senders count rounds from when they came
        self._refusals = 0  # permanent failures ever
        self._last_failure: amqp.Failure | None = None
        self._next_round = 0.0  # when the I/O thread tries again after a failed round
        self._waiters = 0
        self._kick = threading.Event()  # a sender wants a connection now
        self._closing = False
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- used by other threads ----------------------------------------------

    def session(self, retry: int | None, deadline: float | None = None) -> Session:
        """The live session, waiting for the I/O thread to connect.

        ``retry``: ``None`` waits as long as it takes, ``N`` gives up after
        N+1 failed connection rounds; ``deadline`` (``time.monotonic()``)
        bounds the wait, which ends early, with the failure, once a round
        failed and the next one is due only after the deadline. A permanent
        failure (a refused login…) raises at once. Gives up with
        :class:`MessageDeliveryFailure`.
        """
        session = self._session
        if session is not None and session.broken is None and not self._closing:
            return session  # the common case, without taking a lock
        self._start()
        with self._cond:
            start, refusals = self._failed_rounds, self._refusals
            self._waiters += 1
            self._kick.set()
            try:
                while True:
                    if self._closing:
                        raise MessageDeliveryFailure(f"the transport is closed ({self.name})")
                    session = self._session
                    if session is not None and session.broken is None:
                        return session
                    failure = self._last_failure
                    if self._refusals > refusals:
                        raise amqp.connection_error(failure)
                    now = time.monotonic()
                    over = retry is not None and self._failed_rounds - start > retry
                    # a round failed and the next one starts too late to help
                    late = deadline is not None and (now >= deadline or (
                        self._failed_rounds > start and self._next_round >= deadline))
                    if over or late:
                        raise amqp.connection_error(
                            failure, gave_up=amqp.give_up_reason(retry, deadline),
                            hosts=self.settings.spec.hosts_label)
                    self._cond.wait(None if deadline is None else deadline - now)
            finally:
                self._waiters -= 1

    @property
    def thread(self) -> threading.Thread | None:
        """The I/O thread (``None`` before first use)."""
        return self._thread

    def current(self) -> Session | None:
        """The live session if there is one, without waiting or connecting."""
        session = self._session
        return session if session is not None and session.broken is None else None

    def read(self, session: Session) -> None:
        """Read and handle the frames waiting on ``session`` (any thread)."""
        with self.locked:
            if session.broken is None:
                try:
                    self._read(session)
                except BACKEND_ERRORS as exc:
                    self.break_session(session, exc)

    def wake(self) -> None:
        """Interrupt the I/O thread's wait (it re-reads ``watch_socket``)."""
        self._wake()

    def submit(self, op: Op) -> None:
        """Have ``op`` run under the lock: now by this thread if the lock is
        free, else by the thread holding it, before it lets go."""
        self._ops.append(op)
        self._combine()

    def post(self, work: Callable[[], None]) -> None:
        """From a frame callback: run ``work`` on the I/O thread, outside the lock."""
        self._inbox.append(work)

    def break_session(self, session: Session, exc: BaseException) -> None:
        """Mark ``session`` unusable (a send failed on it); the I/O thread reconnects."""
        with self._cond:
            if session.broken is None:
                session.broken = exc
                LOG.warning("RabbitMQ %s connection to %s lost: %s", self.name,
                            session.host.label, describe(exc))
            self._cond.notify_all()
        self._wake()

    def close(self) -> None:
        """Close the connection and join the I/O thread. Idempotent."""
        with self._cond:
            first, self._closing = not self._closing, True
            thread = self._thread
            self._cond.notify_all()
        if not first:
            return
        self._kick.set()
        self._wake()
        if thread is threading.current_thread():
            return  # closed from a callback: the thread ends on its own, keeping its pipe
        if thread is not None:
            thread.join()
        self._fail_ops(MessageDeliveryFailure("the transport is closed"))
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- running queued ops -------------------------------------------------------

    def _combine(self) -> None:
        # Appending before trying the lock, and re-checking after every
        # release, means no queued op is ever left without a thread to run it.
        while self._ops:
            if not self.lock.acquire(blocking=False):
                return
            try:
                self._run_ops()
            finally:
                self.lock.release()

    def _run_ops(self) -> None:
        """Run every queued op on the live session, one write for all (under the lock)."""
        if not self._ops:
            return
        session = self._session
        if self._closing:
            self._fail_ops(MessageDeliveryFailure("the transport is closed"))
            return
        if session is None or session.broken is not None:
            if session is not None:
                self._fail_ops(SessionLost(f"RabbitMQ {self.name} connection lost"))
            return  # not connected yet: the ops run once the I/O thread has connected
        done: list[Op] = []
        try:
            with session.batched_writes():
                while self._ops:
                    op = self._ops.popleft()
                    try:
                        op.run(session)
                    except BACKEND_ERRORS:
                        done.append(op)
                        raise
                    except Exception as exc:  # an op's own fault: only it fails
                        op.finish(exc)
                        continue
                    done.append(op)
        except BACKEND_ERRORS as exc:
            self.break_session(session, exc)
            for op in done:
                op.finish(exc)
            return
        for op in done:
            op.finish(None)

    def _fail_ops(self, error: BaseException) -> None:
        while self._ops:
            self._ops.popleft().finish(error)

    # -- the I/O thread -----------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._closing:
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"polymsg-kombu-{self.name}")
            self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        delay = 0.0
        while not self._closing:
            if delay and self._pause(delay):
                break
            try:
                session, delay = self._connect()
            except Exception:  # a bug in an on_open hook: keep the link alive regardless
                LOG.exception("unexpected error setting up the RabbitMQ %s connection", self.name)
                session, delay = None, self.settings.spec.interval_max
            if session is None:
                continue
            try:
                self._serve(session)
            finally:
                self._drop(session)
            failure = failure_of(session.broken, session.host.label)
            with self._cond:
                delay = self._reconnect.lost(failure)
                if delay:  # it died right after opening: as bad as a failed round
                    self._failed(failure, new_round=True)

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds, or longer while nobody needs a connection; True
        when closing. A sender arriving after a refusal tries again at once."""
        deadline = time.monotonic() + delay
        with self._cond:
            self._next_round = deadline
            self._cond.notify_all()
        while not self._closing:
            with self._cond:
                wanted = self._waiters > 0 or self._needed()
                refused = self._last_failure is not None and self._last_failure.permanent
                kicked = self._kick.is_set()
                self._kick.clear()
                if wanted and ((refused and kicked) or time.monotonic() >= deadline):
                    return False
            wait = max(0.0, deadline - time.monotonic()) if wanted else None
            self._kick.wait(wait)
        return True

    def _failed(self, failure: amqp.Failure, *, new_round: bool) -> None:
        """Record a failure (under ``_cond``) and wake the senders waiting."""
        self._last_failure = failure
        if new_round:
            self._failed_rounds += 1
        if failure.permanent:
            self._refusals += 1
        self._cond.notify_all()

    def _connect(self) -> tuple[Session | None, float]:
        """One attempt at the next host: the session, or the wait before the next."""
        endpoint = self._reconnect.next_endpoint()
        try:
            session = self._open(endpoint)
        except _CONNECT_ERRORS as exc:
            failure = failure_of(exc, endpoint.label)
            LOG.warning("cannot connect to RabbitMQ at %s (%s): %s%s", endpoint.label,
                        self.name, failure.reason,
                        " (not retried until needed)" if failure.permanent else "")
            with self._cond:
                rounds = self._reconnect.failed_rounds
                delay = self._reconnect.failed(failure)
                self._failed(failure, new_round=self._reconnect.failed_rounds > rounds)
            if delay:
                with self.lock:  # their senders decide, by their budget, whether to wait on
                    self._fail_ops(SessionLost(f"cannot connect to RabbitMQ ({self.name})"))
            return None, delay
        self._reconnect.opened()
        return session, 0.0

    def _open(self, host: amqp.Endpoint) -> Session:
        conn = _KombuConnection(**connection_kwargs(self.settings.spec, host))
        try:
            conn.ensure_connection(max_retries=0)
            with self.lock:
                self._generation += 1
                session = Session(conn, self._generation, host)
                self._on_open(session)
                with self._cond:
                    if self._closing:
                        raise MessageDeliveryFailure("the transport is closed")
                    self._session = session
                    self.connects += 1
                    self._cond.notify_all()
        except BaseException:
            with contextlib.suppress(*BACKEND_ERRORS):
                conn.collect()
            raise
        if self.connects > 1:
            LOG.info("RabbitMQ %s connection re-established to %s", self.name, host.label)
        return session

    def _drop(self, session: Session) -> None:
        with self.lock:
            with self._cond:
                if self._session is session:
                    self._session = None
                self._cond.notify_all()
            try:
                self._fail_ops(SessionLost(f"RabbitMQ {self.name} connection lost"))
                self._on_lost(session)
            finally:
                session.close()
        self._dispatch()

    def _serve(self, session: Session) -> None:
        # Two sets to wait on: the socket and the wake-up pipe, or the pipe
        # alone while watch_socket() says another thread reads the socket.
        watching, blind = select.poll(), select.poll()
        watching.register(session.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        for poller in (watching, blind):
            poller.register(self._wake_r, select.POLLIN)
        tick = session.heartbeat / 4 or (5.0 if self._watch_socket is not _always else 0)
        next_tick = time.monotonic() + tick
        while not self._closing and session.broken is None:
            self.watching = watch = self._watch_socket()
            readable = watch and session.buffered()
            if not readable and not self._inbox and not self._ops:
                wait_ms = max(0, int((next_tick - time.monotonic()) * 1000)) if tick else -1
                events = (watching if watch else blind).poll(wait_ms)
                readable = any(fd != self._wake_r for fd, _ in events)
                if any(fd == self._wake_r for fd, _ in events):
                    self._drain_wake()
            with self.lock:
                if session.broken is not None or self._closing:
                    return
                try:
                    if readable:
                        self._read(session)
                    if tick and time.monotonic() >= next_tick:
                        self._read(session)  # what nobody else read meanwhile
                        if session.heartbeat:
                            session.conn.heartbeat_check(rate=2)
                        next_tick = time.monotonic() + tick
                except BACKEND_ERRORS as exc:
                    self.break_session(session, exc)
                    return
                self._run_ops()
            self._dispatch()

    def _read(self, session: Session) -> None:
        # Check again under the lock: another thread (a synchronous declare)
        # may have read what poll() saw, and a read would then block.
        for _ in range(_READ_BURST):
            if session.broken is not None or not session.readable():
                return
            try:
                # One frame at a time: drain_events() would block until a whole
                # message arrived, past heartbeat frames and heartbeat ticks.
                session.raw.blocking_read(timeout=SOCKET_TIMEOUT)
            except TimeoutError:
                return

    def _dispatch(self) -> None:
        inbox = self._inbox
        while inbox:
            work = inbox.popleft()
            try:
                work()
            except Exception:  # a handler bug must not stop the I/O thread
                LOG.exception("unexpected error handling a RabbitMQ delivery")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass
