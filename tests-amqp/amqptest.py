"""Helpers of the tests both RabbitMQ drivers share (a module name no other tests use)."""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from oslo_config import cfg

import polymsg
from polymsg._config import register_defaults
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


def shared_conf(control_exchange: str, *, oslo_options_first: bool = False) -> cfg.ConfigOpts:
    """One ConfigOpts for polymsg and oslo.messaging, on ``control_exchange``.

    oslo.messaging 18 registers its tracing and metrics options on the global
    CONF only, so they are registered here. Then either polymsg's options
    (oslo.messaging registers its own when it makes a transport), or, with
    ``oslo_options_first``, oslo.messaging's client, pool and transport
    options, whose twins polymsg then reuses (a service migrating between the
    two is configured exactly so).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oslo.messaging imports eventlet, which warns
        from oslo_messaging import server, transport
        from oslo_messaging._metrics import client as metrics
        from oslo_messaging._tracing import client as tracing
        from oslo_messaging.rpc import client
    conf = cfg.ConfigOpts()
    conf([])
    conf.register_opts(tracing.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    if oslo_options_first:
        conf.register_opts(client._client_opts)
        conf.register_opts(server._pool_opts)
        conf.register_opts(transport._transport_opts)
    else:
        register_defaults(conf)
    conf.set_override("control_exchange", control_exchange)
    return conf


class Worker:
    """An endpoint recording what it ran; ``sleepy`` and ``busy`` run long."""

    def __init__(self) -> None:
        self.values = Recorder()

    def record(self, ctxt: Any, value: int) -> None:
        self.values.add(value)

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def sleepy(self, ctxt: Any, seconds: float) -> str:
        # A long-running method: it blocks its worker thread for `seconds`.
        threading.Event().wait(seconds)
        return "slept"

    def busy(self, ctxt: Any, seconds: float) -> int:
        # A CPU-bound method: it keeps the interpreter busy for `seconds`.
        deadline, loops = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            loops += sum(range(1000)) and 1
        return loops

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.values.add(payload["n"])


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
