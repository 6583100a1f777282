"""The asyncio RPC client and notifier: the synchronous classes' logic, awaited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from polymsg._config import value
from polymsg._notifier import Notifier as _SyncNotifier
from polymsg._observe import Scope
from polymsg._rpc_client import RPCClient as _SyncClient
from polymsg._rpc_client import _Heartbeats
from polymsg._serializer import Serializer
from polymsg._target import Target
from polymsg._transport import Transport
from polymsg.aio._futures import wait_future
from polymsg.aio._senders import Senders, senders_for
from polymsg.driver import Reply

__all__ = ["Notifier", "RPCClient"]


class RPCClient:
    """Sends requests to the servers of ``target`` from an event loop.

    Arguments, validation and behaviour are those of :class:`polymsg.RPCClient`
    (extra keyword ``options``, such as ``transport_options``, go to it too);
    ``call_monitor_timeout`` fails a call whose server stopped sending
    heartbeats for that long. ``call`` and ``cast`` are
    coroutines. Any number of tasks may share one client, and a sync and an
    async client may share one transport.

    ``await call(...)`` raises :class:`~polymsg.MessagingTimeout` after
    ``timeout``; cancelling the task that awaits it abandons the call (a reply
    that still comes is dropped by the driver).
    """

    def __init__(self, transport: Transport, target: Target, *, timeout: float | None = None,
                 retry: int | None = None, version_cap: str | None = None,
                 serializer: Serializer | None = None, queue_ttl: float | None = None,
                 message_ttl: float | None = None, call_monitor_timeout: float | None = None,
                 **options: Any) -> None:
        self._client = _SyncClient(transport, target, timeout=timeout, retry=retry,
                                   version_cap=version_cap, serializer=serializer,
                                   queue_ttl=queue_ttl, message_ttl=message_ttl,
                                   call_monitor_timeout=call_monitor_timeout, **options)

    @classmethod
    def _wrap(cls, client: _SyncClient) -> RPCClient:
        self = cls.__new__(cls)
        self._client = client
        return self

    @property
    def transport(self) -> Transport:
        """The transport requests are sent on."""
        return self._client.transport

    @property
    def target(self) -> Target:
        """Where requests go."""
        return self._client.target

    @property
    def timeout(self) -> float | None:
        """Seconds a call waits (``None``: ``[DEFAULT] rpc_response_timeout``)."""
        return self._client.timeout

    @property
    def retry(self) -> int | None:
        """Connection retries before :class:`~polymsg.MessageDeliveryFailure`."""
        return self._client.retry

    @property
    def version_cap(self) -> str | None:
        """The highest version this client sends."""
        return self._client.version_cap

    @property
    def call_monitor_timeout(self) -> float | None:
        """Seconds without a server heartbeat before a call fails, if set."""
        return self._client.call_monitor_timeout

    @property
    def serializer(self) -> Serializer:
        """Turns arguments and results into JSON types and back."""
        return self._client.serializer

    @property
    def queue_ttl(self) -> float | None:
        """The ``queue_ttl`` hint (seconds), if any."""
        return self._client.queue_ttl

    @property
    def message_ttl(self) -> float | None:
        """The ``message_ttl`` hint (seconds), if any."""
        return self._client.message_ttl

    def prepare(self, **changes: Any) -> RPCClient:
        """A client like this one with target fields and options changed (the
        keywords of :meth:`polymsg.RPCClient.prepare`)."""
        return RPCClient._wrap(self._client.prepare(**changes))

    def can_send_version(self, version: str) -> bool:
        """True when ``version`` is allowed by ``version_cap`` (always, without a cap)."""
        return self._client.can_send_version(version)

    async def call(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> Any:
        """Invoke ``method`` on one server and return its result (or raise its error)."""
        client = self._client
        senders = senders_for(client.transport, "call")
        if senders is None:
            future, wire_ctxt, timeout, beats, scope = client._start_call(ctxt, method, kwargs)
            if scope is None:
                reply = await self._reply(lambda: future, timeout, lambda: beats.last, method)
                return client._outcome(reply, wire_ctxt)
            with scope:
                reply = await self._reply(lambda: future, timeout, lambda: beats.last, method)
                return client._outcome(reply, wire_ctxt)
        # the driver may block sending: a sender thread sends; the timeout runs from now
        timeout = _call_timeout(client)
        sent = _Sent()

        def start() -> Future[Reply]:
            future, wire_ctxt, _, beats, scope = client._start_call(ctxt, method, kwargs)
            sent.started(wire_ctxt, beats, scope)
            return future

        try:
            reply = await self._reply(start, timeout, sent.last_beat, method, senders)
            result = client._outcome(reply, sent.wire_ctxt)
        except BaseException as exc:
            sent.close(exc)
            raise
        sent.close(None)
        return result

    async def _reply(self, start: Callable[[], Future[Reply]], timeout: float,
                     last_beat: Callable[[], float], method: str,
                     senders: Senders | None = None) -> Reply:
        """The reply to the call ``start`` sends, awaited within ``timeout``."""
        client = self._client
        monitor = client.call_monitor_timeout
        return await wait_future(
            start, timeout, lambda silent: client._timed_out(method, timeout, silent),
            None if monitor is None else (monitor, last_beat), senders)

    async def cast(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> None:
        """Send ``method`` one-way; returns once the transport has accepted it."""
        client = self._client
        await wait_future(partial(client._start_cast, ctxt, method, kwargs),
                          senders=senders_for(client.transport, "cast"))

    def __repr__(self) -> str:
        return f"<polymsg.aio.RPCClient {self.target}>"


class Notifier:
    """Publishes notifications from an event loop; see :class:`polymsg.Notifier`.

    Each priority method is a coroutine returning once every topic's
    transport accepted the notification.
    """

    def __init__(self, transport: Transport, publisher_id: str, *,
                 topics: Sequence[str] = ("notifications",),
                 serializer: Serializer | None = None, retry: int | None = None,
                 message_ttl: float | None = None) -> None:
        self._notifier = _SyncNotifier(transport, publisher_id, topics=topics,
                                       serializer=serializer, retry=retry,
                                       message_ttl=message_ttl)

    @property
    def transport(self) -> Transport:
        """The transport notifications are published on."""
        return self._notifier.transport

    @property
    def publisher_id(self) -> str:
        """Who the notifications say sent them."""
        return self._notifier.publisher_id

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics each notification is published on."""
        return self._notifier.topics

    def prepare(self, **changes: Any) -> Notifier:
        """A notifier like this one with fields changed (``publisher_id``,
        ``topics``, ``retry``, ``message_ttl``)."""
        notifier = Notifier.__new__(Notifier)
        notifier._notifier = self._notifier.prepare(**changes)
        return notifier

    async def _notify(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any,
                      priority: str) -> None:
        notifier = self._notifier
        senders = senders_for(notifier.transport, "notify")
        sends = notifier._send(ctxt, event_type, payload, priority)  # one send per topic
        for _ in notifier.topics:
            await wait_future(partial(next, sends), senders=senders)

    async def audit(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at AUDIT priority."""
        await self._notify(ctxt, event_type, payload, "AUDIT")

    async def debug(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at DEBUG priority."""
        await self._notify(ctxt, event_type, payload, "DEBUG")

    async def info(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at INFO priority."""
        await self._notify(ctxt, event_type, payload, "INFO")

    async def warn(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at WARN priority (listeners' ``warn`` method)."""
        await self._notify(ctxt, event_type, payload, "WARN")

    warning = warn

    async def error(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at ERROR priority."""
        await self._notify(ctxt, event_type, payload, "ERROR")

    async def critical(self, ctxt: dict[str, Any] | None, event_type: str,
                       payload: Any) -> None:
        """Send at CRITICAL priority."""
        await self._notify(ctxt, event_type, payload, "CRITICAL")

    async def sample(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        """Send at SAMPLE priority."""
        await self._notify(ctxt, event_type, payload, "SAMPLE")

    def __repr__(self) -> str:
        return f"<polymsg.aio.Notifier {self.publisher_id} on {', '.join(self.topics)}>"


def _call_timeout(client: _SyncClient) -> float:
    """The client's call timeout in seconds (``[DEFAULT] rpc_response_timeout`` if unset)."""
    if client.timeout is not None:
        return client.timeout
    return float(value(client.transport.conf, "rpc_response_timeout"))


class _Sent:
    """What a sender thread's send of one call leaves for its waiter: the wire
    context, the heartbeats and the observers' scope. The scope is closed
    once, by whichever side finishes last: the waiter with the outcome, or a
    send that completes after its waiter gave up."""

    __slots__ = ("_beats", "_lock", "_outcome", "_scope", "_since", "wire_ctxt")

    def __init__(self) -> None:
        self.wire_ctxt: dict[str, Any] = {}
        self._beats: _Heartbeats | None = None
        self._scope: Scope | None = None
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._outcome: list[BaseException | None] = []

    def started(self, wire_ctxt: dict[str, Any], beats: _Heartbeats,
                scope: Scope | None) -> None:
        """The sender thread sent the request."""
        self.wire_ctxt, self._beats = wire_ctxt, beats
        with self._lock:
            if not self._outcome:
                self._scope = scope
                return
        if scope is not None:  # the waiter already finished
            scope.close(self._outcome[0])

    def last_beat(self) -> float:
        """When the server was last heard of (the send's time before it is)."""
        return self._since if self._beats is None else self._beats.last

    def close(self, exc: BaseException | None) -> None:
        """The waiter finished (``exc``: how it failed): close the scope."""
        with self._lock:
            self._outcome.append(exc)
            scope, self._scope = self._scope, None
        if scope is not None:
            scope.close(exc)

