"""Fixtures shared by the polymsg-pika tests: one virtual host per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from rabbit import FAST_RETRY, base_url, temporary_vhost, url

# The TCP proxy (proxy.py) is shared with the tests of both RabbitMQ drivers.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests-amqp"))


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A virtual host of this session's own, so nothing else on the broker interferes."""
    with temporary_vhost() as name:
        yield name


@pytest.fixture(scope="session")
def pika_url(vhost: str) -> str:
    """``rabbit+pika://`` on the session's virtual host, reconnecting quickly."""
    return url("rabbit+pika", vhost, FAST_RETRY)


@pytest.fixture
def raw(vhost: str) -> Iterator[Any]:
    """A plain pika channel on the session's virtual host, for publishing by hand."""
    host = base_url().hosts[0]
    params = pika.ConnectionParameters(
        host.hostname or "127.0.0.1", host.port or 5672, vhost,
        pika.PlainCredentials(host.username or "guest", host.password or "guest"))
    connection = pika.BlockingConnection(params)
    try:
        yield connection.channel()
    finally:
        connection.close()
