"""The conformance scenarios driven through :mod:`polymsg.aio`.

:class:`AsyncConformance` swaps the harness's API for :class:`LoopAPI`: the
tests stay synchronous, but every client, notifier, server and listener they
make is a :mod:`polymsg.aio` object living on an event loop in a thread of
its own, reached through thin blocking facades. Endpoints given to servers
are wrapped so each public method is an ``async def`` (run on the loop);
notification endpoints stay plain (run on the worker pool). A driver's test
module adds one class::

    class TestMyDriverAioConformance(AsyncConformance, TestMyDriverConformance):
        pass
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import pytest

import polymsg
from polymsg import aio
from polymsg.testing._fixtures import Harness

__all__ = ["AsyncConformance", "LoopAPI"]

T = TypeVar("T")

#: Endpoint methods that wait on a threading.Event (RPCEndpoint.block): run in a
#: thread by their async wrapper, so the loop keeps serving meanwhile.
_BLOCKING = frozenset({"block"})


class LoopAPI:
    """``RPCClient``, ``Notifier``, ``get_rpc_server`` and ``get_notification_listener``
    as the harness calls them, made with :mod:`polymsg.aio` on a private loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="aio-blocking")
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="polymsg-aio-conformance")
        self._thread.start()
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its outcome."""
        if self._closed:
            coro.close()
            raise RuntimeError("the conformance loop is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
        self._threads.shutdown(wait=True)

    # -- what the harness calls --------------------------------------------------

    def RPCClient(self, transport: polymsg.Transport, target: polymsg.Target,
                  **kwargs: Any) -> _Client:
        return _Client(self, aio.RPCClient(transport, target, **kwargs))

    def Notifier(self, transport: polymsg.Transport, publisher_id: str,
                 **kwargs: Any) -> _Notifier:
        return _Notifier(self, aio.Notifier(transport, publisher_id, **kwargs))

    def get_rpc_server(self, transport: polymsg.Transport, target: polymsg.Target,
                       endpoints: Sequence[Any], **kwargs: Any) -> _Runner:
        kwargs.pop("executor", None)
        wrapped = [_AsyncEndpoint(self, endpoint) for endpoint in endpoints]
        return _Runner(self, aio.get_rpc_server(transport, target, wrapped, **kwargs))

    def get_notification_listener(self, transport: polymsg.Transport,
                                  targets: Sequence[polymsg.Target], endpoints: Sequence[Any],
                                  **kwargs: Any) -> _Runner:
        kwargs.pop("executor", None)
        return _Runner(self, aio.get_notification_listener(transport, targets, endpoints,
                                                           **kwargs))


class _AsyncEndpoint:
    """An endpoint whose public methods are ``async def`` versions of the wrapped one's
    (attributes, ``target`` and ``expected_exceptions`` marks read through)."""

    def __init__(self, api: LoopAPI, endpoint: Any) -> None:
        self._api = api
        self._endpoint = endpoint

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._endpoint, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            return value
        if name in _BLOCKING:
            threads = self._api._threads

            @functools.wraps(value)
            async def off_loop(*args: Any, **kwargs: Any) -> Any:
                call = functools.partial(value, *args, **kwargs)
                return await asyncio.get_running_loop().run_in_executor(threads, call)
            return off_loop

        @functools.wraps(value)
        async def on_loop(*args: Any, **kwargs: Any) -> Any:
            return value(*args, **kwargs)
        return on_loop


class _Client:
    def __init__(self, api: LoopAPI, client: aio.RPCClient) -> None:
        self._api = api
        self._client = client

    def call(self, ctxt: Any, method: str, **kwargs: Any) -> Any:
        return self._api.run(self._client.call(ctxt, method, **kwargs))

    def cast(self, ctxt: Any, method: str, **kwargs: Any) -> None:
        self._api.run(self._client.cast(ctxt, method, **kwargs))

    def prepare(self, **changes: Any) -> _Client:
        return _Client(self._api, self._client.prepare(**changes))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _Notifier:
    def __init__(self, api: LoopAPI, notifier: aio.Notifier) -> None:
        self._api = api
        self._notifier = notifier

    def prepare(self, **changes: Any) -> _Notifier:
        return _Notifier(self._api, self._notifier.prepare(**changes))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._notifier, name)
        if not callable(value):
            return value

        def send(*args: Any, **kwargs: Any) -> Any:
            return self._api.run(value(*args, **kwargs))
        return send


class _Runner:
    def __init__(self, api: LoopAPI, runner: aio.RPCServer | aio.NotificationListener) -> None:
        self._api = api
        self._runner = runner

    def start(self) -> None:
        self._api.run(self._runner.start())

    def stop(self) -> None:
        self._api.run(self._runner.stop())

    def wait(self) -> None:
        self._api.run(self._runner.wait())

    def __enter__(self) -> _Runner:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


class AsyncConformance:
    """Mix in (first) to a driver's conformance class to run the scenarios the
    harness builds through :mod:`polymsg.aio` instead of the synchronous API."""

    @pytest.fixture(autouse=True)
    def _through_aio(self, harness: Harness) -> Iterator[LoopAPI]:
        api = LoopAPI()
        harness.api = api
        try:
            yield api
        finally:
            # Everything on the loop ends before the loop does; the harness's own
            # teardown then finds nothing left to stop.
            harness.release.set()
            try:
                harness.stop_all()
                if harness._pool is not None:
                    harness._pool.shutdown(wait=True)
                    harness._pool = None
            finally:
                api.close()
