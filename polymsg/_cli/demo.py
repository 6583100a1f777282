"""``polymsg demo``: every messaging shape on one transport, narrated."""

from __future__ import annotations

import queue
import uuid
from typing import Any

import click

import polymsg
from polymsg._cli.errors import CLIError

__all__ = ["demo"]

RPC_TOPIC_PREFIX = "polymsg_demo"
NOTIFY_TOPIC = "polymsg_demo_notifications"
SERVERS = ("alpha", "beta")


class DemoError(CLIError):
    """Something the demo expected did not happen in time."""


class Recorder:
    """Collects what servers and listeners did, for the main thread to print.

    Only events of this run (matched by ``run_id``) are kept, so a message
    left on a broker by an earlier run never confuses the narration.
    """

    def __init__(self, run_id: str, wait: float) -> None:
        self.run_id = run_id
        self.wait = wait
        self.events: queue.Queue[str] = queue.Queue()

    def record(self, ctxt: dict[str, Any], line: str) -> None:
        if ctxt.get("demo_run") == self.run_id:
            self.events.put(line)

    def expect(self, count: int, what: str) -> list[str]:
        """The next ``count`` events, sorted; :class:`DemoError` if they do not come."""
        lines = []
        for _ in range(count):
            try:
                lines.append(self.events.get(timeout=self.wait))
            except queue.Empty:
                raise DemoError(
                    f"{what}: expected {count} event(s) within {self.wait:g} s, got {len(lines)}"
                ) from None
        return sorted(lines)


class DemoEndpoint:
    """The RPC endpoint each demo server exposes."""

    def __init__(self, server: str, recorder: Recorder) -> None:
        self.server = server
        self.recorder = recorder

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        self.recorder.record(ctxt, f"server {self.server}: add(a={a}, b={b})")
        return a + b

    def whoami(self, ctxt: dict[str, Any]) -> str:
        self.recorder.record(ctxt, f"server {self.server}: whoami()")
        return self.server

    @polymsg.expected_exceptions(ZeroDivisionError)
    def divide(self, ctxt: dict[str, Any], a: float, b: float) -> float:
        self.recorder.record(ctxt, f"server {self.server}: divide(a={a}, b={b})")
        return a / b

    def log_event(self, ctxt: dict[str, Any], text: str) -> None:
        self.recorder.record(ctxt, f"server {self.server}: log_event(text={text!r})")

    def reload(self, ctxt: dict[str, Any]) -> None:
        self.recorder.record(ctxt, f"server {self.server}: reload()")


