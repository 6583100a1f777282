"""Helpers of the tests both RabbitMQ drivers share (a module name no other tests use)."""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import polymsg
from polymsg.testing import Recorder

DRIVERS = ("rabbit+kombu", "rabbit+pika")
#: Reconnect quickly in tests (the defaults wait 1 s, then longer).
FAST_RETRY = "rabbit_retry_interval=0.2&rabbit_retry_backoff=0.3&rabbit_interval_max=1"


def base_url() -> polymsg.TransportURL:
    """The test broker's URL; skips when unset."""
    text = os.environ.get("POLYMSG_TEST_RABBIT_URL")
    if not text:
        pytest.skip("POLYMSG_TEST_RABBIT_URL is not set: run `scripts/services.sh start` and "
                    "`eval \"$(scripts/services.sh env)\"` (scripts/test.sh does both)")
    return polymsg.TransportURL.parse(text)


def ctl(*args: str) -> str:
    """Run ``rabbitmqctl`` against the test broker."""
    command = os.environ.get("POLYMSG_TEST_RABBITMQCTL")
    if not command:
        pytest.skip("POLYMSG_TEST_RABBITMQCTL is not set: `eval \"$(scripts/services.sh env)\"`")
    done = subprocess.run([*shlex.split(command), "-q", *args], capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def make_url(scheme: str, vhost: str | None, query: str = "", *, user: str | None = None,
             password: str | None = None, host: str | None = None,
             port: int | None = None) -> str:
    """A URL of ``scheme`` on the test broker (or another ``host``/``port``)."""
    base = base_url().hosts[0]
    user = user if user is not None else (base.username or "guest")
    password = password if password is not None else (base.password or "guest")
    where = f"{host or base.hostname or '127.0.0.1'}:{port or base.port or 5672}"
    text = f"{scheme}://{user}:{password}@{where}/{vhost or ''}"
    return f"{text}?{query}" if query else text


class Matrix:
    """What each failure case gave the caller, per driver, for the docs and the report."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def record(self, case: str, scheme: str, outcome: BaseException | str,
               elapsed: float) -> None:
        """Note that ``case`` on ``scheme`` ended with ``outcome`` after ``elapsed`` s."""
        what = outcome if isinstance(outcome, str) else type(outcome).__name__
        self.rows.append({"case": case, "driver": scheme, "outcome": what,
                          "seconds": round(elapsed, 2),
                          "message": str(outcome).splitlines()[0][:160]})


class LogWaiter(logging.Handler):
    """polymsg's log records matching ``pattern`` (on the root logger, whichever polymsg
    module logs them, so a test does not depend on which module that is)."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.INFO)
        self.pattern = re.compile(pattern)
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name.startswith("polymsg") and self.pattern.search(message):
            self.messages.append(message)
            self.seen.set()


class CastStream:
    """Casts ``method(value=0, 1, 2...)`` from a thread of its own until stopped;
    ``returned`` records the values whose ``cast()`` returned without error."""

    def __init__(self, client: polymsg.RPCClient, method: str = "record") -> None:
        self.returned = Recorder()
        self._client, self._method = client, method
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1)
        self._sender: Future[None] | None = None

    def __enter__(self) -> CastStream:
        self._sender = self._pool.submit(self._run)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        value = 0
        while not self._stop.is_set():
            self._client.cast({}, self._method, value=value)
            self.returned.add(value)
            value += 1

    def at_least(self, count: int, timeout: float) -> None:
        """Wait until ``count`` casts returned in all."""
        self.returned.wait_for_count(count, timeout)

    def stop(self, timeout: float) -> list[int]:
        """Stop sending; what returned (raises what a cast raised)."""
        self._stop.set()
        assert self._sender is not None
        self._sender.result(timeout)
        return self.returned.events
