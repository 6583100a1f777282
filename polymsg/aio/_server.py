"""asyncio servers and listeners: the synchronous ones' dispatch, driven from a loop.

The driver's thread hands each message to the loop (one wake-up for a burst,
not one per message). On the loop, a message whose endpoint method is a
coroutine function runs there as a task; any other goes to the server's
bounded worker pool and is processed exactly as by the synchronous server.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from polymsg import _observe
from polymsg._exceptions import NotSupported
from polymsg._executor import Runner
from polymsg._listener import NotificationListener as _SyncListener
from polymsg._listener import NotificationResult, _log_endpoint_failure
from polymsg._rpc_server import RPCServer as _SyncServer
from polymsg._rpc_server import _CallMonitor, observe_request, reply_failure, reply_result
from polymsg._serializer import Serializer
from polymsg._target import Target
from polymsg._transport import Transport
from polymsg.driver import IncomingMessage

__all__ = ["NotificationListener", "RPCServer", "get_notification_listener", "get_rpc_server"]

LOG = logging.getLogger(__name__)

EXECUTORS = ("asyncio", "threading")


class _Server:
    """Lifecycle shared by :class:`RPCServer` and :class:`NotificationListener`."""

    _core: Runner

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[IncomingMessage] = deque()
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def transport(self) -> Transport:
        """The transport this server listens on."""
        return self._core.transport

    async def start(self) -> None:
        """Subscribe and start serving on the running loop. A no-op when running."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._core.start)  # declarations: network round trips
        self._started = True

    async def stop(self) -> None:
        """Stop taking new messages; those already taken still run (see :meth:`wait`)."""
        self._started = False
        await asyncio.to_thread(self._core.stop)

    async def wait(self) -> None:
        """Return once every message taken before :meth:`stop` has been processed
        (calls replied). Stops first if still running."""
        if self._started:
            await self.stop()
        self._drain()  # anything the driver handed over before it stopped
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._core.wait)

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
        await self.wait()

    def _deliver(self, incoming: IncomingMessage) -> None:
        """On the driver's thread: queue for the loop, waking it once per burst."""
        self._inbox.append(incoming)
        if self._scheduled:
            return
        self._scheduled = True
        try:
            if self._loop is None:  # cannot happen: set before the subscription exists
                raise RuntimeError("no loop")
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: let the transport keep them
            self._scheduled = False
            while self._inbox:
                self._inbox.popleft().requeue()

    def _drain(self) -> None:
        self._scheduled = False  # before reading: a message added from now on wakes us again
        inbox = self._inbox
        while inbox:
            incoming = inbox.popleft()
            try:
                handler = self._handler(incoming)
            except Exception:  # undecodable: the worker path logs and drops it
                handler = None
            if handler is None:
                Runner._on_message(self._core, incoming)  # the bounded worker pool
            else:
                task = asyncio.ensure_future(self._run(handler, incoming), loop=self._loop)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _handler(self, incoming: IncomingMessage) -> Any:
        """What the loop runs for ``incoming``, or None to run it on the worker pool."""
        raise NotImplementedError

    async def _run(self, handler: Any, incoming: IncomingMessage) -> None:
        raise NotImplementedError


class _RPCCore(_SyncServer):
    owner: RPCServer

    def _on_message(self, incoming: IncomingMessage) -> None:
        self.owner._deliver(incoming)


class RPCServer(_Server):
    """Serves ``endpoints`` for ``target`` on an event loop (see :func:`get_rpc_server`)."""

    _core: _RPCCore

    def __init__(self, transport: Transport, target: Target, endpoints: Sequence[Any], *,
                 serializer: Serializer | None = None, queue_ttl: float | None = None,
                 max_workers: int | None = None) -> None:
        super().__init__()
        self._core = core = _RPCCore(transport, target, endpoints, serializer=serializer,
                                     queue_ttl=queue_ttl, max_workers=max_workers)
        core.owner = self
        self._async: dict[Any, bool] = {}

    @property
    def target(self) -> Target:
        """The target served (``exchange`` filled in)."""
        return self._core.target

    def _handler(self, incoming: IncomingMessage) -> Any:
        message = incoming.message
        try:
            func = self._core._dispatcher.find(
                message["method"], message.get("namespace"), message.get("version"))
        except Exception:  # NoSuchMethod...: the worker path replies with it
            return None
        return func if self._is_async(func) else None

    def _is_async(self, func: Any) -> bool:
        """``inspect.iscoroutinefunction``, remembered per method's function (a bound
        method is new at each lookup; a class's methods are few)."""
        key = getattr(func, "__func__", None)
        if key is None:
            return inspect.iscoroutinefunction(func)
        found = self._async.get(key)
        if found is None:
            found = inspect.iscoroutinefunction(func)
            if len(self._async) < 1024:
                self._async[key] = found
        return found

    async def _run(self, handler: Any, incoming: IncomingMessage) -> None:
        try:
            incoming.acknowledge()  # at most once: taken before it runs
            if not _observe.OBSERVERS:
                await self._serve(handler, incoming)
                return
            scope = observe_request(self._core, incoming)
            try:
                failure = await self._serve(handler, incoming)
            except BaseException as exc:
                scope.close(exc)
                raise
            scope.close(failure)
        except Exception:
            LOG.exception("unexpected error processing a message; it was dropped")

    async def _serve(self, handler: Any, incoming: IncomingMessage) -> Exception | None:
        dispatcher = self._core._dispatcher
        monitor = _CallMonitor.start(incoming)
        try:
            user_ctxt, kwargs = dispatcher.arguments(incoming.ctxt, incoming.message)
            result = dispatcher.result(user_ctxt, await handler(user_ctxt, **kwargs))
        except Exception as exc:
            reply_failure(incoming, handler, exc, monitor)
            return exc
        reply_result(incoming, result, monitor)
        return None


