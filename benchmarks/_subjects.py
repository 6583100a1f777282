"""The RPC libraries under test, each behind the :class:`RpcSubject` shape.

* :class:`PolymsgLocal`: polymsg with its server in this process (``memory://``);
* :class:`PolymsgRemote`: polymsg with its server in a child process;
* :class:`OsloRemote`: oslo.messaging, server in a child process.
"""

from __future__ import annotations

import importlib
import logging
import uuid
import warnings
from typing import Any, TypeVar

import polymsg
from benchmarks._child import Child
from benchmarks._servers import (
    EVENT_TYPE,
    Counters,
    NotifyEndpoint,
    RpcEndpoint,
    oslo_conf,
)

__all__ = ["OsloRemote", "PolymsgLocal", "PolymsgRemote", "quiet_oslo"]

#: Seconds a benchmark call may wait for its reply.
CALL_TIMEOUT = 60.0


def quiet_oslo() -> Any:
    """Import oslo.messaging without its import-time deprecation warnings, and keep
    its warnings (a leak warning about its reply queues under 16 threads) off the
    benchmark's progress display."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        om = importlib.import_module("oslo_messaging")
    logging.getLogger("oslo_messaging").setLevel(logging.ERROR)
    return om


def _topic() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


_S = TypeVar("_S", bound="_Subject")


class _Subject:
    """What every subject does with its ``client`` and ``notifier`` (polymsg's and
    oslo.messaging's take the same calls), and context manager plumbing."""

    client: Any
    notifier: Any

    def call(self, payload: str) -> Any:
        return self.client.call({}, "echo", payload=payload)

    def cast(self, payload: str) -> None:
        self.client.cast({}, "tick", payload=payload)

    def notify(self, payload: str) -> None:
        self.notifier.info({}, EVENT_TYPE, payload)

    def close(self) -> None:
        """Release everything the subject holds."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _PolymsgClient(_Subject):
    """The client half of a polymsg subject."""

    def __init__(self, url: str, topic: str) -> None:
        self.transport = polymsg.get_transport(url)
        self.notify_supported = "notify" in self.transport.capabilities
        self.client = polymsg.RPCClient(self.transport, polymsg.Target(topic=topic),
                                        timeout=CALL_TIMEOUT)
        self.notifier = polymsg.Notifier(self.transport, "bench",
                                         topics=(f"{topic}-notifications",))

    def close(self) -> None:
        self.transport.cleanup()


class PolymsgLocal(_PolymsgClient):
    """polymsg with server and listener in this process (for ``memory://``)."""

    def __init__(self, url: str) -> None:
        topic = _topic()
        super().__init__(url, topic)
        self.counters = Counters()
        self._runners: list[Any] = [polymsg.get_rpc_server(
            self.transport, polymsg.Target(topic=topic, server="bench"),
            [RpcEndpoint(self.counters)])]
        if self.notify_supported:
            self._runners.append(polymsg.get_notification_listener(
                self.transport, [polymsg.Target(topic=f"{topic}-notifications")],
                [NotifyEndpoint(self.counters)]))
        for runner in self._runners:
            runner.start()

    def reset(self) -> None:
        self.counters.reset()

    def wait_executed(self, casts: int, notes: int, timeout: float) -> tuple[int, int]:
        return self.counters.wait(casts, notes, timeout)

    def server_rss(self) -> int | None:
        return None

    def server_cpu(self) -> float | None:
        return None

    def close(self) -> None:
        for runner in self._runners:
            runner.stop()
        for runner in self._runners:
            runner.wait()
        super().close()


class _RemoteServer(_Subject):
    """A subject whose server runs in ``_child``: its counters are asked over RPC
    (polymsg's and oslo.messaging's clients take the same calls), its figures
    read from ``/proc``."""

    _child: Child
    #: The RPC topic (its notifications go to ``<topic>-notifications``).
    topic: str

    def reset(self) -> None:
        self.client.call({}, "reset")

    def wait_executed(self, casts: int, notes: int, timeout: float) -> tuple[int, int]:
        done = self.client.prepare(timeout=timeout + CALL_TIMEOUT).call(
            {}, "wait_executed", casts=casts, notes=notes, timeout=timeout)
        return int(done[0]), int(done[1])

    def server_rss(self) -> int | None:
        return self._child.rss()

    def server_cpu(self) -> float | None:
        return self._child.cpu()


class PolymsgRemote(_PolymsgClient, _RemoteServer):
    """polymsg with its server and listener in a child process."""

    def __init__(self, url: str) -> None:
        topic = self.topic = _topic()
        self._child = Child("serve", library="polymsg", url=url, topic=topic)
        try:
            super().__init__(url, topic)
        except BaseException:
            self._child.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._child.close()


class OsloRemote(_RemoteServer):
    """oslo.messaging on RabbitMQ, its server and listener in a child process."""

    notify_supported = True

    def __init__(self, url: str, rabbit: dict[str, Any] | None = None,
                 exchange: str | None = None) -> None:
        """``rabbit``: ``[oslo_messaging_rabbit]`` options for both sides; ``exchange``:
        their ``control_exchange`` (oslo.messaging's default unless given)."""
        om = quiet_oslo()
        topic = self.topic = _topic()
        rabbit = dict(rabbit or {})
        self._child = Child("serve", library="oslo", url=url, topic=topic, rabbit=rabbit,
                            exchange=exchange)
        try:
            conf = oslo_conf(rabbit, exchange)
            self._transport = om.get_rpc_transport(conf, url=url)
            self._notes = om.get_notification_transport(conf, url=url)
            self.client = om.get_rpc_client(self._transport, om.Target(topic=topic),
                                            timeout=CALL_TIMEOUT)
            self.notifier = om.Notifier(self._notes, publisher_id="bench", driver="messaging",
                                        topics=[f"{topic}-notifications"])
        except BaseException:
            self._child.close()
            raise

    def close(self) -> None:
        try:
            self._transport.cleanup()
            self._notes.cleanup()
        finally:
            self._child.close()
