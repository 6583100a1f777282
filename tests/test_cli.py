"""The ``polymsg`` command line, run in-process on memory:// buses."""

from __future__ import annotations

import json
import os
import queue
import textwrap
import uuid
from collections.abc import Iterator
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import polymsg
from polymsg import cli
from polymsg._cli import check as cli_check
from polymsg._cli import main as cli_main


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=True)


def bus() -> str:
    """A memory:// URL no other test uses."""
    return f"memory://cli-{uuid.uuid4().hex[:8]}"


class Endpoint:
    def __init__(self) -> None:
        self.seen: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        self.seen.put(("add", {"a": a, "b": b, "ctxt": ctxt}))
        return a + b

    def echo(self, ctxt: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.seen.put(("echo", kwargs))
        return kwargs

    def boom(self, ctxt: dict[str, Any]) -> None:
        raise RuntimeError("it broke")


@pytest.fixture
def served() -> Iterator[tuple[str, Endpoint]]:
    """A running RPC server on topic 'svc' (server 's1') of a fresh bus."""
    url = bus()
    endpoint = Endpoint()
    with polymsg.get_transport(url) as transport:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic="svc", server="s1"), [endpoint])
        with server:
            yield url, endpoint


def next_seen(endpoint: Endpoint) -> tuple[str, dict[str, Any]]:
    return endpoint.seen.get(timeout=10)


# -- demo -----------------------------------------------------------------------


def test_demo_on_memory_narrates_every_shape() -> None:
    result = run("demo", "--url", bus())
    assert result.exit_code == 0, result.output
    out = result.output
    assert "call add(a=2, b=3) on any server -> 5" in out
    assert "call whoami() on server 'beta' -> 'beta'" in out
    assert "raised ZeroDivisionError('division by zero')" in out
    assert "server alpha: reload()" in out and "server beta: reload()" in out
    assert out.count("listener: ") == 3
    assert "INFO demo.instance.create.end" in out
    assert out.rstrip().endswith("demo finished: 3 calls, 1 cast, 1 fanout, 3 notifications")


def _installed(dist: str) -> bool:
    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


def _real_url(which: str) -> str:
    if which == "rabbit":
        if not _installed("polymsg-kombu"):
            pytest.skip("polymsg-kombu is not installed (scripts/test.sh installs it)")
        url = os.environ.get("POLYMSG_TEST_RABBIT_URL")
        assert url, ("POLYMSG_TEST_RABBIT_URL is not set: run scripts/services.sh start and "
                     'eval "$(scripts/services.sh env)"')
        return url
    if not _installed("polymsg-zmq"):
        pytest.skip("polymsg-zmq is not installed (scripts/test.sh installs it)")
    return "zmq://"


@pytest.mark.parametrize("which", ["rabbit", "zmq"])
def test_demo_on_real_transports(which: str) -> None:
    result = run("demo", "--url", _real_url(which))
    assert result.exit_code == 0, result.output
    assert "call add(a=2, b=3) on any server -> 5" in result.output
    assert "server alpha: reload()" in result.output and "server beta: reload()" in result.output
    assert result.output.rstrip().endswith("3 notifications")


def test_demo_default_url_is_memory() -> None:
    result = run("demo")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("transport memory://")


def test_unknown_driver_is_one_line_and_exit_2() -> None:
    result = run("demo", "--url", "carrierpigeon://coop")
    assert result.exit_code == cli.EXIT_USAGE
    lines = result.output.strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("polymsg: error: DriverLoadFailure: ")
    assert "Traceback" not in result.output


def test_bad_url_is_a_usage_error() -> None:
    result = run("demo", "--url", "no-scheme-here")
    assert result.exit_code == cli.EXIT_USAGE
    assert "InvalidTransportURL" in result.output


def test_debug_shows_the_exception() -> None:
    result = run("--debug", "demo", "--url", "carrierpigeon://coop")
    assert isinstance(result.exception, polymsg.DriverLoadFailure)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert polymsg.__version__ in result.output


@pytest.mark.parametrize("command", [
    "demo", "call", "cast", "notify", "listen", "serve-echo", "check"])
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output and command in result.output


@pytest.mark.parametrize(("args", "line"), [
    (["call"], "Missing argument 'URL'. (see 'polymsg call --help')"),
    (["nosuch"], "No such command 'nosuch'. (see 'polymsg --help')"),
    (["listen", "memory://", "t", "--priority", "loud"], "Invalid value for '--priority'"),
    (["check", "memory://", "--test-timeout", "0"], "Invalid value for '--test-timeout'"),
])
def test_usage_errors_are_one_line(args: list[str], line: str) -> None:
    result = run(*args)
    assert result.exit_code == cli.EXIT_USAGE
    [only] = result.output.strip().splitlines()
    assert only.startswith(f"polymsg: error: {line}")


