"""Fixtures of polymsg-kombu's tests: a RabbitMQ virtual host of their own.

The broker is the one at ``$POLYMSG_TEST_RABBIT_URL`` (``scripts/services.sh``
starts it; CI always sets it). When ``$POLYMSG_TEST_RABBITMQCTL`` is set too,
the session creates a virtual host of its own, so nothing here sees (or
disturbs) another test run on the same broker, and deletes it at the end;
otherwise tests rely on unique names on the URL's virtual host.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator

import pytest

import polymsg

RABBIT_URL = os.environ.get("POLYMSG_TEST_RABBIT_URL")
RABBITMQCTL = os.environ.get("POLYMSG_TEST_RABBITMQCTL")


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` with ``args``; its output. Needs ``$POLYMSG_TEST_RABBITMQCTL``."""
    if not RABBITMQCTL:
        pytest.skip("POLYMSG_TEST_RABBITMQCTL is not set (scripts/services.sh env prints it)")
    done = subprocess.run([*shlex.split(RABBITMQCTL), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def with_vhost(url: str, vhost: str | None, scheme: str = "rabbit+kombu") -> str:
    """``url`` with another scheme and virtual host (``None`` keeps the URL's)."""
    parsed = polymsg.TransportURL.parse(url)
    hosts = ",".join(h._render(hide_password=False) for h in parsed.hosts)
    path = vhost if vhost is not None else (parsed.virtual_host or "")
    return f"{scheme}://{hosts}/{path}"


@pytest.fixture(scope="session")
def vhost() -> Iterator[str | None]:
    """This session's virtual host (``None``: the URL's own, when rabbitmqctl is unknown)."""
    if not RABBIT_URL:
        pytest.skip("POLYMSG_TEST_RABBIT_URL is not set: start RabbitMQ with "
                    "scripts/services.sh start and eval \"$(scripts/services.sh env)\"")
    if not RABBITMQCTL:
        yield None
        return
    name = f"polymsg-kombu-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    user = polymsg.TransportURL.parse(RABBIT_URL).hosts[0].username or "guest"
    rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    try:
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def rabbit_url(vhost: str | None) -> str:
    """``rabbit+kombu://`` URL of the test broker, on this session's virtual host."""
    assert RABBIT_URL is not None
    return with_vhost(RABBIT_URL, vhost)


@pytest.fixture(scope="session")
def oslo_url(vhost: str | None) -> str:
    """The same broker and virtual host as a ``rabbit://`` URL for oslo.messaging."""
    assert RABBIT_URL is not None
    return with_vhost(RABBIT_URL, vhost, scheme="rabbit")
