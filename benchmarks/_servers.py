"""The server side of the RPC benchmarks: endpoints and the ``serve`` child role.

One server process hosts an RPC server (``echo`` for calls, ``tick`` for
casts, ``wait_executed`` for the client to learn when its casts and
notifications have run) and a notification listener, for polymsg on any
URL or for oslo.messaging on RabbitMQ.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from typing import Any

from benchmarks._child import commands, emit, rss_bytes

__all__ = ["Counters", "NotifyEndpoint", "RpcEndpoint", "memory_rss", "oslo_conf", "serve"]

#: Event type of the benchmark's notifications.
EVENT_TYPE = "bench.event"


class Counters:
    """How many casts and notifications ran; waiters are woken only at their target."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._casts = 0
        self._notes = 0
        self._want = (float("inf"), float("inf"))

    def cast_done(self) -> None:
        """Count one executed cast."""
        with self._cond:
            self._casts += 1
            if self._casts >= self._want[0] and self._notes >= self._want[1]:
                self._cond.notify_all()

    def note_done(self) -> None:
        """Count one received notification."""
        with self._cond:
            self._notes += 1
            if self._casts >= self._want[0] and self._notes >= self._want[1]:
                self._cond.notify_all()

    def reset(self) -> None:
        """Start counting from zero."""
        with self._cond:
            self._casts = self._notes = 0

    def wait(self, casts: int, notes: int, timeout: float) -> tuple[int, int]:
        """Block until at least that many ran (or ``timeout``); the counts seen."""
        with self._cond:
            self._want = (casts, notes)
            self._cond.wait_for(lambda: self._casts >= casts and self._notes >= notes, timeout)
            self._want = (float("inf"), float("inf"))
            return self._casts, self._notes


class RpcEndpoint:
    """What the benchmark's RPC server serves."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def echo(self, ctxt: dict[str, Any], payload: Any) -> Any:
        """Send the payload back (a call's round trip carries it both ways)."""
        return payload

    def tick(self, ctxt: dict[str, Any], payload: Any) -> None:
        """Count one cast."""
        self._counters.cast_done()

    def reset(self, ctxt: dict[str, Any]) -> None:
        """Zero the counters."""
        self._counters.reset()

    def wait_executed(self, ctxt: dict[str, Any], casts: int, notes: int,
                      timeout: float) -> list[int]:
        """Return once ``casts`` casts and ``notes`` notifications ran: [casts, notes]."""
        return list(self._counters.wait(casts, notes, timeout))


class NotifyEndpoint:
    """Counts ``info`` notifications."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        """Count one notification."""
        self._counters.note_done()


def oslo_conf(rabbit: dict[str, Any] | None = None, exchange: str | None = None) -> Any:
    """A private ConfigOpts oslo.messaging 18 runs on (it registers its tracing
    and metrics options on the global CONF only); ``rabbit`` overrides options of
    its ``[oslo_messaging_rabbit]`` group, ``exchange`` its ``control_exchange``."""
    from oslo_config import cfg

    metrics = importlib.import_module("oslo_messaging._metrics.client")
    tracing = importlib.import_module("oslo_messaging._tracing.client")
    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    if rabbit:
        for module in ("impl_rabbit", "amqp"):
            opts = importlib.import_module(f"oslo_messaging._drivers.{module}")
            conf.register_opts(getattr(opts, f"{module.removeprefix('impl_')}_opts"),
                               group="oslo_messaging_rabbit")
        for name, value in rabbit.items():
            conf.set_override(name, value, group="oslo_messaging_rabbit")
    if exchange:
        conf.register_opts(importlib.import_module("oslo_messaging.transport")._transport_opts)
        conf.set_override("control_exchange", exchange)
    return conf


def _start_polymsg(url: str, topic: str, counters: Counters) -> tuple[Any, list[Any]]:
    import polymsg

    transport = polymsg.get_transport(url)
    runners: list[Any] = [polymsg.get_rpc_server(
        transport, polymsg.Target(topic=topic, server="bench"), [RpcEndpoint(counters)])]
    if "notify" in transport.capabilities:
        runners.append(polymsg.get_notification_listener(
            transport, [polymsg.Target(topic=f"{topic}-notifications")],
            [NotifyEndpoint(counters)]))
    return transport, runners


def _start_oslo(url: str, topic: str, counters: Counters, rabbit: dict[str, Any] | None,
                exchange: str | None) -> tuple[Any, list[Any]]:
    om = importlib.import_module("oslo_messaging")
    conf = oslo_conf(rabbit, exchange)
    transport = om.get_rpc_transport(conf, url=url)
    notes = om.get_notification_transport(conf, url=url)
    runners = [
        om.get_rpc_server(transport, om.Target(topic=topic, server="bench"),
                          [RpcEndpoint(counters)], executor="threading"),
        om.get_notification_listener(notes, [om.Target(topic=f"{topic}-notifications")],
                                     [NotifyEndpoint(counters)], executor="threading"),
    ]
    return _Both(transport, notes), runners


class _Both:
    def __init__(self, *transports: Any) -> None:
        self._transports = transports

    def cleanup(self) -> None:
        for transport in self._transports:
            transport.cleanup()


def serve(library: str, url: str, topic: str, rabbit: dict[str, Any] | None = None,
          exchange: str | None = None) -> None:
    """Child role: serve ``topic`` with ``library`` (``polymsg`` or ``oslo``, which
    takes ``rabbit`` and ``exchange``: see :func:`oslo_conf`) until stdin ends."""
    counters = Counters()
    if library == "oslo":
        transport, runners = _start_oslo(url, topic, counters, rabbit, exchange)
    else:
        transport, runners = _start_polymsg(url, topic, counters)
    for runner in runners:
        runner.start()
    emit("ready", notify=len(runners) > 1)
    for _ in commands():
        pass
    for runner in runners:
        runner.stop()
    for runner in runners:
        runner.wait()
    transport.cleanup()


def memory_rss(batch: int, batches: int, payload: int) -> None:
    """Child role: casts to a memory:// server in this same process, ``batch`` at a
    time, reporting this process's RSS after the first batch and after the last."""
    import polymsg

    counters = Counters()
    with polymsg.get_transport("memory://bench-rss") as transport:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic="rss", server="bench"), [RpcEndpoint(counters)])
        with server:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="rss"), timeout=120)
            emit("ready")
            body = "x" * payload
            started = time.perf_counter()
            for n in range(1, batches + 1):
                for _ in range(batch):
                    client.cast({}, "tick", payload=body)
                done, _ = counters.wait(n * batch, 0, 300)
                if done < n * batch:
                    raise RuntimeError(f"only {done} of {n * batch} casts ran within 300 s")
                if n == 1:
                    emit("rss", casts=done, rss=rss_bytes(os.getpid()))
            emit("rss", casts=batches * batch, rss=rss_bytes(os.getpid()),
                 seconds=time.perf_counter() - started)