class DemoNotificationEndpoint:
    """Listens to every priority the demo sends."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def _seen(self, priority: str, ctxt: dict[str, Any], publisher_id: str, event_type: str,
              payload: Any) -> None:
        self.recorder.record(
            ctxt, f"listener: {priority} {event_type} from {publisher_id}: {payload}")

    def info(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any,
             metadata: dict[str, Any]) -> None:
        self._seen("INFO", ctxt, publisher_id, event_type, payload)

    def warn(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any,
             metadata: dict[str, Any]) -> None:
        self._seen("WARN", ctxt, publisher_id, event_type, payload)

    def error(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any,
              metadata: dict[str, Any]) -> None:
        self._seen("ERROR", ctxt, publisher_id, event_type, payload)


def _say(text: str) -> None:
    click.echo(text)


def _show(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"    {line}")


class Demo:
    """One run of the demo against one transport."""

    def __init__(self, transport: polymsg.Transport, wait: float) -> None:
        self.transport = transport
        self.run_id = uuid.uuid4().hex[:12]
        self.topic = f"{RPC_TOPIC_PREFIX}_{self.run_id}"
        self.recorder = Recorder(self.run_id, wait)
        self.ctxt = {"demo_run": self.run_id, "user": "demo"}
        self.counts = {"calls": 0, "casts": 0, "fanouts": 0, "notifications": 0}
        self.runners: list[polymsg.RPCServer | polymsg.NotificationListener] = []

    def has(self, capability: str, what: str) -> bool:
        if capability in self.transport.capabilities:
            return True
        _say(f"  (skipped {what}: the driver does not declare {capability!r})")
        return False

    def run(self) -> None:
        caps = ", ".join(sorted(self.transport.capabilities)) or "none"
        _say(f"transport {self.transport.url} (capabilities: {caps})")
        try:
            if self.has("rpc", "RPC"):
                self.start_servers()
                self.rpc()
            if self.has("notify", "notifications"):
                self.notifications()
        finally:
            self.stop()
        c = self.counts
        _say(f"demo finished: {c['calls']} calls, {c['casts']} cast, {c['fanouts']} fanout, "
             f"{c['notifications']} notifications")

    def start_servers(self) -> None:
        for name in SERVERS:
            target = polymsg.Target(topic=self.topic, server=name)
            server = polymsg.get_rpc_server(
                self.transport, target, [DemoEndpoint(name, self.recorder)])
            server.start()
            self.runners.append(server)
        _say(f"started RPC servers {' and '.join(SERVERS)} on topic {self.topic!r}")

    def rpc(self) -> None:
        client = polymsg.RPCClient(self.transport, polymsg.Target(topic=self.topic), timeout=30)
        result = client.call(self.ctxt, "add", a=2, b=3)
        _say(f"call add(a=2, b=3) on any server -> {result}")
        _show(self.recorder.expect(1, "call add"))
        result = client.prepare(server="beta").call(self.ctxt, "whoami")
        _say(f"call whoami() on server 'beta' -> {result!r}")
        _show(self.recorder.expect(1, "call whoami"))
        try:
            client.call(self.ctxt, "divide", a=1, b=0)
        except ZeroDivisionError as exc:
            _say(f"call divide(a=1, b=0) -> raised ZeroDivisionError({str(exc)!r}) from the server")
        else:
            raise DemoError("divide by zero did not raise ZeroDivisionError")
        _show(self.recorder.expect(1, "call divide"))
        self.counts["calls"] += 3
        client.cast(self.ctxt, "log_event", text="hello")
        _say("cast log_event(text='hello') to one server (no reply)")
        _show(self.recorder.expect(1, "cast log_event"))
        self.counts["casts"] += 1
        if self.has("fanout", "fanout"):
            client.prepare(fanout=True).cast(self.ctxt, "reload")
            _say(f"fanout cast reload() to every server of {self.topic!r}")
            _show(self.recorder.expect(len(SERVERS), "fanout reload"))
            self.counts["fanouts"] += 1

    def notifications(self) -> None:
        listener = polymsg.get_notification_listener(
            self.transport, [polymsg.Target(topic=NOTIFY_TOPIC)],
            [DemoNotificationEndpoint(self.recorder)])
        listener.start()
        self.runners.append(listener)
        _say(f"started a notification listener on topic {NOTIFY_TOPIC!r}")
        notifier = polymsg.Notifier(self.transport, "demo.host1", topics=(NOTIFY_TOPIC,))
        notifier.info(self.ctxt, "demo.instance.create.end", {"id": 1, "name": "vm-1"})
        notifier.warn(self.ctxt, "demo.disk.low", {"free_gb": 2})
        notifier.error(self.ctxt, "demo.instance.delete.error", {"id": 1, "reason": "busy"})
        _say("sent 3 notifications (info, warn, error)")
        _show(self.recorder.expect(3, "notifications"))
        self.counts["notifications"] += 3

    def stop(self) -> None:
        # Stop everything first, then wait, so servers wind down together.
        for runner in self.runners:
            runner.stop()
        for runner in self.runners:
            runner.wait()
        self.runners.clear()


@click.command()
@click.option("--url", default="memory://", show_default=True,
              help="Transport URL, e.g. rabbit://guest:guest@localhost:5672/ or zmq://.")
@click.option("--wait", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for each server-side or listener event.")
def demo(url: str, wait: float) -> None:
    """Start two RPC servers and a notification listener, then make calls,
    a cast, a fanout and notifications, printing what happens.

    Needs no server with the default memory:// transport.
    """
    with polymsg.get_transport(url) as transport:
        Demo(transport, wait).run()
