"""Fixtures shared by the polymsg-pika tests: one virtual host per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rabbit import FAST_RETRY, temporary_vhost, url


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    """A virtual host of this session's own, so nothing else on the broker interferes."""
    with temporary_vhost() as name:
        yield name


@pytest.fixture(scope="session")
def pika_url(vhost: str) -> str:
    """``rabbit+pika://`` on the session's virtual host, reconnecting quickly."""
    return url("rabbit+pika", vhost, FAST_RETRY)