class _ListenerCore(_SyncListener):
    owner: NotificationListener

    def _on_message(self, incoming: IncomingMessage) -> None:
        if self.owner._on_loop:
            self.owner._deliver(incoming)
        else:  # no coroutine method at all: straight to the worker pool
            super()._on_message(incoming)


class NotificationListener(_Server):
    """Delivers notifications on ``targets`` to ``endpoints`` on an event loop
    (see :func:`get_notification_listener`)."""

    _core: _ListenerCore

    def __init__(self, transport: Transport, targets: Sequence[Target], endpoints: Sequence[Any],
                 *, pool: str | None = None, allow_requeue: bool = False,
                 serializer: Serializer | None = None, max_workers: int | None = None) -> None:
        super().__init__()
        self._core = core = _ListenerCore(transport, targets, endpoints, pool=pool,
                                          allow_requeue=allow_requeue, serializer=serializer,
                                          max_workers=max_workers)
        core.owner = self
        # priorities with at least one coroutine method run on the loop
        self._on_loop = {priority for priority, routes in core._routes.items()
                         if any(inspect.iscoroutinefunction(m) for _, m, _ in routes)}

    @property
    def targets(self) -> list[Target]:
        """The targets listened to (``exchange`` filled in)."""
        return self._core.targets

    @property
    def pool(self) -> str | None:
        """The listener pool (``None``: the shared one)."""
        return self._core.pool

    def _handler(self, incoming: IncomingMessage) -> Any:
        priority = str(incoming.message.get("priority", "")).lower()
        return True if priority in self._on_loop else None

    async def _run(self, handler: Any, incoming: IncomingMessage) -> None:
        core = self._core
        try:
            if not _observe.OBSERVERS:
                await self._dispatch(incoming)
                return
            scope = core._observed(incoming)
            try:
                failure = await self._dispatch(incoming)
            except BaseException as exc:
                scope.close(exc)
                raise
            scope.close(failure)
        except Exception:
            LOG.exception("unexpected error processing a notification; it was dropped")

    async def _dispatch(self, incoming: IncomingMessage) -> Exception | None:
        """Deliver to the endpoints and settle; the last exception one raised (logged)."""
        core = self._core
        result, failure = NotificationResult.HANDLED, None
        for endpoint, method, args in core._deliveries(incoming):
            try:
                if inspect.iscoroutinefunction(method):
                    outcome = await method(*args)
                else:  # a plain method next to coroutine ones: off the loop
                    outcome = await asyncio.to_thread(method, *args)
            except Exception as exc:
                _log_endpoint_failure(endpoint, args)
                failure = exc
                continue
            if outcome == NotificationResult.REQUEUE:
                result = NotificationResult.REQUEUE
        core._settle(incoming, result)
        return failure


def _check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise NotSupported(f"executor {executor!r} is not supported by polymsg.aio; "
                           "use 'asyncio'")


def get_rpc_server(transport: Transport, target: Target, endpoints: Sequence[Any], *,
                   executor: str = "asyncio", serializer: Serializer | None = None,
                   queue_ttl: float | None = None, max_workers: int | None = None) -> RPCServer:
    """An asyncio RPC server for ``endpoints`` on ``target`` (needs ``topic`` and
    ``server``); see :func:`polymsg.get_rpc_server`.

    ``async def`` endpoint methods run on the loop that called ``start()``;
    plain ones on a pool of at most ``max_workers`` threads (default
    ``[DEFAULT] executor_thread_pool_size``). Use ``async with server:`` or
    ``await server.start()`` ... ``await server.stop()``; ``await server.wait()``.
    """
    _check_executor(executor)
    return RPCServer(transport, target, endpoints, serializer=serializer, queue_ttl=queue_ttl,
                     max_workers=max_workers)


def get_notification_listener(transport: Transport, targets: Sequence[Target],
                              endpoints: Sequence[Any], *, executor: str = "asyncio",
                              pool: str | None = None, allow_requeue: bool = False,
                              serializer: Serializer | None = None,
                              max_workers: int | None = None) -> NotificationListener:
    """An asyncio notification listener; see :func:`polymsg.get_notification_listener`.

    A priority any endpoint serves with an ``async def`` method is delivered on
    the loop (plain methods beside it run in a thread); other priorities go to
    the bounded worker pool, as in the synchronous listener.
    """
    _check_executor(executor)
    return NotificationListener(transport, targets, endpoints, pool=pool,
                                allow_requeue=allow_requeue, serializer=serializer,
                                max_workers=max_workers)
