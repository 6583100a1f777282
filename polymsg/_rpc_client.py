"""RPC client: call (request/response), cast (one-way) and fanout casts."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from polymsg import _observe
from polymsg._config import value
from polymsg._exceptions import (
    InvalidTarget,
    MessageDeliveryFailure,
    MessagingError,
    MessagingTimeout,
    RPCVersionCapError,
)
from polymsg._json import to_primitive
from polymsg._remote import exception_from_failure
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import (
    Target,
    check_context,
    check_routing_size,
    check_timeout,
    check_ttl,
    parse_version,
    version_is_compatible,
)
from polymsg._transport import Transport
from polymsg.driver import Reply, SendOptions

__all__ = ["RPCClient", "TransportOptions"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")

_UNSET: Any = object()
_TARGET_FIELDS = ("topic", "server", "fanout", "exchange", "namespace", "version")


@dataclass(frozen=True)
class TransportOptions:
    """How a client's messages are sent.

    ``at_least_once``: a call or cast that no queue takes (nobody ever
    listened on that topic or server) fails at once with
    :class:`~polymsg.MessageUndeliverable` instead of being stored (casts)
    or timing out (calls). The message is then not stored for a server that
    starts later. Needs a driver with the ``at_least_once`` send feature.
    """

    at_least_once: bool = False


class RPCClient:
    """Sends requests to the servers of ``target``. Thread-safe; cheap to ``prepare``.

    ``timeout`` (seconds) defaults to ``[DEFAULT] rpc_response_timeout``;
    ``retry`` ``None`` retries the connection forever, ``0`` never, ``N``
    times; ``version_cap`` refuses versions above it; ``queue_ttl`` and
    ``message_ttl`` are the TTL hints. ``call_monitor_timeout`` (seconds)
    asks the server for heartbeats while a call runs and fails the call with
    :class:`~polymsg.MessagingTimeout` once none came for that long, however
    far ``timeout`` is. ``transport_options``: see :class:`TransportOptions`.
    """

    def __init__(self, transport: Transport, target: Target, *, timeout: float | None = None,
                 retry: int | None = None, version_cap: str | None = None,
                 serializer: Serializer | None = None, queue_ttl: float | None = None,
                 message_ttl: float | None = None, call_monitor_timeout: float | None = None,
                 transport_options: TransportOptions | None = None) -> None:
        if not isinstance(target, Target):
            raise InvalidTarget(f"target must be a polymsg.Target, got {target!r}")
        if version_cap is not None:
            parse_version(version_cap)
        if retry is not None and (not isinstance(retry, int) or retry < 0):
            raise ValueError(f"retry must be None or a non-negative int, got {retry!r}")
        check_timeout("timeout", timeout)
        self.transport = transport
        self.target = target
        self.timeout = timeout
        self.retry = retry
        self.version_cap = version_cap
        self.serializer = serializer or NoOpSerializer()
        self.queue_ttl = check_ttl("queue_ttl", queue_ttl)
        self.message_ttl = check_ttl("message_ttl", message_ttl)
        self.call_monitor_timeout = check_ttl("call_monitor_timeout", call_monitor_timeout)
        if transport_options is not None and not isinstance(transport_options, TransportOptions):
            raise TypeError("transport_options must be a polymsg.TransportOptions, got "
                            f"{transport_options!r}")
        self.transport_options = transport_options or TransportOptions()
        self._at_least_once = self.transport_options.at_least_once
        self._cast_options = SendOptions(retry=retry, queue_ttl=self.queue_ttl,
                                         message_ttl=self.message_ttl,
                                         at_least_once=self._at_least_once)
        check_routing_size(target, transport.default_exchange)
        self._wire_target = target.replace(exchange=target.exchange or transport.default_exchange)

    def prepare(self, *, topic: str | None = _UNSET, server: str | None = _UNSET,
                fanout: bool = _UNSET, exchange: str | None = _UNSET,
                namespace: str | None = _UNSET, version: str | None = _UNSET,
                timeout: float | None = _UNSET, retry: int | None = _UNSET,
                version_cap: str | None = _UNSET, queue_ttl: float | None = _UNSET,
                message_ttl: float | None = _UNSET, call_monitor_timeout: float | None = _UNSET,
                transport_options: TransportOptions | None = _UNSET) -> RPCClient:
        """A client like this one with the given target fields and options changed."""
        given = dict(topic=topic, server=server, fanout=fanout, exchange=exchange,
                     namespace=namespace, version=version)
        target = self.target.replace(**{k: v for k, v in given.items() if v is not _UNSET})

        def pick(value: T, current: T) -> T:
            return current if value is _UNSET else value

        return RPCClient(
            self.transport, target, timeout=pick(timeout, self.timeout),
            retry=pick(retry, self.retry), version_cap=pick(version_cap, self.version_cap),
            serializer=self.serializer, queue_ttl=pick(queue_ttl, self.queue_ttl),
            message_ttl=pick(message_ttl, self.message_ttl),
            call_monitor_timeout=pick(call_monitor_timeout, self.call_monitor_timeout),
            transport_options=pick(transport_options, self.transport_options),
        )

    def can_send_version(self, version: str) -> bool:
        """True when ``version`` is allowed by ``version_cap`` (always, without a cap)."""
        return self.version_cap is None or version_is_compatible(self.version_cap, version)

    def call(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> Any:
        """Invoke ``method`` on one server and return its result (or raise its error)."""
        future, wire_ctxt, timeout, beats, scope = self._start_call(ctxt, method, kwargs)
        if scope is None:
            return self._finish_call(future, wire_ctxt, timeout, beats, method)
        with scope:
            return self._finish_call(future, wire_ctxt, timeout, beats, method)

    def _finish_call(self, future: Future[Reply], wire_ctxt: dict[str, Any], timeout: float,
                     beats: _Heartbeats, method: str) -> Any:
        try:
            reply = _wait(future, timeout, self.call_monitor_timeout, beats)
        except FutureTimeout as expired:
            future.cancel()
            silent = bool(expired.args) and expired.args[0] == "monitor"
            raise self._timed_out(method, timeout, silent) from None
        return self._outcome(reply, wire_ctxt)

    def cast(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> None:
        """Send ``method`` one-way: to one server, the named server, or all (fanout).
        Returns once the transport has accepted the message."""
        _result(self._start_cast(ctxt, method, kwargs), None)

    def _start_call(self, ctxt: dict[str, Any] | None, method: str, kwargs: dict[str, Any]
                    ) -> tuple[Future[Reply], dict[str, Any], float, _Heartbeats,
                               _observe.Scope | None]:
        """Send a call's request: the future of its reply, the wire context, the
        timeout, the call-monitor heartbeats and the observers' scope, ``None``
        when nothing observes (the waiting, and exiting the scope with its
        outcome, are the caller's, sync or async)."""
        timeout = self.timeout
        if timeout is None:
            timeout = float(value(self.transport.conf, "rpc_response_timeout"))
        if self.target.fanout:
            raise InvalidTarget(f"a fanout target cannot be called, only cast to: {self.target}")
        wire_ctxt, message = self._prepare(ctxt, method, kwargs)
        monitor = self.call_monitor_timeout
        if monitor is not None:
            self.transport.require_send_feature("call_monitor", "call_monitor_timeout")
        beats = _Heartbeats()
        ttl = timeout if self.message_ttl is None else min(timeout, self.message_ttl)
        options = SendOptions(timeout=timeout, retry=self.retry, queue_ttl=self.queue_ttl,
                              message_ttl=ttl, call_monitor_timeout=monitor,
                              heartbeat=beats.beat if monitor is not None else None,
                              at_least_once=self._at_least_once)
        scope = self._observed("call", method, wire_ctxt) if _observe.OBSERVERS else None
        future = _send(scope, lambda: self.transport._driver.call(
            self._wire_target, wire_ctxt, message, options))
        return future, wire_ctxt, timeout, beats, scope

    def _timed_out(self, method: str, timeout: float, silent: bool) -> MessagingTimeout:
        """The error of a call that timed out (``silent``: its heartbeats stopped)."""
        if silent:
            return MessagingTimeout(
                f"no call-monitor heartbeat for {self.call_monitor_timeout:g}s from the "
                f"server running {method!r} on topic {self.target.topic!r}")
        return MessagingTimeout(
            f"timed out after {timeout:g}s waiting for a reply to {method!r} "
            f"on topic {self.target.topic!r}")

    def _outcome(self, reply: Reply, wire_ctxt: dict[str, Any]) -> Any:
        """The call's result, or its remote error raised."""
        if reply.failure is not None:
            raise exception_from_failure(reply.failure, self.transport.allowed_remote_exmods)
        return self.serializer.deserialize_entity(wire_ctxt, reply.result)

    def _start_cast(self, ctxt: dict[str, Any] | None, method: str, kwargs: dict[str, Any]
                    ) -> Future[None]:
        if self.target.fanout:
            self.transport.require("fanout", "a fanout cast")
        wire_ctxt, message = self._prepare(ctxt, method, kwargs)
        if not _observe.OBSERVERS:
            return _guard(lambda: self.transport._driver.cast(
                self._wire_target, wire_ctxt, message, self._cast_options))
        scope = self._observed("fanout" if self.target.fanout else "cast", method, wire_ctxt)
        future = _send(scope, lambda: self.transport._driver.cast(
            self._wire_target, wire_ctxt, message, self._cast_options))
        future.add_done_callback(scope.close_with)
        return future

    def _observed(self, kind: str, method: str, wire_ctxt: dict[str, Any]) -> _observe.Scope:
        """The observers' scope of one send, entered (they may add to ``wire_ctxt``)."""
        target = self._wire_target
        return _observe.sending(_observe.Operation(
            kind, _observe.system_of(self.transport), target.exchange, target.topic,
            target.server, target.namespace, target.version, method), wire_ctxt)

    def _prepare(self, ctxt: dict[str, Any] | None, method: str,
                 kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        transport, target = self.transport, self.target
        transport.require("rpc", "an RPC client")
        if not target.topic:
            raise InvalidTarget(f"a target to send to needs a topic: {target}")
        if self.queue_ttl is not None:
            transport.require("queue_ttl", "queue_ttl")
        if self.message_ttl is not None:
            transport.require("message_ttl", "message_ttl")
        if self._at_least_once:
            transport.require_send_feature("at_least_once", "TransportOptions(at_least_once=True)")
        if not isinstance(method, str) or not method:
            raise InvalidTarget(f"method must be a non-empty string, got {method!r}")
        version = target.version
        if version is not None and not self.can_send_version(version):
            raise RPCVersionCapError(
                f"requested version {version} is above the version cap {self.version_cap}")
        serializer = self.serializer
        wire_ctxt = to_primitive(check_context(
            serializer.serialize_context({} if ctxt is None else ctxt)), "context")
        if type(serializer) is NoOpSerializer:
            args = to_primitive(kwargs, "args")
        else:
            args = to_primitive({k: serializer.serialize_entity(wire_ctxt, v)
                                 for k, v in kwargs.items()}, "args")
        message = {"method": method, "args": args, "namespace": target.namespace,
                   "version": version}
        return wire_ctxt, message

    def __repr__(self) -> str:
        return f"<polymsg.RPCClient {self.target}>"


class _Heartbeats:
    """When the last call-monitor heartbeat of one call arrived."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()


def _wait(future: Future[Any], timeout: float, monitor: float | None,
          beats: _Heartbeats) -> Reply:
    """The call's reply; ``FutureTimeout`` at the timeout, ``FutureTimeout("monitor")``
    when heartbeats stopped for ``monitor`` seconds first."""
    if monitor is None:
        return _result(future, timeout)
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        silent_until = beats.last + monitor
        if now >= deadline:
            raise FutureTimeout()
        if now >= silent_until:
            raise FutureTimeout("monitor")
        try:
            return _result(future, min(deadline, silent_until) - now)
        except FutureTimeout:
            continue


def _send(scope: _observe.Scope | None, send: Any) -> Future[Any]:
    """:func:`_guard`, closing ``scope`` with the error when the send fails at once."""
    if scope is None:
        return _guard(send)
    try:
        return _guard(send)
    except BaseException as exc:
        scope.close(exc)
        raise


def _guard(send: Any) -> Future[Any]:
    """Run a driver send, wrapping anything that is not a polymsg error."""
    try:
        return send()  # type: ignore[no-any-return]
    except MessagingError:
        raise
    except Exception as exc:
        raise MessageDeliveryFailure(f"the driver failed to send: {exc}") from exc


def _result(future: Future[Any], timeout: float | None) -> Reply:
    try:
        return future.result(timeout)  # type: ignore[no-any-return]
    except (MessagingError, FutureTimeout):
        raise
    except Exception as exc:
        raise MessageDeliveryFailure(f"the driver failed to deliver: {exc}") from exc
