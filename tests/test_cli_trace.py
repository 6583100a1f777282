"""``polymsg listen --trace`` and ``serve-echo --trace``: the W3C trace id each message
carries, shown without OpenTelemetry, garbage shown as invalid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid

import pytest
from click.testing import CliRunner, Result

from polymsg import cli
from polymsg._cli.trace import SHOWN, TraceParent, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=True)


def bus() -> str:
    return f"memory://trace-{uuid.uuid4().hex[:8]}"


def notify(url: str, ctxt: object) -> None:
    sent = run("notify", url, "ev", "info", "a.b", '{"k": 1}', "--ctxt", json.dumps(ctxt))
    assert sent.exit_code == 0, sent.output


def test_listen_trace_shows_the_trace_id() -> None:
    url = bus()
    notify(url, {"traceparent": VALID, "user": "u1"})
    result = run("listen", url, "ev", "--trace", "--count", "1")
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if "a.b" in x]
    assert line.startswith(f"trace={TRACE_ID} ")
    assert 'INFO a.b [polymsg-cli] {"k": 1}' in line


def test_listen_trace_marks_messages_without_a_trace() -> None:
    url = bus()
    notify(url, {"user": "u1"})
    result = run("listen", url, "ev", "--trace", "--count", "1")
    assert result.exit_code == 0, result.output
    assert any(x.startswith("trace=- ") for x in result.output.splitlines())


def test_listen_without_trace_shows_no_trace() -> None:
    url = bus()
    notify(url, {"traceparent": VALID})
    result = run("listen", url, "ev", "--count", "1")
    assert result.exit_code == 0, result.output
    assert "trace=" not in result.output


GARBAGE = [
    "not a traceparent",
    f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",          # upper case hex
    f"00-{'0' * 32}-{SPAN_ID}-01",                   # all-zero trace id
    f"00-{TRACE_ID}-{'0' * 16}-01",                  # all-zero span id
    f"ff-{TRACE_ID}-{SPAN_ID}-01",                   # forbidden version
    f"00-{TRACE_ID}-{SPAN_ID}-01-extra",             # version 00 has exactly 4 fields
    f"00_{TRACE_ID}_{SPAN_ID}_01",
    f"00-{TRACE_ID[:-1]}g-{SPAN_ID}-01",
    "x" * 100_000,                                   # huge
    "00-\x1b[2J\n-evil",                             # control characters
    12345,
    {"nested": VALID},
    None,
]


@pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_traceparent_is_shown_as_invalid(value: object) -> None:
    url = bus()
    notify(url, {"traceparent": value})
    result = run("listen", url, "ev", "--trace", "--count", "1")
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if "a.b" in x]
    match = re.match(r"trace=invalid\((.*)\) \d{4}-\d\d-\d\d .* INFO a\.b ", line)
    assert match is not None, line
    assert len(match.group(1)) <= SHOWN + 3
    assert "\x1b" not in line


def test_listen_json_trace() -> None:
    url = bus()
    notify(url, {"traceparent": VALID})
    notify(url, {"traceparent": "garbage"})
    notify(url, {})
    result = run("listen", url, "ev", "--trace", "--json", "--count", "3")
    assert result.exit_code == 0, result.output
    traces = [json.loads(x)["trace"] for x in result.output.splitlines() if x.startswith("{")]
    assert traces == [{"trace_id": TRACE_ID, "span_id": SPAN_ID, "sampled": True},
                      {"invalid": "'garbage'"}, None]


def test_serve_echo_trace() -> None:
    url = bus()
    cast = run("cast", url, "echo", "ping", "--server", "e1", "--ctxt",
               json.dumps({"traceparent": VALID}))
    assert cast.exit_code == 0, cast.output
    result = run("serve-echo", url, "echo", "e1", "--max-requests", "1", "--trace")
    assert result.exit_code == 0, result.output
    assert f"trace={TRACE_ID} ping" in result.output


def test_parse_traceparent_rules() -> None:
    assert parse_traceparent(VALID) == TraceParent(TRACE_ID, SPAN_ID, True)
    assert parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00") == TraceParent(TRACE_ID, SPAN_ID,
                                                                          False)
    # a later version may append fields
    assert parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-03-more") == TraceParent(
        TRACE_ID, SPAN_ID, True)
    assert parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-03more") is None
    for value in GARBAGE:
        assert parse_traceparent(value) is None


def test_listen_trace_needs_no_opentelemetry() -> None:
    """In a process where importing opentelemetry fails, --trace still shows trace ids."""
    script = textwrap.dedent(f"""
        import sys
        class NoOtel:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError("opentelemetry is not installed (test)")
        sys.meta_path.insert(0, NoOtel())
        from click.testing import CliRunner
        from polymsg import cli
        url = "memory://no-otel"
        r = CliRunner().invoke(cli.cli, ["notify", url, "ev", "info", "a.b", "1",
                                         "--ctxt", '{{"traceparent": "{VALID}"}}'])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(cli.cli, ["listen", url, "ev", "--trace", "--count", "1"])
        assert r.exit_code == 0, r.output
        assert not any(m.startswith("opentelemetry") for m in sys.modules), "imported"
        print(r.output)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert f"trace={TRACE_ID}" in done.stdout
