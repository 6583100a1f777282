"""RPC server: endpoints served on a topic, a named server and the topic's fanout."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from polymsg import _observe
from polymsg._dispatcher import RPCDispatcher, is_expected
from polymsg._exceptions import (
    InvalidTarget,
    NoSuchMethod,
    SerializationError,
    UnsupportedVersion,
)
from polymsg._executor import Runner
from polymsg._json import to_primitive
from polymsg._ratelimit import LogLimiter
from polymsg._remote import failure_from_exception
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import Target, check_routing_size, check_ttl
from polymsg._transport import Transport
from polymsg.driver import IncomingMessage, Listener

__all__ = ["RPCServer", "get_rpc_server"]

LOG = logging.getLogger(__name__)

#: What callers send that cannot be served (unknown methods, versions, monitor
#: timeouts) is logged a few times per interval, then counted.
_BAD_REQUESTS = LogLimiter(LOG, "requests that could not be dispatched")


class RPCServer(Runner):
    """Serves ``endpoints`` for ``target`` (see :func:`get_rpc_server`)."""

    def __init__(self, transport: Transport, target: Target, endpoints: Sequence[Any], *,
                 executor: str = "threading", serializer: Serializer | None = None,
                 queue_ttl: float | None = None, max_workers: int | None = None) -> None:
        super().__init__(transport, executor, max_workers)
        if not isinstance(target, Target):
            raise InvalidTarget(f"target must be a polymsg.Target, got {target!r}")
        if not target.topic or not target.server:
            raise InvalidTarget(f"an RPC server needs a topic and a server: {target}")
        if target.fanout:
            raise InvalidTarget(f"an RPC server target cannot be fanout: {target}")
        check_routing_size(target, transport.default_exchange)
        self.target = target.replace(exchange=target.exchange or transport.default_exchange)
        self.queue_ttl = check_ttl("queue_ttl", queue_ttl)
        self._dispatcher = RPCDispatcher(endpoints, serializer or NoOpSerializer())

    def _check(self) -> None:
        self.transport.require("rpc", "an RPC server")
        if self.queue_ttl is not None:
            self.transport.require("queue_ttl", "queue_ttl")

    def _listen(self) -> Listener:
        return self.transport._driver.listen(self.target, self._on_message,
                                             queue_ttl=self.queue_ttl)

    def _process(self, incoming: IncomingMessage) -> None:
        incoming.acknowledge()  # at most once: taken before it runs
        if not _observe.OBSERVERS:
            self._serve(incoming)
            return
        scope = observe_request(self, incoming)
        try:
            failure = self._serve(incoming)
        except BaseException as exc:
            scope.close(exc)
            raise
        scope.close(failure)

    def _serve(self, incoming: IncomingMessage) -> Exception | None:
        """Run the request and reply; the exception replied with, if any."""
        message = incoming.message
        func = None
        monitor = _CallMonitor.start(incoming)
        try:
            func = self._dispatcher.find(message.get("method"),  # type: ignore[arg-type]
                                         message.get("namespace"), message.get("version"))
            result = self._dispatcher.invoke(func, incoming.ctxt, message)
        except Exception as exc:
            reply_failure(incoming, func, exc, monitor)
            return exc
        reply_result(incoming, result, monitor)
        return None


def observe_request(server: RPCServer, incoming: IncomingMessage) -> _observe.Scope:
    """The observers' scope of one request ``server`` processes, entered."""
    message, target = incoming.message, server.target
    wire_text = _observe.wire_text
    return _observe.receiving(_observe.Operation(
        "rpc", _observe.system_of(server.transport), target.exchange, target.topic,
        target.server, wire_text(message.get("namespace")), wire_text(message.get("version")),
        wire_text(message.get("method"))), incoming.ctxt)


def reply_failure(incoming: IncomingMessage, func: Any, exc: Exception,
                  monitor: _CallMonitor | None) -> None:
    """Log an endpoint's (or the dispatch's) exception as it deserves and send it back."""
    _log_failure(incoming, func, exc)
    if _observe.OBSERVERS and func is not None and is_expected(func, exc):
        _observe.mark_expected(exc)
    if monitor is not None:
        monitor.stop()
    incoming.reply(failure=failure_from_exception(exc))


def reply_result(incoming: IncomingMessage, result: Any, monitor: _CallMonitor | None) -> None:
    """Send a call's result back, or the error saying it is not JSON."""
    if monitor is not None:
        monitor.stop()
    try:
        incoming.reply(result=to_primitive(result, "result"))
    except SerializationError as exc:
        LOG.warning("result of %s is not JSON-serializable: %s", _name(incoming), exc)
        incoming.reply(failure=failure_from_exception(exc))


class _CallMonitor:
    """Sends call-monitor heartbeats every ``call_monitor_timeout / 2`` seconds
    while an endpoint runs, for a caller that asked for them."""

    def __init__(self, incoming: IncomingMessage, interval: float) -> None:
        self._incoming = incoming
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="polymsg-call-monitor")

    @classmethod
    def start(cls, incoming: IncomingMessage) -> _CallMonitor | None:
        timeout = getattr(incoming, "call_monitor_timeout", None)
        if timeout is None:
            return None
        try:
            interval = float(timeout) / 2
        except (TypeError, ValueError):
            interval = 0.0
        if not interval > 0 or interval == float("inf"):
            _BAD_REQUESTS.log("ignoring an invalid call_monitor_timeout %r from a caller", timeout)
            return None
        monitor = cls(incoming, max(interval, _MIN_HEARTBEAT_INTERVAL))
        monitor._thread.start()
        return monitor

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                self._incoming.heartbeat()
            except Exception as exc:  # the reply path is gone: the caller will time out
                LOG.debug("call-monitor heartbeat failed: %s", exc)
                return

    def stop(self) -> None:
        """Stop sending heartbeats; returns once none is being sent, so no
        heartbeat follows the reply."""
        self._done.set()
        self._thread.join()


#: Heartbeats are never sent more often than this (seconds), whatever the caller asks.
_MIN_HEARTBEAT_INTERVAL = 0.05


def _log_failure(incoming: IncomingMessage, func: Any, exc: Exception) -> None:
    name = _name(incoming)
    if isinstance(exc, (NoSuchMethod, UnsupportedVersion)) and func is None:
        _BAD_REQUESTS.log("cannot dispatch %s: %s", name, exc)
    elif func is not None and is_expected(func, exc):
        LOG.debug("expected exception from %s: %r", name, exc)
    else:
        LOG.exception("exception from %s", name)


def _name(incoming: IncomingMessage) -> str:
    return f"RPC method {incoming.message.get('method')!r}"


def get_rpc_server(transport: Transport, target: Target, endpoints: Sequence[Any], *,
                   executor: str = "threading", serializer: Serializer | None = None,
                   queue_ttl: float | None = None, max_workers: int | None = None) -> RPCServer:
    """An RPC server for ``endpoints`` on ``target`` (needs ``topic`` and ``server``).

    It listens on the topic (sharing work with other servers of it), on
    ``topic`` + ``server`` and on the topic's fanout. Call ``start()`` (or
    use it as a context manager); ``stop()`` then ``wait()`` to finish.
    """
    return RPCServer(transport, target, endpoints, executor=executor, serializer=serializer,
                     queue_ttl=queue_ttl, max_workers=max_workers)