def test_no_command_shows_the_help() -> None:
    result = run()
    assert "Usage: polymsg [OPTIONS] COMMAND" in result.output
    assert "check" in result.output and "Exit codes" in result.output


def test_main_exits_with_the_command_status() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--url", "carrierpigeon://x"])
    assert info.value.code == cli.EXIT_USAGE


# -- call / cast ----------------------------------------------------------------


def test_call_prints_the_result_as_json(served: tuple[str, Endpoint]) -> None:
    url, endpoint = served
    result = run("call", url, "svc", "add", "--arg", "a=2", "--arg", "b=40",
                 "--ctxt", '{"user": "ops"}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == 42
    assert next_seen(endpoint) == ("add", {"a": 2, "b": 40, "ctxt": {"user": "ops"}})


def test_call_arguments_from_json_and_plain_strings(served: tuple[str, Endpoint]) -> None:
    url, _ = served
    result = run("call", url, "svc", "echo", "--server", "s1",
                 "--json", '{"n": [1, 2], "flag": true}', "--arg", "name=plain text")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"n": [1, 2], "flag": True, "name": "plain text"}


def test_call_remote_error_is_one_line_exit_1(served: tuple[str, Endpoint]) -> None:
    url, _ = served
    result = run("call", url, "svc", "boom")
    assert result.exit_code == cli.EXIT_FAILURE
    assert result.output.strip() == "polymsg: error: remote error: RuntimeError: it broke"


def test_call_unknown_method(served: tuple[str, Endpoint]) -> None:
    url, _ = served
    result = run("call", url, "svc", "nosuch")
    assert result.exit_code == cli.EXIT_FAILURE
    assert "NoSuchMethod" in result.output


def test_call_with_no_server_times_out() -> None:
    result = run("call", bus(), "nobody", "ping", "--timeout", "0.2")
    assert result.exit_code == cli.EXIT_FAILURE
    assert "polymsg: error: MessagingTimeout" in result.output


@pytest.mark.parametrize(("args", "complaint"), [
    (["--arg", "novalue"], "NAME=VALUE"),
    (["--json", "{not json"], "--json is not valid JSON"),
    (["--json", "[1]"], "JSON object"),
    (["--ctxt", "3"], "--ctxt must be a JSON object"),
])
def test_bad_arguments_are_usage_errors(args: list[str], complaint: str) -> None:
    result = run("call", bus(), "svc", "m", *args)
    assert result.exit_code == cli.EXIT_USAGE
    assert complaint in result.output


def test_bad_version_is_a_usage_error() -> None:
    result = run("call", bus(), "svc", "m", "--version", "one")
    assert result.exit_code == cli.EXIT_USAGE
    assert "InvalidTarget" in result.output


def test_cast_reaches_the_server(served: tuple[str, Endpoint]) -> None:
    url, endpoint = served
    result = run("cast", url, "svc", "echo", "--arg", "x=1")
    assert result.exit_code == 0, result.output
    assert "sent cast echo to svc" in result.output
    assert next_seen(endpoint) == ("echo", {"x": 1})


def test_fanout_cast_reaches_every_server() -> None:
    url = bus()
    endpoints = [Endpoint(), Endpoint()]
    with polymsg.get_transport(url) as transport:
        for n, endpoint in enumerate(endpoints):
            polymsg.get_rpc_server(
                transport, polymsg.Target(topic="svc", server=f"s{n}"), [endpoint]).start()
        result = run("cast", url, "svc", "echo", "--fanout", "--arg", "all=true")
        assert result.exit_code == 0, result.output
        assert [next_seen(e) for e in endpoints] == [("echo", {"all": True})] * 2


# -- notify / listen / serve-echo -----------------------------------------------


def test_notify_then_listen() -> None:
    url = bus()
    # memory:// stores and forwards, so the listener started after gets it.
    sent = run("notify", url, "events", "warn", "disk.low", '{"free": 3}',
               "--publisher-id", "host1")
    assert sent.exit_code == 0, sent.output
    assert "sent WARN disk.low on events" in sent.output
    result = run("listen", url, "events", "--json", "--count", "1")
    assert result.exit_code == 0, result.output
    note = json.loads(result.output.strip().splitlines()[-1])
    assert (note["priority"], note["event_type"], note["publisher_id"], note["payload"]) == (
        "WARN", "disk.low", "host1", {"free": 3})
    assert note["metadata"]["message_id"]


