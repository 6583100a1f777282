"""Helpers for tests against the real RabbitMQ the test command starts.

``POLYMSG_TEST_RABBIT_URL`` (e.g. ``rabbit://guest:guest@127.0.0.1:5673/``)
says where it is and ``POLYMSG_TEST_RABBITMQCTL`` how to run ``rabbitmqctl``
against it; ``scripts/services.sh env`` prints both.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import polymsg

#: Reconnect quickly in tests (the defaults wait 1 s, then longer).
FAST_RETRY = "rabbit_retry_interval=0.2&rabbit_retry_backoff=0.3&rabbit_interval_max=1"


def base_url() -> polymsg.TransportURL:
    """The test broker's URL; fails the test with instructions when unset."""
    text = os.environ.get("POLYMSG_TEST_RABBIT_URL")
    if not text:
        pytest.fail("POLYMSG_TEST_RABBIT_URL is not set: run `scripts/services.sh start` and "
                    "`eval \"$(scripts/services.sh env)\"` (scripts/test.sh does both)")
    return polymsg.TransportURL.parse(text)


def url(scheme: str, vhost: str | None = None, query: str = "") -> str:
    """A URL of ``scheme`` (``rabbit+pika``, ``rabbit+kombu``, ``rabbit``) on the test
    broker, in ``vhost`` (default: the base URL's), with ``query`` appended."""
    base = base_url()
    rendered = polymsg.TransportURL(
        transport=scheme, hosts=base.hosts,
        virtual_host=vhost if vhost is not None else base.virtual_host,
    ).render(hide_password=False)
    return f"{rendered}?{query}" if query else rendered


def ctl(*args: str) -> str:
    """Run ``rabbitmqctl`` against the test broker; fails the test when it cannot."""
    command = os.environ.get("POLYMSG_TEST_RABBITMQCTL")
    if not command:
        pytest.fail("POLYMSG_TEST_RABBITMQCTL is not set: `eval \"$(scripts/services.sh env)\"`")
    done = subprocess.run([*shlex.split(command), "-q", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


@contextmanager
def temporary_vhost(prefix: str = "polymsg-pika-test") -> Iterator[str]:
    """A fresh virtual host the guest user may use, deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ctl("add_vhost", name)
    try:
        ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        ctl("delete_vhost", name)
