"""Conformance: hostile names, forged exception names, hostile timeouts and contexts.

Names are checked once in the facade, so every transport refuses the same
ones, at once, and a refused name never disturbs what already runs on the
transport.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
import uuid
from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness

__all__ = ["SecurityTests"]

#: Names that are routing syntax on some transport, or not a name at all.
HOSTILE_NAMES: list[tuple[str, str]] = [
    ("hash", "#"),
    ("star", "*"),
    ("hash word", "a.#"),
    ("star word", "*.b"),
    ("slash", "a/b"),
    ("backslash", "a\\b"),
    ("newline", "bad\ntopic"),
    ("space", "a b"),
    ("nul", "a\0b"),
    ("dot", "."),
    ("dotdot", ".."),
    ("too long", "x" * 256),
    ("too long in utf-8", "\u00e9" * 128),
]

#: Names every transport accepts even though some look close to the refused ones.
ACCEPTED_SERVERS = ["amq.example.com", "host-1.example.com@backend-1", "node:5672"]

#: Timeouts no driver can honour.
BAD_TIMEOUTS: list[Any] = [math.nan, math.inf, -math.inf, -1, "5", True]

#: Modules a hostile server may name as its exception's module.
FORGED_MODULES = ["polymsg._bench.__main__", "polymsg._cli.main", "antigravity"]


class ForgingEndpoint:
    """Raises exceptions whose class claims whatever module and name it is told."""

    def raise_as(self, ctxt: Any, module: str, name: str) -> None:
        """Raise an :class:`Exception` subclass named ``module.name``."""
        forged = type(name, (Exception,), {"__module__": module})
        raise forged(f"forged {module}.{name}")


class SecurityTests(DriverFixtures):
    """Names refused the same way everywhere; forged replies import nothing."""

    @pytest.mark.parametrize("field", ["topic", "server"])
    @pytest.mark.parametrize("what, name", HOSTILE_NAMES, ids=[w for w, _ in HOSTILE_NAMES])
    def test_hostile_server_name_is_refused_at_once(
            self, harness: Harness, field: str, what: str, name: str) -> None:
        self.require(harness.transport, "rpc")
        names = {"topic": harness.topic, "server": "server-1", field: name}
        started = time.monotonic()
        with pytest.raises(polymsg.InvalidTarget) as caught:
            harness.rpc_server(names["server"], topic=names["topic"])
        assert time.monotonic() - started < self.wait_timeout / 2
        assert field in str(caught.value)
        assert isinstance(caught.value, ValueError)

    def test_wildcard_servers_cannot_steal_calls(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server("server-1")
        thief = harness.new_transport()
        for topic, server in [("#", "thief"), ("*", "thief"), (harness.topic, "*"),
                              (harness.topic, "#"), (f"{harness.topic}.*", "thief")]:
            with pytest.raises(polymsg.InvalidTarget):
                harness.rpc_server(server, topic=topic, transport=thief)
        client = harness.client()
        results = [client.call({}, "echo", value=n) for n in range(100)]
        assert results == list(range(100))
        assert len(harness.calls.events) == 100, "a call ran more than once"

    def test_refused_name_leaves_the_transport_serving(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server("server-1")
        client = harness.client()
        assert client.call({}, "echo", value="before") == "before"
        for topic in ["bad\ntopic", "y" * 300, "#"]:
            with pytest.raises(polymsg.InvalidTarget):
                harness.rpc_server("server-2", topic=topic)
            with pytest.raises(polymsg.InvalidTarget):
                harness.client(topic=topic)
        assert client.call({}, "echo", value="after") == "after"
        # A new server on the same transport still starts and serves.
        harness.rpc_server("server-3")
        named = harness.client(server="server-3")
        assert named.call({}, "whoami") == "server-3"

    def test_names_too_long_together_are_refused(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        topic, server = "t" * 150, "s" * 150  # each fine alone; topic.server is 301 bytes
        with pytest.raises(polymsg.InvalidTarget) as caught:
            harness.rpc_server(server, topic=topic)
        assert "255" in str(caught.value)
        with pytest.raises(polymsg.InvalidTarget):
            harness.client(topic=topic, server=server)
        with pytest.raises(polymsg.InvalidTarget):
            harness.client(topic="t" * 250)

    def test_reserved_amqp_prefix_is_refused_everywhere(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server("server-1")
        for topic in ["amq.gen-1", "amq.rabbitmq.reply-to"]:
            with pytest.raises(polymsg.InvalidTarget, match="amq"):
                harness.rpc_server("server-2", topic=topic)
        with pytest.raises(polymsg.InvalidTarget, match="amq"):
            harness.client(exchange="amq.topic")
        assert harness.client().call({}, "echo", value="ok") == "ok"

    @pytest.mark.parametrize("server", ACCEPTED_SERVERS)
    def test_server_names_with_dots_and_at_signs_work(self, harness: Harness,
                                                      server: str) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(server)
        assert harness.client(server=server).call({}, "whoami") == server

    def test_oslo_style_names_work(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        topic = f"{harness.topic}.conductor_manager"
        server = "host-1.example.com@backend-1"
        harness.rpc_server(server, topic=topic)
        assert harness.client(topic=topic).call({}, "whoami") == server
        assert harness.client(topic=topic, server=server).call({}, "whoami") == server

    @pytest.mark.parametrize("what, name", HOSTILE_NAMES[:8],
                             ids=[w for w, _ in HOSTILE_NAMES[:8]])
    def test_hostile_notification_names_are_refused(
            self, harness: Harness, what: str, name: str) -> None:
        self.require(harness.transport, "notify")
        with pytest.raises(polymsg.InvalidTarget, match="publisher_id"):
            harness.notifier(name)
        with pytest.raises(polymsg.InvalidTarget):
            harness.notifier(topics=[name])
        with pytest.raises(polymsg.InvalidTarget):
            harness.listener(topics=[name])
        if "pools" in harness.transport.capabilities:
            with pytest.raises(polymsg.InvalidTarget, match="pool"):
                harness.listener(pool=name)

    @pytest.mark.parametrize("module", FORGED_MODULES)
    @pytest.mark.parametrize("name", ["main", "SystemExit", "MessagingTimeout"])
    def test_forged_exception_names_import_nothing(
            self, harness: Harness, module: str, name: str) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(endpoints=[ForgingEndpoint()])
        client = harness.client()
        with pytest.raises(polymsg.RemoteError):  # the driver's first call imports what it needs
            client.call({}, "raise_as", module="warm.up", name="Error")
        before = set(sys.modules)
        with pytest.raises(polymsg.RemoteError) as caught:
            client.call({}, "raise_as", module=module, name=name)
        assert caught.value.exc_type == name
        imported = {m for m in set(sys.modules) - before
                    if m == module or module.startswith(f"{m}.")}
        assert not imported, f"a reply made the caller import {sorted(imported)}"

    @pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
    def test_forged_base_exceptions_arrive_as_remote_error(
            self, harness: Harness, name: str) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server(endpoints=[ForgingEndpoint()])
        with pytest.raises(polymsg.RemoteError) as caught:
            harness.client().call({}, "raise_as", module="builtins", name=name)
        assert caught.value.exc_type == name

    @pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
    def test_bad_timeout_is_refused_before_sending(self, harness: Harness, timeout: Any) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        with pytest.raises(ValueError, match="timeout"):
            harness.client(timeout=timeout)
        client = harness.client()
        with pytest.raises(ValueError, match="timeout"):
            client.prepare(timeout=timeout)
        assert client.call({}, "echo", value="ok") == "ok"
        assert [inv.method for inv in harness.calls.events] == ["echo"]

    @pytest.mark.parametrize("ctxt", [["a", "list"], "text", 42, ("a", "tuple")], ids=repr)
    def test_context_that_is_not_a_dict_is_refused(self, harness: Harness, ctxt: Any) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        with pytest.raises(polymsg.SerializationError, match="context"):
            client.call(ctxt, "echo", value=1)
        with pytest.raises(polymsg.SerializationError, match="context"):
            client.cast(ctxt, "note", value=1)
        assert client.call({}, "echo", value="ok") == "ok"
        assert [inv.method for inv in harness.calls.events] == ["echo"]

    def test_password_never_in_str_errors_or_logs(
            self, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
        parsed = polymsg.TransportURL.parse(harness.url)
        if not parsed.hosts:
            pytest.skip("the transport URL names no host to give a password")
        secret = f"pw-{uuid.uuid4().hex}"
        url = dataclasses.replace(parsed, hosts=tuple(
            dataclasses.replace(host, username=host.username or "polymsg", password=secret)
            for host in parsed.hosts))
        caplog.set_level(logging.DEBUG)
        texts = [str(url), repr(url)]
        try:
            transport = polymsg.get_transport(url, conf=self.make_conf())
        except polymsg.MessagingError as exc:  # refused at once: fine, if it says nothing
            texts += [str(exc), repr(exc)]
        else:
            try:
                texts += [str(transport), repr(transport)]
                client = polymsg.RPCClient(transport, polymsg.Target(topic=harness.topic),
                                           retry=0, timeout=self.short_timeout)
                with _suppress(polymsg.MessagingError) as failed:
                    client.cast({}, "note", value=1)  # a broker refuses the password
                texts += failed
            finally:
                transport.cleanup()
        texts += [record.getMessage() for record in caplog.records]
        texts += [caplog.text]
        leaks = [text for text in texts if secret in text]
        assert not leaks, f"the password shows in {leaks[0]!r}"


class _suppress:
    """Like contextlib.suppress, keeping the text of what it suppressed."""

    def __init__(self, *classes: type[BaseException]) -> None:
        self.classes = classes
        self.texts: list[str] = []

    def __enter__(self) -> list[str]:
        return self.texts

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, self.classes):
            self.texts += [str(exc), repr(exc), str(exc.__cause__ or "")]
            return True
        return False