def test_listen_readable_lines_and_priority_filter() -> None:
    url = bus()
    assert run("notify", url, "ev", "info", "a.b", '{"k": 1}').exit_code == 0
    result = run("listen", url, "ev", "--priority", "info", "--count", "1")
    assert result.exit_code == 0, result.output
    assert 'INFO a.b [polymsg-cli] {"k": 1}' in result.output


def test_notify_rejects_bad_payload() -> None:
    result = run("notify", bus(), "ev", "info", "a.b", "{oops")
    assert result.exit_code == cli.EXIT_USAGE
    assert "PAYLOAD_JSON is not valid JSON" in result.output


def test_serve_echo_serves_casts_sent_before_it_started() -> None:
    url = bus()
    assert run("cast", url, "echo", "echo", "--server", "e1", "--arg", "v=7").exit_code == 0
    assert run("cast", url, "echo", "ping", "--server", "e1").exit_code == 0
    result = run("serve-echo", url, "echo", "e1", "--max-requests", "2")
    assert result.exit_code == 0, result.output
    assert 'echo {"v": 7}' in result.output
    assert "ping" in result.output


# -- plugin commands ------------------------------------------------------------


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"polymsg_cli_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import click

        @click.command()
        @click.option("--who", default="world")
        def hello(who):
            '''Say hello (a plugin command).'''
            click.echo(f"hello {who}")

        not_a_command = 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def use_plugins(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = [EntryPoint(name=name.replace("_", "-"), value=value, group=cli_main.PLUGIN_GROUP)
           for name, value in values.items()]

    def fake(*, group: str) -> list[EntryPoint]:
        assert group == cli_main.PLUGIN_GROUP
        return eps
    monkeypatch.setattr(cli_main, "entry_points", fake)


def test_plugin_command_runs_and_is_listed(plugin_module: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    use_plugins(monkeypatch, zmq_receiver=f"{plugin_module}:hello")
    result = run("zmq-receiver", "--who", "zmq")
    assert result.exit_code == 0, result.output
    assert result.output == "hello zmq\n"
    listing = run("--help").output
    assert "zmq-receiver" in listing and "Say hello" in listing


def test_plugin_cannot_shadow_a_builtin(plugin_module: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    use_plugins(monkeypatch, demo=f"{plugin_module}:hello")
    result = run("demo", "--url", bus())
    assert result.exit_code == 0
    assert "demo finished" in result.output


@pytest.mark.parametrize(("value", "complaint"), [
    ("no_such_module_xyz:cmd", "failed to load"),
    ("{mod}:not_a_command", "is not a click command"),
])
def test_broken_plugin_is_a_clear_error(plugin_module: str, monkeypatch: pytest.MonkeyPatch,
                                        value: str, complaint: str) -> None:
    use_plugins(monkeypatch, broken=value.format(mod=plugin_module))
    result = run("broken", "--some-option")
    assert result.exit_code == 1
    assert result.output.startswith("polymsg: error: the 'broken' command")
    assert complaint in result.output
    listing = run("--help")  # one broken plugin does not break the others
    assert listing.exit_code == 0
    assert "broken" in listing.output and "(unavailable)" in listing.output
    assert "demo" in listing.output


# -- error description (pure) ---------------------------------------------------


@pytest.mark.parametrize(("exc", "text", "code"), [
    (polymsg.MessagingTimeout("timed out after 1s"), "MessagingTimeout: timed out after 1s", 1),
    (polymsg.RemoteError("KeyError", "'x'", "Traceback..."), "remote error: KeyError: 'x'", 1),
    (polymsg.NotSupported("no fanout"), "NotSupported: no fanout", 2),
    (polymsg.InvalidTarget("needs topic"), "InvalidTarget: needs topic", 2),
    (OSError("disk\nfull"), "unexpected OSError: disk (run with --debug for the traceback)", 1),
    (KeyboardInterrupt(), "unexpected KeyboardInterrupt:", 130),
])
def test_describe_error(exc: BaseException, text: str, code: int) -> None:
    assert cli_main.describe_error(exc).startswith(text)
    assert cli_main.exit_code_for(exc) == code


# -- check ----------------------------------------------------------------------

#: A quick slice of the conformance suite: one behaviour per kind, plus the probes.
CHECK_SUBSET = ("call_round_trips_every or notification_fields or cast_before_server "
                "or fanout_reaches or undeclared or known_names")


def test_check_prints_a_capability_table_and_exits_0() -> None:
    result = run("check", "memory://", "-k", CHECK_SUBSET)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("conformance of memory://")
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()
            if line.startswith("  ") and line.split()[0] in cli_check.CAPABILITY_ORDER}
    assert rows["rpc"] == ["yes", "pass"]
    assert rows["fanout"] == ["yes", "pass"]
    assert rows["store_and_forward"] == ["yes", "pass"]
    assert rows["pools"] == ["yes", "not"]  # "not tested": -k ran none of its behaviours
    assert "not tested  the selection ran none of its behaviours" in out
    assert rows["multi_host"] == ["no", "pass"]  # refused with NotSupported, as it must be
    assert "  pass  call round trips every json type\n" in out
    assert "  pass  cast before server starts is delivered  [store_and_forward]\n" in out
    assert "\nDelivery and TTL hints\n" in out and "\nNotifications\n" in out
    assert "passed, 0 failed" in out.splitlines()[-1]
    assert "running the conformance suite against memory://" in result.stderr


def test_check_json_output() -> None:
    result = run("check", "memory://", "-k", "round_trips_every or undeclared", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["url"] == "memory:///"
    assert "multi_host" not in report["declared"] and "rpc" in report["declared"]
    verdicts = {v["capability"]: v for v in report["capabilities"]}
    assert verdicts["multi_host"]["status"] == "pass"
    assert verdicts["rpc"]["declared"] is True
    [call] = [t for t in report["tests"] if t["test"] == "test_call_round_trips_every_json_type"]
    assert (call["area"], call["outcome"], call["capabilities"]) == ("RPC", "passed", ["rpc"])
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] >= 2


def test_check_selection_matching_nothing_is_a_usage_error() -> None:
    result = run("check", "memory://", "-k", "no_behaviour_is_called_this")
    assert result.exit_code == cli.EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1] == (
        "polymsg: error: no conformance test matches the selection (-k)")


def test_check_passes_pytest_arguments_through() -> None:
    result = run("check", "memory://", "--", "--no-such-pytest-option")
    assert result.exit_code == cli.EXIT_FAILURE
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("polymsg: error: the conformance run ended with pytest status 4")


@pytest.mark.parametrize(("url", "error"), [
    ("carrierpigeon://coop", "DriverLoadFailure"),
    ("memory://?no_such_option=1", "InvalidTransportURL"),
])
def test_check_bad_url_fails_before_running_anything(url: str, error: str) -> None:
    result = run("check", url)
    assert result.exit_code == cli.EXIT_USAGE
    assert result.output.strip().startswith(f"polymsg: error: {error}: ")
    assert "running the conformance suite" not in result.output


def _test(name: str, outcome: str, *caps: str, param: str | None = None,
          reason: str = "") -> cli_check.Test:
    return cli_check.Test(area="RPCTests", name=name, param=param, capabilities=caps,
                          outcome=outcome, reason=reason, duration=0.1)


def test_check_verdicts_and_rendering() -> None:
    probe = cli_check.UNDECLARED_TEST
    results = cli_check.Results("x://", {"rpc", "fanout", "pools"}, [
        _test("test_call_works", "passed", "rpc"),
        _test("test_fanout_works", "failed", "rpc", "fanout", reason="AssertionError: 1 != 3"),
        _test("test_fanout_isolates", "passed", "rpc", "fanout"),
        _test(probe, "skipped", "fanout", param="fanout", reason="'fanout' is declared"),
        _test(probe, "passed", "queue_ttl", param="queue_ttl"),
        _test(probe, "failed", "requeue", param="requeue", reason="DID NOT RAISE"),
        _test("test_pool_works", "skipped", "pools", reason="deselected"),
    ], seconds=1.0)
    verdicts = {v.capability: (v.status, v.detail) for v in results.capabilities()}
    assert verdicts["rpc"] == ("FAIL", "1 of 3 behaviours failed")
    assert verdicts["fanout"] == ("FAIL", "1 of 2 behaviours failed")
    assert verdicts["pools"] == ("not tested", "the conformance suite has no test of it")
    assert verdicts["queue_ttl"][0] == "pass"
    assert verdicts["requeue"] == ("FAIL", "not declared, yet not refused with NotSupported")
    assert verdicts["store_and_forward"] == ("-", "not declared")
    assert results.failures == 2
    text = "\n".join(results.render())
    assert "  FAIL  fanout works  [fanout]\n          AssertionError: 1 != 3" in text
    assert "[fanout]  ('fanout' is declared)" not in text  # a declared probe's skip is noise
    assert "  pass  undeclared capability raises not supported [queue_ttl]" in text
    assert text.endswith("7 behaviours: 3 passed, 2 failed, 2 skipped (1.0 s)")
