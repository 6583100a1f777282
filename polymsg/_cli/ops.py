"""Operator commands: ``call``, ``cast``, ``notify``, ``listen``, ``serve-echo``."""

from __future__ import annotations

import json
import queue
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from oslo_config import cfg

import polymsg
from polymsg._cli import trace as tracing
from polymsg._config import register_defaults

__all__ = ["call", "cast", "listen", "notify", "parse_kwargs", "serve_echo"]

T = TypeVar("T")

PRIORITIES = ("audit", "debug", "info", "warn", "warning", "error", "critical", "sample")


def _json_value(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from exc


def parse_kwargs(pairs: Sequence[str], json_text: str | None) -> dict[str, Any]:
    """Method arguments from ``--json '{...}'`` and ``--arg k=v`` (v read as JSON
    when it parses, else as a string); ``--arg`` wins on a clash."""
    kwargs: dict[str, Any] = {}
    if json_text is not None:
        value = _json_value(json_text, "--json")
        if not isinstance(value, dict):
            raise click.BadParameter("--json must be a JSON object of argument names to values")
        kwargs.update(value)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"--arg {pair!r} must look like NAME=VALUE")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs


def _context(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    value = _json_value(text, "--ctxt")
    if not isinstance(value, dict):
        raise click.BadParameter("--ctxt must be a JSON object")
    return value


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _target_options(fn: Any) -> Any:
    for decorator in reversed([
        click.argument("url"),
        click.argument("topic"),
        click.argument("method"),
        click.option("--server", help="Send to this server of the topic only."),
        click.option("--exchange", help="Exchange (default: control_exchange, 'polymsg'); "
                     "'compute', 'nova'... to reach an oslo.messaging service's."),
        click.option("--namespace", help="Endpoint namespace."),
        click.option("--version", "version_", metavar="X.Y", help="API version requested."),
        click.option("--arg", "args", multiple=True, metavar="NAME=VALUE",
                     help="A method argument; VALUE is JSON or a plain string. Repeatable."),
        click.option("--json", "json_text", metavar="OBJECT",
                     help="All method arguments as one JSON object."),
        click.option("--ctxt", "ctxt_text", metavar="OBJECT", help="Request context (JSON)."),
    ]):
        fn = decorator(fn)
    return fn


def _client(transport: polymsg.Transport, topic: str, server: str | None, exchange: str | None,
            namespace: str | None, version: str | None, **kwargs: Any) -> polymsg.RPCClient:
    target = polymsg.Target(topic=topic, server=server, exchange=exchange,
                            namespace=namespace, version=version)
    return polymsg.RPCClient(transport, target, **kwargs)


@click.command()
@_target_options
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for the reply.")
def call(url: str, topic: str, method: str, server: str | None, exchange: str | None,
         namespace: str | None, version_: str | None, args: tuple[str, ...],
         json_text: str | None, ctxt_text: str | None, timeout: float) -> None:
    """Call METHOD on a server of TOPIC and print the result as JSON."""
    kwargs = parse_kwargs(args, json_text)
    ctxt = _context(ctxt_text)
    with polymsg.get_transport(url) as transport:
        client = _client(transport, topic, server, exchange, namespace, version_,
                         timeout=timeout)
        _print_json(client.call(ctxt, method, **kwargs))


_RETRY_OPTION = click.option(
    "--retry", type=click.IntRange(min=0), default=3, show_default=True,
    help="Connection retries before giving up with a delivery failure (exit 1); a refused "
         "login or virtual host fails at once.")


@click.command()
@_target_options
@click.option("--fanout", is_flag=True, help="Send to every server of the topic.")
@_RETRY_OPTION
def cast(url: str, topic: str, method: str, server: str | None, exchange: str | None,
         namespace: str | None, version_: str | None, args: tuple[str, ...],
         json_text: str | None, ctxt_text: str | None, fanout: bool, retry: int) -> None:
    """Send METHOD to a server of TOPIC (or every one, with --fanout) without waiting."""
    kwargs = parse_kwargs(args, json_text)
    ctxt = _context(ctxt_text)
    with polymsg.get_transport(url) as transport:
        client = _client(transport, topic, server, exchange, namespace, version_, retry=retry)
        client.prepare(fanout=fanout).cast(ctxt, method, **kwargs)
    click.echo(f"sent {'fanout ' if fanout else ''}cast {method} to {topic}")


@click.command()
@click.argument("url")
@click.argument("topic")
@click.argument("priority", type=click.Choice(PRIORITIES, case_sensitive=False))
@click.argument("event_type")
@click.argument("payload_json")
@click.option("--publisher-id", default="polymsg-cli", show_default=True)
@click.option("--ctxt", "ctxt_text", metavar="OBJECT", help="Context (JSON).")
@click.option("--exchange", help="Exchange (default: control_exchange, 'polymsg'); "
              "'compute', 'nova'... to reach an oslo.messaging service's.")
@_RETRY_OPTION
def notify(url: str, topic: str, priority: str, event_type: str, payload_json: str,
           publisher_id: str, ctxt_text: str | None, exchange: str | None, retry: int) -> None:
    """Publish one notification on TOPIC with PRIORITY, EVENT_TYPE and PAYLOAD_JSON."""
    payload = _json_value(payload_json, "PAYLOAD_JSON")
    ctxt = _context(ctxt_text)
    with _transport(url, exchange) as transport:
        notifier = polymsg.Notifier(transport, publisher_id, topics=(topic,), retry=retry)
        getattr(notifier, priority.lower())(ctxt, event_type, payload)
    click.echo(f"sent {priority.upper()} {event_type} on {topic}")


def _transport(url: str, exchange: str | None) -> polymsg.Transport:
    """A transport whose control exchange is ``exchange`` (notifications go there)."""
    if exchange is None:
        return polymsg.get_transport(url)
    conf = cfg.ConfigOpts()
    conf([])
    register_defaults(conf)
    conf.set_override("control_exchange", exchange)
    return polymsg.get_transport(url, conf=conf)


class _Tail:
    """A notification endpoint that queues every notification for printing."""

    def __init__(self, priorities: Sequence[str]) -> None:
        self.seen: queue.Queue[dict[str, Any]] = queue.Queue()
        for priority in priorities:
            setattr(self, priority, self._make(priority))

    def _make(self, priority: str) -> Any:
        def handle(ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any,
                   metadata: dict[str, Any]) -> None:
            self.seen.put({"priority": priority.upper(), "publisher_id": publisher_id,
                           "event_type": event_type, "payload": payload, "ctxt": ctxt,
                           "metadata": metadata})
        return handle


def _format(note: dict[str, Any], as_json: bool, trace: bool = False) -> str:
    if as_json:
        if trace:
            note = {**note, "trace": tracing.as_json(note["ctxt"])}
        return json.dumps(note, sort_keys=True, default=str)
    stamp = note["metadata"].get("timestamp", "")
    payload = json.dumps(note["payload"], sort_keys=True, default=str)
    line = f"{stamp} {note['priority']} {note['event_type']} [{note['publisher_id']}] {payload}"
    return f"{tracing.describe(note['ctxt'])} {line}" if trace else line


@contextmanager
def _until_signalled() -> Iterator[threading.Event]:
    """An event set by SIGTERM (and by Ctrl-C, which also raises KeyboardInterrupt)."""
    done = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        yield done
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _drain(items: queue.Queue[T], done: threading.Event, limit: int | None) -> Iterator[T]:
    """Items as they come, until ``done`` is set, ``limit`` items, or Ctrl-C."""
    taken = 0
    try:
        while not done.is_set() and (limit is None or taken < limit):
            try:
                # A short poll so a SIGTERM (which only sets ``done``) ends the loop.
                item = items.get(timeout=0.2)
            except queue.Empty:
                continue
            taken += 1
            yield item
    except KeyboardInterrupt:
        click.echo("stopping", err=True)


@click.command()
@click.argument("url")
@click.argument("topic")
@click.option("--pool", help="Listener pool; each pool gets its own copy of the stream.")
@click.option("--priority", "priorities", multiple=True,
              type=click.Choice(PRIORITIES, case_sensitive=False),
              help="Only these priorities (repeatable; default all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many notifications.")
@click.option("--exchange", help="Exchange (default: control_exchange, 'polymsg'); "
              "'compute', 'nova'... to reach an oslo.messaging service's.")
@click.option("--trace", is_flag=True,
              help="Show the trace id each notification carries (W3C traceparent in its "
                   "context): trace=<id>, trace=- (none) or trace=invalid(...).")
def listen(url: str, topic: str, pool: str | None, priorities: tuple[str, ...], as_json: bool,
           count: int | None, exchange: str | None, trace: bool) -> None:
    """Print notifications of TOPIC as they arrive, until Ctrl-C (or --count)."""
    wanted = sorted({p.lower() for p in priorities} or set(PRIORITIES) - {"warning"})
    endpoint = _Tail(wanted)
    with polymsg.get_transport(url) as transport, _until_signalled() as done:
        listener = polymsg.get_notification_listener(
            transport, [polymsg.Target(topic=topic, exchange=exchange)], [endpoint], pool=pool)
        with listener:
            click.echo(f"listening on {topic} ({', '.join(wanted)}); Ctrl-C to stop", err=True)
            for note in _drain(endpoint.seen, done, count):
                click.echo(_format(note, as_json, trace))


class EchoEndpoint:
    """The endpoint of ``serve-echo``: echo, ping and fail."""

    def __init__(self, server: str, served: queue.Queue[str], trace: bool = False) -> None:
        self.server = server
        self.served = served
        self.trace = trace

    def _served(self, ctxt: dict[str, Any], line: str) -> None:
        self.served.put(f"{tracing.describe(ctxt)} {line}" if self.trace else line)

    def echo(self, ctxt: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Return the arguments unchanged."""
        self._served(ctxt, f"echo {json.dumps(kwargs, sort_keys=True, default=str)}")
        return kwargs

    def ping(self, ctxt: dict[str, Any]) -> str:
        """Return ``"pong from <server>"``."""
        self._served(ctxt, "ping")
        return f"pong from {self.server}"

    @polymsg.expected_exceptions(RuntimeError)
    def fail(self, ctxt: dict[str, Any], message: str = "failed on purpose") -> None:
        """Raise ``RuntimeError(message)``, to see remote errors."""
        self._served(ctxt, f"fail {message!r}")
        raise RuntimeError(message)


@click.command("serve-echo")
@click.argument("url")
@click.argument("topic")
@click.argument("server")
@click.option("--max-requests", type=click.IntRange(min=1),
              help="Exit after serving this many requests.")
@click.option("--exchange", help="Exchange (default: control_exchange, 'polymsg'); "
              "'compute', 'nova'... to reach an oslo.messaging service's.")
@click.option("--trace", is_flag=True,
              help="Show the trace id each request carries (as listen --trace).")
def serve_echo(url: str, topic: str, server: str, max_requests: int | None,
               exchange: str | None, trace: bool) -> None:
    """Serve echo(**kwargs), ping() and fail(message) on TOPIC as SERVER until Ctrl-C."""
    served: queue.Queue[str] = queue.Queue()
    endpoint = EchoEndpoint(server, served, trace)
    with polymsg.get_transport(url) as transport, _until_signalled() as done:
        rpc_server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic=topic, server=server, exchange=exchange), [endpoint])
        with rpc_server:
            click.echo(f"serving echo on topic {topic} as server {server}; Ctrl-C to stop",
                       err=True)
            for line in _drain(served, done, max_requests):
                click.echo(line)
