"""The fixtures base every conformance mixin builds on.

A driver's test module subclasses :class:`~polymsg.testing.ConformanceTests`
(or individual mixins) and sets ``url``; everything a test creates through
the :class:`Harness` is stopped and cleaned up when the test ends, and every
test gets its own topic so tests never see each other's messages on a
shared broker.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, Protocol

import pytest
from oslo_config import cfg

import polymsg
from polymsg.testing._support import NotificationEndpoint, Recorder, RPCEndpoint

__all__ = ["DriverFixtures", "Harness", "unique_name"]


class _Runner(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wait(self) -> None: ...


def unique_name(kind: str) -> str:
    """A name no other test uses, e.g. ``conformance-topic-1f2e3d4c5b6a``."""
    return f"conformance-{kind}-{uuid.uuid4().hex[:12]}"


class Harness:
    """Creates transports, servers, listeners, clients and notifiers for one test.

    Servers and listeners are stopped and waited for, and transports cleaned
    up, by :meth:`close` (the ``harness`` fixture calls it at teardown).
    ``calls`` records every RPC endpoint execution, ``notes`` every
    notification; ``release`` unblocks :meth:`RPCEndpoint.block`. ``api``
    makes the clients, servers and listeners (``polymsg`` itself, or a
    stand-in driving another API, such as :class:`AsyncConformance`'s).
    """

    api: Any = polymsg

    def __init__(self, url: str, *, conf_factory: Callable[[], cfg.ConfigOpts | None],
                 wait_timeout: float) -> None:
        self.url = url
        self.wait_timeout = wait_timeout
        self.topic = unique_name("topic")
        self.calls = Recorder()
        self.notes = Recorder()
        self.release = threading.Event()
        self._conf_factory = conf_factory
        self._transports: list[polymsg.Transport] = []
        self._runners: list[_Runner] = []
        self._pool: ThreadPoolExecutor | None = None
        self.transport = self.new_transport()

    def new_transport(self, url: str | None = None, **kwargs: Any) -> polymsg.Transport:
        """Another transport, on the same URL unless ``url`` is given
        (``kwargs`` go to ``get_transport``)."""
        transport = polymsg.get_transport(url or self.url, conf=self._conf_factory(), **kwargs)
        self._transports.append(transport)
        return transport

    def endpoint(self, server: str = "server-1",
                 target: polymsg.Target | None = None) -> RPCEndpoint:
        """An :class:`RPCEndpoint` recording on ``calls`` (``target``: its version)."""
        return RPCEndpoint(server, self.calls, self.release, ceiling=self.wait_timeout * 3,
                           target=target)

    def rpc_server(self, server: str = "server-1", *, endpoints: Sequence[object] | None = None,
                   topic: str | None = None, exchange: str | None = None,
                   transport: polymsg.Transport | None = None, start: bool = True,
                   **kwargs: Any) -> polymsg.RPCServer:
        """An RPC server named ``server`` on this test's topic, started unless
        ``start=False``; ``kwargs`` go to ``get_rpc_server``."""
        target = polymsg.Target(topic=topic or self.topic, server=server, exchange=exchange)
        if endpoints is None:
            endpoints = [self.endpoint(server)]
        rpc_server: polymsg.RPCServer = self.api.get_rpc_server(
            transport or self.transport, target, list(endpoints), **kwargs)
        self._runners.append(rpc_server)
        if start:
            rpc_server.start()
        return rpc_server

    def client(self, *, transport: polymsg.Transport | None = None, topic: str | None = None,
               server: str | None = None, fanout: bool = False, exchange: str | None = None,
               namespace: str | None = None, version: str | None = None,
               timeout: float | None = None, **kwargs: Any) -> polymsg.RPCClient:
        """An RPC client for this test's topic; ``timeout`` defaults to the
        harness's ``wait_timeout`` so a broken driver fails instead of hanging."""
        target = polymsg.Target(topic=topic or self.topic, server=server, fanout=fanout,
                                exchange=exchange, namespace=namespace, version=version)
        client: polymsg.RPCClient = self.api.RPCClient(
            transport or self.transport, target,
            timeout=self.wait_timeout if timeout is None else timeout, **kwargs)
        return client

    def notifier(self, publisher_id: str = "conformance.publisher", *,
                 transport: polymsg.Transport | None = None,
                 topics: Sequence[str] | None = None, **kwargs: Any) -> polymsg.Notifier:
        """A notifier publishing on this test's topic."""
        notifier: polymsg.Notifier = self.api.Notifier(
            transport or self.transport, publisher_id, topics=tuple(topics or (self.topic,)),
            **kwargs)
        return notifier

    def listener(self, endpoints: Sequence[object] | None = None, *,
                 transport: polymsg.Transport | None = None,
                 topics: Sequence[str] | None = None, start: bool = True,
                 **kwargs: Any) -> polymsg.NotificationListener:
        """A notification listener on this test's topic, started unless
        ``start=False``; the default endpoint records on ``notes``."""
        if endpoints is None:
            endpoints = [NotificationEndpoint("listener-1", self.notes)]
        targets = [polymsg.Target(topic=topic) for topic in (topics or (self.topic,))]
        listener: polymsg.NotificationListener = self.api.get_notification_listener(
            transport or self.transport, targets, list(endpoints), **kwargs)
        self._runners.append(listener)
        if start:
            listener.start()
        return listener

    def stop(self, *runners: _Runner) -> None:
        """Stop ``runners``, then wait for each (what teardown would do, now)."""
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.wait()
            if runner in self._runners:
                self._runners.remove(runner)

    def stop_all(self) -> None:
        """Stop and wait for every server and listener started so far."""
        self.stop(*self._runners)

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn`` on a helper thread; the harness joins it at teardown."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="conformance")
        return self._pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        """Stop everything this harness started and clean up its transports."""
        self.release.set()
        errors: list[BaseException] = []
        _each(reversed(self._runners), lambda runner: runner.stop(), errors)
        _each(reversed(self._runners), lambda runner: runner.wait(), errors)
        self._runners.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        _each(self._transports, lambda transport: transport.cleanup(), errors)
        self._transports.clear()
        if errors:
            raise errors[0]


def _each(items: Iterable[Any], action: Callable[[Any], None],
          errors: list[BaseException]) -> None:
    """Apply ``action`` to every item, collecting (not stopping at) errors."""
    for item in list(items):
        try:
            action(item)
        except Exception as exc:  # teardown goes on; the first error is re-raised
            errors.append(exc)


class DriverFixtures:
    """Fixtures and knobs a driver's conformance test class fills in.

    Set ``url`` (e.g. ``"memory://"``, ``"rabbit://guest:guest@host:5672/"``),
    or override :meth:`get_transport_url` (or the ``transport_url`` fixture)
    to compute one per test, for example a fresh virtual host. Set
    ``capabilities`` to the set the driver is meant to declare: the suite then
    checks the transport declares exactly that, so a capability dropped by
    mistake fails loudly instead of skipping its tests.

    Timing knobs (seconds): ``wait_timeout`` is the ceiling for anything that
    should happen (a delivery, a reply); ``short_timeout`` the call timeout
    where a timeout is expected; ``timeout_margin`` how late a timeout may
    fire; ``ttl`` the TTL hint TTL tests use and ``ttl_grace`` how long past
    it they wait for the transport to expire things.
    """

    url: ClassVar[str | None] = None
    capabilities: ClassVar[frozenset[str] | None] = None
    wait_timeout: ClassVar[float] = 10.0
    short_timeout: ClassVar[float] = 1.0
    timeout_margin: ClassVar[float] = 2.0
    ttl: ClassVar[float] = 1.0
    ttl_grace: ClassVar[float] = 1.5

    def get_transport_url(self) -> str:
        """The URL of this test's transports.

        Defaults to ``url``; a bare ``memory://`` becomes a bus of its own
        per test.
        """
        if not self.url:
            raise pytest.UsageError(
                f"{type(self).__name__} must set `url` or override get_transport_url()"
            )
        return isolate_memory_url(self.url)

    def make_conf(self) -> cfg.ConfigOpts | None:
        """The ``conf`` each transport is created with (``None``: a private default)."""
        return None

    def get_unreachable_url(self) -> str | None:
        """A URL of this driver whose peer or broker cannot be reached, for the
        ``retry`` tests; ``None`` skips them."""
        return None

    def thread_may_linger(self, thread: threading.Thread) -> bool:
        """True for a process-wide thread the driver keeps after a transport's
        cleanup on purpose (the thread-leak test then ignores it)."""
        return False

    def require(self, transport: polymsg.Transport, *capabilities: str) -> None:
        """Skip the test unless ``transport`` declares every capability."""
        missing = sorted(set(capabilities) - set(transport.capabilities))
        if missing:
            pytest.skip(f"driver does not declare {', '.join(missing)}")

    @pytest.fixture
    def transport_url(self) -> str:
        """This test's transport URL (see :meth:`get_transport_url`)."""
        return self.get_transport_url()

    @pytest.fixture
    def harness(self, transport_url: str) -> Iterator[Harness]:
        """A :class:`Harness` on ``transport_url``, closed at teardown."""
        harness = Harness(transport_url, conf_factory=self.make_conf,
                          wait_timeout=self.wait_timeout)
        try:
            yield harness
        finally:
            harness.close()

    @pytest.fixture
    def transport(self, harness: Harness) -> polymsg.Transport:
        """The harness's main transport."""
        return harness.transport


def isolate_memory_url(url: str) -> str:
    """Give a bare ``memory://`` URL a bus name of its own; other URLs unchanged."""
    parsed = polymsg.TransportURL.parse(url)
    if parsed.transport == "memory" and not parsed.hosts:
        return f"memory://{unique_name('bus')}"
    return url
