"""A Link: one AMQP connection, (re)established and read by its own I/O thread.

The I/O thread connects (trying the URL's hosts in turn, with backoff between
failed rounds), then sleeps in ``poll()`` on the socket and a wake-up pipe.
When frames arrive it reads them; between reads it sends heartbeats. When
the connection breaks it drops the :class:`Session`, tells the owner
(``on_lost``) and connects again; the owner's ``on_open`` re-creates its
channels, consumers and confirm handlers on the new session.

Every use of a session -- the I/O thread's reads and heartbeats, and any
other thread's publish, acknowledgement or declaration -- happens under
``Link.lock`` (taken as ``with link.locked:``), so kombu and py-amqp never
see two threads at once. Frame callbacks (deliveries, confirms, returns)
run on the thread that read the frame, under that lock, and must be short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import kombu.connection

from polymsg.driver import MessageDeliveryFailure, TransportHost
from polymsg_kombu._errors import BACKEND_ERRORS, describe
from polymsg_kombu._options import Settings

__all__ = ["Link", "Session"]

LOG = logging.getLogger(__name__)

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*BACKEND_ERRORS, MessageDeliveryFailure)

#: kombu's connection class (untyped: kept as Any for the type checker).
_KombuConnection: Any = kombu.connection.Connection

#: The socket's timeout, for reads (only started once poll() says a frame is
#: arriving, so they wait only for the rest of a frame) and writes (a broker
#: blocking publishers for longer breaks the connection). Kept constant so
#: py-amqp does not switch the socket's mode around every read.
_SOCKET_TIMEOUT = 10.0
#: Frames read in a row before the lock is given to other threads.
_READ_BURST = 32
#: Bytes asked of the socket at once.
_READ_CHUNK = 16384
#: How long a clean shutdown may wait for the broker's Connection.Close-Ok.
_CLOSE_TIMEOUT = 2.0


def _host_label(host: TransportHost) -> str:
    return f"{host.hostname or 'localhost'}:{host.port or 5672}"


class Session:
    """One established connection: its main channel, a channel for
    declarations, and what has been declared on it.

    ``state`` holds what the owner keeps per connection (pending confirms,
    consumer tags). ``broken`` is set (to the cause) once the session must
    not be used any more.
    """

    def __init__(self, conn: Any, generation: int, host: TransportHost) -> None:
        self.conn = conn
        self.generation = generation
        self.host = host
        self.raw: Any = conn.connection
        self.sock: Any = self.raw.sock
        self.sock.settimeout(_SOCKET_TIMEOUT)
        # py-amqp reads a frame before every publish when the broker may send
        # connection.blocked; the I/O thread reads those anyway, so skip it.
        self.raw.client_properties.get("capabilities", {})["connection.blocked"] = False
        self.heartbeat = float(self.raw.heartbeat or 0)
        self.channel: Any = conn.channel()
        self._declare_channel: Any = None
        self.broken: BaseException | None = None
        self.declared: set[Hashable] = set()
        self.state: dict[str, Any] = {}
        self._tls = isinstance(self.sock, ssl.SSLSocket)
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        transport: Any = getattr(self.raw, "transport", None)
        recv = getattr(transport, "_quick_recv", None)
        self._transport: Any = None
        if transport is not None and recv is not None and hasattr(transport, "_read_buffer"):
            # py-amqp reads each frame with three exact-size reads; asking for
            # more makes it keep the surplus in its buffer: one system call per
            # burst of frames instead of three per frame.
            transport._quick_recv = lambda size: recv(max(size, _READ_CHUNK))
            self._transport = transport

    def declare_channel(self) -> Any:
        """A channel for declarations, whose errors must not kill :attr:`channel`."""
        channel = self._declare_channel
        if channel is None or not channel.is_open:
            channel = self._declare_channel = self.conn.channel()
        return channel

    def buffered(self) -> bool:
        """True when received bytes wait in py-amqp's or the TLS layer's buffer."""
        if self._transport is not None and self._transport._read_buffer:
            return True
        return bool(self._tls and self.sock.pending())

    def readable(self) -> bool:
        """True when a frame (or part of one) can be read without waiting."""
        return self.buffered() or bool(self._poller.poll(0))

    def close(self) -> None:
        """Close the connection: politely when it still works, else just the socket."""
        try:
            if self.broken is None:
                self.sock.settimeout(_CLOSE_TIMEOUT)
                self.conn.close()
                return
        except BACKEND_ERRORS as exc:
            LOG.debug("closing the connection to %s: %s", _host_label(self.host), describe(exc))
        with contextlib.suppress(*BACKEND_ERRORS):
            self.conn.collect()


class _Locked:
    """``with link.locked:`` -- the link's lock, waking the I/O thread on release
    when the holder read more than it consumed (py-amqp buffers whole chunks,
    and poll() cannot see bytes already taken off the socket)."""

    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    def __enter__(self) -> None:
        self._link.lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        link = self._link
        session = link._session
        link.lock.release()
        if session is not None and session.buffered():
            link._wake()


class Link:
    """One connection to RabbitMQ for one role (``name``: "publisher" or
    "consumer"), kept alive by an I/O thread started on first use."""

    def __init__(self, name: str, settings: Settings, *,
                 on_open: Callable[[Session], None],
                 on_lost: Callable[[Session], None]) -> None:
        self.name = name
        self.settings = settings
        self.lock = threading.RLock()
        self.locked = _Locked(self)
        self.connects = 0
        self._on_open = on_open
        self._on_lost = on_lost
        self._cond = threading.Condition(threading.Lock())
        self._session: Session | None = None
        self._failed_rounds = 0
        self._last_error: BaseException | None = None
        self._closing = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._host_index = 0
        self._generation = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- used by other threads ----------------------------------------------

    def session(self, retry: int | None) -> Session:
        """The live session, waiting for the I/O thread to connect.

        ``retry``: ``None`` waits as long as it takes, ``N`` gives up with
        :class:`MessageDeliveryFailure` after N+1 failed connection rounds.
        """
        self._start()
        with self._cond:
            start = self._failed_rounds
            while True:
                if self._closing:
                    raise MessageDeliveryFailure(f"the transport is closed ({self.name})")
                session = self._session
                if session is not None and session.broken is None:
                    return session
                if retry is not None and self._failed_rounds - start > retry:
                    hosts = ", ".join(_host_label(h) for h in self.settings.hosts)
                    cause = describe(self._last_error) if self._last_error else "unknown error"
                    raise MessageDeliveryFailure(
                        f"cannot connect to RabbitMQ ({hosts}) after {retry} "
                        f"{'retry' if retry == 1 else 'retries'}: {cause}"
                    ) from self._last_error
                self._cond.wait()

    def current(self) -> Session | None:
        """The live session if there is one, without waiting or connecting."""
        session = self._session
        return session if session is not None and session.broken is None else None

    def break_session(self, session: Session, exc: BaseException) -> None:
        """Mark ``session`` unusable (a send failed on it); the I/O thread reconnects."""
        with self._cond:
            if session.broken is None:
                session.broken = exc
                LOG.warning("RabbitMQ %s connection to %s lost: %s", self.name,
                            _host_label(session.host), describe(exc))
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
        self._stopped.set()
        self._wake()
        if thread is threading.current_thread():
            return  # closed from a callback: the thread ends on its own, keeping its pipe
        if thread is not None:
            thread.join()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

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
        failed = 0
        while not self._closing:
            try:
                session = self._connect_round()
            except Exception:  # a bug in an on_open hook: keep the link alive regardless
                LOG.exception("unexpected error setting up the RabbitMQ %s connection", self.name)
                session = None
            if session is None:
                failed += 1
                if self._stopped.wait(self.settings.backoff(failed)):
                    break
                continue
            failed = 0
            try:
                self._serve(session)
            finally:
                self._drop(session)

    def _connect_round(self) -> Session | None:
        order = self.settings.round_order(self._host_index)
        for index in order:
            if self._closing:
                return None
            host = self.settings.hosts[index]
            try:
                session = self._open(host)
            except _CONNECT_ERRORS as exc:
                LOG.warning("cannot connect to RabbitMQ at %s (%s): %s", _host_label(host),
                            self.name, describe(exc))
                self._last_error = exc
                continue
            self._host_index = index
            return session
        with self._cond:
            self._failed_rounds += 1
            self._cond.notify_all()
        return None

    def _open(self, host: TransportHost) -> Session:
        conn = _KombuConnection(**self.settings.connection_kwargs(host))
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
            LOG.info("RabbitMQ %s connection re-established to %s", self.name, _host_label(host))
        return session

    def _drop(self, session: Session) -> None:
        with self.lock:
            with self._cond:
                if self._session is session:
                    self._session = None
                self._cond.notify_all()
            try:
                self._on_lost(session)
            finally:
                session.close()

    def _serve(self, session: Session) -> None:
        poller = select.poll()
        poller.register(session.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        poller.register(self._wake_r, select.POLLIN)
        tick = session.heartbeat / 4
        next_tick = time.monotonic() + tick
        while not self._closing and session.broken is None:
            readable = session.buffered()
            if not readable:
                wait_ms = max(0, int((next_tick - time.monotonic()) * 1000)) if tick else -1
                events = poller.poll(wait_ms)
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
                        session.conn.heartbeat_check(rate=2)
                        next_tick = time.monotonic() + tick
                except BACKEND_ERRORS as exc:
                    self.break_session(session, exc)
                    return

    def _read(self, session: Session) -> None:
        # Check again under the lock: another thread (a synchronous declare)
        # may have read what poll() saw, and a read would then block.
        for _ in range(_READ_BURST):
            if session.broken is not None or not session.readable():
                return
            try:
                # One frame at a time: drain_events() would block until a whole
                # message arrived, past heartbeat frames and heartbeat ticks.
                session.raw.blocking_read(timeout=_SOCKET_TIMEOUT)
            except TimeoutError:
                return

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass
