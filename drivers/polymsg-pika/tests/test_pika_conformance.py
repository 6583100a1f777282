"""polymsg's conformance suite against a real RabbitMQ through rabbit+pika://."""

from __future__ import annotations

import threading

import pytest
from polymsg_pika import PikaDriver

from polymsg.testing import AsyncConformance, ConformanceTests


class TestPikaConformance(ConformanceTests):
    capabilities = PikaDriver.capabilities

    @pytest.fixture
    def transport_url(self, pika_url: str) -> str:
        return pika_url

    def get_unreachable_url(self) -> str:
        return "rabbit+pika://guest:guest@127.0.0.1:1/?retry_interval=0.1"

    def thread_may_linger(self, thread: threading.Thread) -> bool:
        return False


class TestPikaAioConformance(AsyncConformance, TestPikaConformance):
    """The same scenarios through polymsg.aio."""
