"""polymsg's conformance suite against RabbitMQ through kombu."""

from __future__ import annotations

import pytest

from polymsg.driver import CAPABILITIES
from polymsg.testing import AsyncConformance, ConformanceTests


class TestKombuConformance(ConformanceTests):
    capabilities = CAPABILITIES

    @pytest.fixture
    def transport_url(self, rabbit_url: str) -> str:
        return rabbit_url

    def get_unreachable_url(self) -> str:
        # Port 1 refuses connections at once; no backoff to wait through.
        return "rabbit+kombu://guest:guest@127.0.0.1:1/?retry_interval=0.05&retry_backoff=0"


class TestKombuAioConformance(AsyncConformance, TestKombuConformance):
    """The same scenarios through polymsg.aio."""
