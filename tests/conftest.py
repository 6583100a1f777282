"""Shared pytest configuration of polymsg's core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import polymsg

# pytester runs pytest in a subprocess: the plugin tests use it to run the
# shipped suite exactly as a user's command line would.
pytest_plugins = ["pytester"]


@pytest.fixture
def transports() -> Iterator[list[polymsg.Transport]]:
    """A list a test adds its transports to; each is cleaned up after the test."""
    made: list[polymsg.Transport] = []
    yield made
    for transport in made:
        transport.cleanup()
