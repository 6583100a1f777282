"""The ``polymsg`` command against a broker that refuses or is not there: one
error line and exit status 1, within the command's budget, on both drivers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from amqptest import FAST_RETRY, make_url
from proxy import free_port

#: A refused login must end the command well within its --timeout.
AT_ONCE = 8.0


def _polymsg(*args: str, limit: float = 60.0) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).with_name("polymsg")), *args],
                          capture_output=True,
                          text=True, timeout=limit, check=False)
    return done, time.monotonic() - started


def _error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("polymsg: error:")]


@pytest.mark.parametrize("command", [
    ["call", "{url}", "smoke", "ping", "--timeout", "20"],
    ["cast", "{url}", "smoke", "ping"],
    ["notify", "{url}", "smoke", "info", "smoke.event", "{{}}"],
    ["check", "{url}"],
])
def test_a_refused_login_ends_the_command_with_status_1(scheme: str, vhost: str,
                                                        command: list[str]) -> None:
    url = make_url(scheme, vhost, FAST_RETRY, password="wrong-secret-4711")
    done, elapsed = _polymsg(*[part.format(url=url) for part in command])
    assert done.returncode == 1, done.stderr
    assert elapsed < AT_ONCE
    [line] = _error_lines(done)
    assert "MessageDeliveryFailure" in line and "ACCESS_REFUSED" in line
    assert "wrong-secret" not in done.stderr + done.stdout
    assert " pika." not in done.stderr, "pika's own ERROR lines leaked"


@pytest.mark.parametrize("command", [
    ["call", "{url}", "smoke", "ping", "--timeout", "3"],
    ["cast", "{url}", "smoke", "ping", "--retry", "1"],
    ["notify", "{url}", "smoke", "info", "smoke.event", "{{}}", "--retry", "1"],
])
def test_nothing_listening_ends_the_command_within_its_budget(scheme: str, vhost: str,
                                                              command: list[str]) -> None:
    url = make_url(scheme, vhost, FAST_RETRY, port=free_port())
    done, elapsed = _polymsg(*[part.format(url=url) for part in command])
    assert done.returncode == 1, done.stderr
    assert elapsed < AT_ONCE
    [line] = _error_lines(done)
    assert "cannot connect" in line
