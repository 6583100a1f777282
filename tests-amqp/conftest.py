"""Fixtures of the tests both RabbitMQ drivers share: each test runs on each driver.

The broker is the one at ``$POLYMSG_TEST_RABBIT_URL``; ``$POLYMSG_TEST_RABBITMQCTL``
says how to run ``rabbitmqctl`` against it (``scripts/services.sh env`` prints
both). The session works in a virtual host of its own, deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from amqptest import DRIVERS, LogWaiter, Matrix, base_url, ctl


@contextlib.contextmanager
def new_vhost() -> Iterator[str]:
    """A virtual host the guest user may use, deleted afterwards."""
    base_url()
    name = f"polymsg-amqp-{uuid.uuid4().hex[:8]}"
    ctl("add_vhost", name)
    try:
        ctl("set_permissions", "-p", name, base_url().hosts[0].username or "guest",
            ".*", ".*", ".*")
        yield name
    finally:
        ctl("delete_vhost", name)


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A virtual host of this session's own."""
    with new_vhost() as name:
        yield name


@pytest.fixture
def own_vhost() -> Iterator[str]:
    """A virtual host of this test's own: the broker's connections in it are the
    test's only, none left closing by an earlier test."""
    with new_vhost() as name:
        yield name


@pytest.fixture(params=DRIVERS)
def scheme(request: pytest.FixtureRequest) -> str:
    """The driver under test: ``rabbit+kombu`` or ``rabbit+pika``."""
    return str(request.param)


@pytest.fixture
def topic() -> str:
    """A topic no other test uses."""
    return f"amqp-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def matrix() -> Iterator[Matrix]:
    """Collects the failure matrix; written to ``.run/reports/failure-matrix.json``
    (``failure-matrix-rabbit<version>.json`` against a broker of a version named by
    ``$POLYMSG_TEST_RABBIT_VERSION``: scripts/test.sh runs both at once)."""
    found = Matrix()
    yield found
    if found.rows:
        out = Path(__file__).resolve().parents[1] / ".run" / "reports"
        out.mkdir(parents=True, exist_ok=True)
        version = os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "").split("-")[0]
        name = f"failure-matrix-rabbit{version}.json" if version else "failure-matrix.json"
        (out / name).write_text(json.dumps(found.rows, indent=1))


@pytest.fixture
def raw(vhost: str) -> Iterator[Any]:
    """A plain pika channel on the session's virtual host, to do what polymsg would not
    (publish garbage, declare a queue of its own)."""
    host = base_url().hosts[0]
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        host.hostname or "127.0.0.1", host.port or 5672, vhost,
        pika.PlainCredentials(host.username or "guest", host.password or "guest")))
    try:
        yield connection.channel()
    finally:
        connection.close()


@pytest.fixture
def logged() -> Iterator[Callable[[str], LogWaiter]]:
    """``logged(pattern)``: a waiter on polymsg's INFO and higher records matching it."""
    root = logging.getLogger()
    level, handlers = root.level, []

    def make(pattern: str) -> LogWaiter:
        handlers.append(LogWaiter(pattern))
        root.addHandler(handlers[-1])
        root.setLevel(min(root.level, logging.INFO))
        return handlers[-1]

    yield make
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)
