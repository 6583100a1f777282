"""The I/O adapter of ``rabbit+kombu``: core's AMQP port over py-amqp.

py-amqp is synchronous; the adapter makes it fit the port. Connections are
made by kombu's py-amqp transport (one ``establish_connection()`` per attempt:
the engine owns retries and backoff), on a short-lived thread (TCP, TLS and
the handshake block), and are handed to
the I/O thread (:class:`~polymsg._amqp_selector.SelectorLoop`), the only thread that
touches them from then on. Steps that wait for the broker (a declaration,
``basic.consume``, opening a channel) run on the I/O thread; every callback
py-amqp makes, there or while the loop reads, is posted to the loop and runs
after the step, in arrival order, never inside the engine's call. A channel
the broker closes goes to its ``on_close`` callbacks (py-amqp reopens it:
the adapter closes that for good); a connection error closes the connection.
``basic.publish`` is written with ``send_method``: no read of the socket
before each message (``basic_publish``) and no wait for its confirm
(``basic_publish_confirm``); confirms come as channel events.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import amqp as py_amqp
import amqp.exceptions as amqp_errors
import kombu.connection
from amqp import spec as amqp_spec
from kombu.transport import pyamqp as kombu_pyamqp

from polymsg import amqp
from polymsg._amqp_port import Channel, ConnectionEvents, Delivered, Loop, Returned
from polymsg._amqp_selector import SelectorLoop, Timer
from polymsg_kombu import _errors
from polymsg_kombu._fastpath import Hooks
from polymsg_kombu._options import py_amqp_kwargs

__all__ = ["SOCKET_TIMEOUT", "KombuAdapter", "PyAmqpChannel", "PyAmqpConnection"]

LOG = logging.getLogger(__name__)

#: The socket's timeout once open: for the rest of a frame the loop started to
#: read, for a step's answer and for writes. Constant, so py-amqp never
#: switches the socket's mode around a read.
SOCKET_TIMEOUT = 10.0
#: How long a clean close waits for the broker's Connection.Close-Ok.
_CLOSE_TIMEOUT = 2.0
#: Frames read in a row before the loop's other work gets its turn.
_READ_BURST = 64

_CONNECTING, _OPEN, _CLOSING, _CLOSED = "connecting", "open", "closing", "closed"
_POLL_IN = select.POLLIN | select.POLLERR | select.POLLHUP
_PUBLISH = amqp_spec.Basic.Publish
_NACK = amqp_spec.Basic.Nack


class _RawConnection(py_amqp.Connection):  # type: ignore[misc]
    """py-amqp's connection, telling its owner about a channel the broker closed."""

    owner: PyAmqpConnection | None = None

    def on_inbound_method(self, channel_id: int, method_sig: Any, payload: Any,
                          content: Any) -> Any:
        try:
            return super().on_inbound_method(channel_id, method_sig, payload, content)
        except amqp_errors.ChannelError as exc:
            owner = self.owner
            if channel_id == 0 or owner is None or not owner.channel_closed(channel_id, exc):
                raise
            return None


class _Transport(kombu_pyamqp.Transport):
    """kombu's py-amqp transport, making :class:`_RawConnection` connections."""

    Connection = _RawConnection


#: kombu's connection class (untyped: kept as Any for the type checker).
_KOMBU_CONNECTION: Any = kombu.connection.Connection


class KombuAdapter:
    """py-amqp as core's AMQP engine sees it (:class:`polymsg._amqp_port.Adapter`)."""

    def loop(self, name: str) -> SelectorLoop:
        return SelectorLoop(name)

    def connect(self, loop: Loop, spec: amqp.ConnectionSpec, endpoint: amqp.Endpoint,
                name: str, events: ConnectionEvents) -> PyAmqpConnection:
        if not isinstance(loop, SelectorLoop):
            raise TypeError(f"a py-amqp connection needs a SelectorLoop, not {loop!r}")
        connection = PyAmqpConnection(loop, name, endpoint.label, events)
        connection.start(py_amqp_kwargs(spec, endpoint, name))
        return connection

    failure_of = staticmethod(_errors.failure_of)
    describe = staticmethod(_errors.describe)
    reply_code = staticmethod(_errors.reply_code)


