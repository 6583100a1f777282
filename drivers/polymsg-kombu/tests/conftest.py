"""Fixtures of polymsg-kombu's tests: a RabbitMQ virtual host of their own.

The broker is the one at ``$POLYMSG_TEST_RABBIT_URL`` (``scripts/services.sh``
starts it; CI always sets it). When ``$POLYMSG_TEST_RABBITMQCTL`` is set too,
the session creates a virtual host of its own, so nothing here sees (or
disturbs) another test run on the same broker, and deletes it at the end;
otherwise tests rely on unique names on the URL's virtual host.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kombutest import RABBIT_URL, RABBITMQCTL, rabbitmqctl, with_vhost

import polymsg


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
