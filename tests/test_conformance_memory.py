"""The conformance suite against the in-process memory driver, as a third party runs it."""

from polymsg.testing import ConformanceTests


class TestMemoryConformance(ConformanceTests):
    url = "memory://"
    capabilities = frozenset({
        "rpc", "fanout", "notify", "pools", "requeue", "store_and_forward",
        "queue_ttl", "message_ttl",
    })