class PyAmqpConnection:
    """One py-amqp connection, read and written by the I/O thread only."""

    def __init__(self, loop: SelectorLoop, name: str, host: str,
                 events: ConnectionEvents) -> None:
        self.loop, self.name, self.host = loop, name, host
        self._events = events
        self._state = _CONNECTING
        self._raw: Any = None
        self._sock: Any = None
        self._tls = False
        self.hooks = Hooks(None)
        self._poller = select.poll()
        self._channels: dict[int, PyAmqpChannel] = {}
        self._stepping: int | None = None
        self._tick_every = 0.0
        self._timer: Timer | None = None

    # -- the port -------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    @property
    def is_closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        raw = self._raw
        return raw.server_properties if raw is not None else None

    def channel(self, on_open: Callable[[Channel], None]) -> PyAmqpChannel:
        if self._state != _OPEN:
            raise _errors.Closed(f"{self.name}: the connection is {self._state}")
        channel = PyAmqpChannel(self)
        raw_channel: list[Any] = []
        if self.step(None, lambda: raw_channel.append(self._raw.channel())):
            channel.attach(raw_channel[0])
            self._channels[channel.id] = channel
            self.loop.post(lambda: on_open(channel) if channel.is_open else None)
        elif self._state == _OPEN:  # the broker would not open it
            channel.closed(_errors.Closed("the broker did not open the channel"))
        else:
            channel.closed(None)
        return channel

    def flush(self) -> None:
        if self._state == _OPEN:
            try:
                self.hooks.flush()
            except _errors.BACKEND_ERRORS as exc:
                self.lost(exc)

    def close(self) -> None:
        if self._state == _CONNECTING:
            self._state = _CLOSED
            closed = _errors.Closed("closed before it opened")
            self.loop.post(lambda: self._events.connection_failed(closed))
            return
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        try:
            self._sock.settimeout(_CLOSE_TIMEOUT)
            with self.hooks.direct():
                self._raw.close()
        except Exception as exc:  # closing politely failed: the socket goes anyway
            LOG.debug("%s: closing the connection to %s: %s", self.name, self.host,
                      _errors.describe(exc))
        self._finish(None)

    # -- the loop's Source ------------------------------------------------------------------
    def fileno(self) -> int:
        return int(self._sock.fileno())

    def pending(self) -> bool:
        return self._state == _OPEN and (
            self.hooks.buffered() or (self._tls and self._sock.pending() > 0))

    def read(self) -> None:
        raw, poll = self._raw, self._poller.poll
        for burst in range(_READ_BURST):  # the first frame: the loop saw the socket readable
            if self._state != _OPEN or (burst and not (self.pending() or poll(0))):
                return
            try:
                # One frame at a time, with the socket's timeout for its rest:
                # with timeout 0 py-amqp would spin on a frame half arrived.
                raw.blocking_read(SOCKET_TIMEOUT)
            except Exception as exc:  # the socket, a garbled frame, the broker closing
                self.lost(exc)
                return

    def abort(self) -> None:
        self._state = _CLOSED
        with contextlib.suppress(Exception):
            self._raw.collect()

    # -- opening ----------------------------------------------------------------------------
    def start(self, kwargs: dict[str, Any]) -> None:
        """Open the connection on a thread of its own (it blocks until the handshake is done)."""
        threading.Thread(target=self._open, args=(kwargs,), daemon=True,
                         name=f"{self.name} connecting").start()

    def _open(self, kwargs: dict[str, Any]) -> None:
        post, events = self.loop.post, self._events  # blocked: told on the I/O thread
        raw: Any = None
        try:
            client = _KOMBU_CONNECTION(transport=_Transport, transport_options=dict(
                kwargs, on_blocked=lambda reason: post(lambda: events.connection_blocked(reason)),
                on_unblocked=lambda: post(events.connection_unblocked)))
            raw = client.transport.establish_connection()  # one attempt: the engine retries
        except Exception as exc:  # refused, unreachable, TLS, login: failure_of says which
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.collect()
            self._hand_over(functools.partial(self._failed, exc), None)
            return
        self._hand_over(lambda: self._opened(raw), raw)

    def _hand_over(self, fn: Callable[[], None], raw: Any) -> None:
        try:
            self.loop.submit(fn)
        except Exception:  # the transport was cleaned up meanwhile
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.collect()

    def _failed(self, exc: BaseException) -> None:
        if self._state == _CONNECTING:
            self._state = _CLOSED
            self._events.connection_failed(exc)

    def _opened(self, raw: Any) -> None:
        if self._state != _CONNECTING:  # closed while it opened
            with contextlib.suppress(Exception):
                raw.collect()
            return
        try:
            sock = raw.sock
            sock.settimeout(SOCKET_TIMEOUT)
            self.hooks = Hooks(raw.transport)
            self._poller.register(sock, _POLL_IN)
        except Exception as exc:  # the socket died in between
            with contextlib.suppress(Exception):
                raw.collect()
            self._failed(exc)
            return
        raw.owner = self
        self._raw, self._sock = raw, sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._state = _OPEN
        self.loop.watch(self)
        heartbeat = float(raw.heartbeat or 0)
        if heartbeat:
            self._tick_every = heartbeat / 4
            self._timer = self.loop.call_later(self._tick_every, self._tick)
        self._events.connection_opened(self)

    def _tick(self) -> None:
        if self._state != _OPEN:
            return
        try:
            self._raw.heartbeat_tick(rate=2)
        except Exception as exc:  # missed heartbeats (ConnectionForced) or the socket
            self.lost(exc)
            return
        self._timer = self.loop.call_later(self._tick_every, self._tick)

    # -- steps and failures (used by the channels) ------------------------------------------------
    def step(self, channel: PyAmqpChannel | None, call: Callable[[], object]) -> bool:
        """Run a py-amqp call that may wait for the broker; True when it went through.

        A refusal closes ``channel`` (its ``on_close`` callbacks run); a
        connection error closes the connection."""
        if self._state != _OPEN:
            return False
        self._stepping = channel.id if channel is not None else None
        try:
            with self.hooks.direct():
                call()
            return True
        except amqp_errors.ChannelError as exc:
            if not self._raw.connected:
                self.lost(exc)
            elif channel is not None:
                channel.refused(exc)
            else:
                LOG.debug("%s: %s", self.name, _errors.describe(exc))
        except Exception as exc:
            if not isinstance(exc, _errors.BACKEND_ERRORS):
                raise
            self.lost(exc)
        finally:
            self._stepping = None
        return False

    def write(self, call: Callable[[], object]) -> None:
        """Run a py-amqp call that only writes; a socket error closes the connection."""
        try:
            call()
        except _errors.BACKEND_ERRORS as exc:
            self.lost(exc)

    def channel_closed(self, channel_id: int, exc: BaseException) -> bool:
        """From py-amqp's dispatch: the broker closed channel ``channel_id``. True when
        handled here; False for the channel whose step is running (its step raises)."""
        if channel_id == self._stepping:
            return False
        channel = self._channels.get(channel_id)
        if channel is not None:
            channel.refused(exc)
        return True

    def forget(self, channel: PyAmqpChannel) -> None:
        if self._channels.get(channel.id) is channel:
            del self._channels[channel.id]

    def lost(self, exc: BaseException | None) -> None:
        """The connection broke: close it and tell its channels and its owner."""
        if self._state in (_OPEN, _CLOSING):
            LOG.debug("%s: connection to %s lost: %s", self.name, self.host,
                      _errors.describe(exc))
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        self._state = _CLOSED
        self.loop.unwatch(self)
        self.loop.cancel(self._timer)
        with contextlib.suppress(Exception):
            self._raw.collect()
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            channel.closed(exc)
        self.loop.post(lambda: self._events.connection_closed(exc))


