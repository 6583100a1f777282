"""polymsg's conformance suite on both RabbitMQ drivers on quorum queues, and with stream
fanout: the scenarios a queue type changes on both drivers, the others on one
(``conformance_wanted`` in conftest.py says which)."""

from __future__ import annotations

import threading

import pytest
from polymsg_pika import PikaDriver

from polymsg.driver import CAPABILITIES
from polymsg.testing import ConformanceTests

from .conftest import FAST_RETRY, OPTION_SETS, broker_url

# The classic set is the drivers' own conformance tests, which scripts/test.sh
# runs on this broker too.
QUEUE_TYPES = [name for name in OPTION_SETS if name != "classic"]


def _url(scheme: str, vhost: str, options: str) -> str:
    return broker_url(scheme, vhost, "&".join(q for q in (options, FAST_RETRY) if q))


class TestKombuOptionSets(ConformanceTests):
    driver = "rabbit+kombu"
    capabilities = CAPABILITIES
    # RabbitMQ removes an expired quorum queue up to ~5 s after its x-expires.
    ttl_grace = 6.0

    @pytest.fixture(params=QUEUE_TYPES)
    def transport_url(self, request: pytest.FixtureRequest, vhost: str) -> str:
        return _url("rabbit+kombu", vhost, OPTION_SETS[request.param])

    def get_unreachable_url(self) -> str:
        return "rabbit+kombu://guest:guest@127.0.0.1:1/?rabbit_retry_interval=0.05&rabbit_retry_backoff=0"


class TestPikaOptionSets(ConformanceTests):
    driver = "rabbit+pika"
    capabilities = PikaDriver.capabilities
    ttl_grace = 6.0

    @pytest.fixture(params=QUEUE_TYPES)
    def transport_url(self, request: pytest.FixtureRequest, vhost: str) -> str:
        return _url("rabbit+pika", vhost, OPTION_SETS[request.param])

    def get_unreachable_url(self) -> str:
        return "rabbit+pika://guest:guest@127.0.0.1:1/?rabbit_retry_interval=0.1"

    def thread_may_linger(self, thread: threading.Thread) -> bool:
        return False