def _renamed(properties: Mapping[str, Any], name: str, to: str) -> dict[str, Any]:
    """Properties by AMQP name (``headers``) <-> py-amqp's (``application_headers``)."""
    result = dict(properties)
    if name in result:
        result[to] = result.pop(name)
    return result


def _incoming(message: Any) -> dict[str, Any]:
    return _renamed(message.properties, "application_headers", "headers")


class PyAmqpChannel:
    """One py-amqp channel (:class:`polymsg._amqp_port.Channel`)."""

    def __init__(self, connection: PyAmqpConnection) -> None:
        self._connection = connection
        self._post = connection.loop.post
        self._raw: Any = None
        self.id = 0
        self._open = False
        self._reported = False  # on_close callbacks queued
        self._close_callbacks: list[Callable[[Channel, BaseException], None]] = []
        self._return_callbacks: list[Callable[[Returned], None]] = []
        self._cancel_callbacks: list[Callable[[str], None]] = []

    def attach(self, raw: Any) -> None:
        self._raw, self.id, self._open = raw, raw.channel_id, True
        raw.auto_decode = False  # bodies stay bytes
        raw.events["basic_return"].add(self._raw_return)

    # -- the port -------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def connection(self) -> PyAmqpConnection:
        return self._connection

    def on_close(self, callback: Callable[[Channel, BaseException], None]) -> None:
        self._close_callbacks.append(callback)

    def on_return(self, callback: Callable[[Returned], None]) -> None:
        self._return_callbacks.append(callback)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    def confirm(self, on_confirm: Callable[[int, bool, bool], None],
                done: Callable[[], None]) -> None:
        post = self._post
        events = self._usable().events
        events["basic_ack"].add(
            lambda tag, multiple: post(lambda: on_confirm(tag, multiple, False)))
        events["basic_nack"].add(
            lambda tag, multiple: post(lambda: on_confirm(tag, multiple, True)))
        self._step(lambda: self._raw.confirm_select(), done)

    def publish(self, exchange: str, routing_key: str, body: bytes,
                properties: Mapping[str, Any], mandatory: bool) -> None:
        raw = self._usable()
        message = py_amqp.Message(body, **_renamed(properties, "headers", "application_headers"))
        self._connection.write(lambda: raw.send_method(
            _PUBLISH, "Bssbb", (0, exchange, routing_key, mandatory, False), message))

    def declare_exchange(self, name: str, type: str, *, passive: bool, durable: bool,
                         auto_delete: bool, done: Callable[[], None]) -> None:
        self._step(lambda: self._raw.exchange_declare(
            name, type, passive=passive, durable=durable, auto_delete=auto_delete), done)

    def declare_queue(self, name: str, *, passive: bool, durable: bool, auto_delete: bool,
                      arguments: Mapping[str, Any], done: Callable[[], None]) -> None:
        self._step(lambda: self._raw.queue_declare(
            name, passive=passive, durable=durable, auto_delete=auto_delete,
            arguments=dict(arguments) or None), done)

    def bind(self, queue: str, exchange: str, routing_key: str,
             done: Callable[[], None]) -> None:
        self._step(lambda: self._raw.queue_bind(queue, exchange, routing_key), done)

    def delete_queue(self, name: str, done: Callable[[], None]) -> None:
        self._step(lambda: self._raw.queue_delete(name), done)

    def qos(self, prefetch_count: int, done: Callable[[], None]) -> None:
        self._step(lambda: self._raw.basic_qos(0, prefetch_count, False), done)

    def consume(self, queue: str, on_message: Callable[[Channel, Delivered], None], *,
                auto_ack: bool, arguments: Mapping[str, Any] | None,
                done: Callable[[str], None]) -> str:
        raw = self._usable()
        tag = f"ctag{self.id}.{uuid.uuid4().hex}"
        post = self._post

        def deliver(message: Any) -> None:
            info = message.delivery_info
            delivered = Delivered(tag, info["delivery_tag"], info["redelivered"],
                                  info["exchange"], info["routing_key"],
                                  _incoming(message), message.body or b"")
            post(lambda: on_message(self, delivered) if self._open else None)

        if self._connection.step(self, lambda: raw.basic_consume(
                queue, consumer_tag=tag, no_ack=auto_ack, callback=deliver,
                arguments=dict(arguments) if arguments else None,
                on_cancel=self._raw_cancel)):
            post(lambda: done(tag) if self._open else None)
        return tag

    def cancel(self, consumer_tag: str) -> None:
        if self._open:
            self._connection.step(self, lambda: self._raw.basic_cancel(consumer_tag))

    def ack(self, delivery_tag: int) -> None:
        if self._open:
            self._connection.write(lambda: self._raw.basic_ack(delivery_tag))

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        if self._open:
            self._connection.write(lambda: self._raw.basic_reject(delivery_tag, requeue))

    def nack(self, delivery_tag: int, requeue: bool) -> None:
        if self._open:
            self._connection.write(
                lambda: self._raw.send_method(_NACK, "Lbb", (delivery_tag, False, requeue)))

    def close(self) -> None:
        if not self._open:
            return
        self._connection.forget(self)
        self._connection.step(None, self._raw.close)
        self.closed(_errors.Closed("channel closed by polymsg"))

    # -- from the connection and py-amqp ----------------------------------------------------------
    def closed(self, exc: BaseException | None) -> None:
        """The channel is gone (with its connection, or closed here): tell the callbacks."""
        self._open = False
        if not self._reported:
            self._reported = True
            error = exc if exc is not None else _errors.Closed("connection closed")
            self._post(lambda: self._notify_close(error))

    def refused(self, exc: BaseException) -> None:
        """The broker closed the channel; py-amqp reopened it, so close that for good."""
        if not self._open:
            return
        self._connection.forget(self)
        raw = self._raw

        def close_reopened() -> None:
            if raw.is_open:
                self._connection.step(None, raw.close)

        self._post(close_reopened)
        self.closed(exc)

    def _notify_close(self, error: BaseException) -> None:
        for callback in self._close_callbacks:
            callback(self, error)

    def _raw_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        returned = Returned(exchange, routing_key, int(getattr(exc, "reply_code", 0) or 0),
                            str(getattr(exc, "reply_text", "") or ""),
                            _incoming(message), message.body or b"")
        for callback in self._return_callbacks:
            self._post(functools.partial(callback, returned))

    def _raw_cancel(self, consumer_tag: str) -> None:
        for callback in self._cancel_callbacks:
            self._post(functools.partial(callback, consumer_tag))

    def _usable(self) -> Any:
        if not self._open:
            raise _errors.Closed("the channel is closed")
        return self._raw

    def _step(self, call: Callable[[], object], done: Callable[[], None]) -> None:
        self._usable()
        if self._connection.step(self, call):
            self._post(lambda: done() if self._open else None)
