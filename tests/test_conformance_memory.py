"""The conformance suite against the in-process memory driver, as a third party runs it."""

from collections import Counter

import pytest

from polymsg import testing
from polymsg.testing import AsyncConformance, ConformanceTests


class TestMemoryConformance(ConformanceTests):
    url = "memory://"
    capabilities = frozenset({
        "rpc", "fanout", "notify", "pools", "requeue", "store_and_forward",
        "queue_ttl", "message_ttl",
    })


class TestMemoryAioConformance(AsyncConformance, TestMemoryConformance):
    """The same scenarios through polymsg.aio."""


# The opt-in plugin and polymsg.testing.live, run the way a deployment would.
LIVE = ("-p", "polymsg.testing.plugin", "--pyargs", "polymsg.testing.live",
        "-p", "no:cacheprovider")
PICK = ("-k", "call_round_trips_every_json_type or every_priority")


def test_live_suite_runs_against_polymsg_url(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        *LIVE, *PICK, "--polymsg-url", "memory://")
    result.assert_outcomes(passed=2)


def test_live_suite_skips_without_url(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(*LIVE, *PICK, "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no --polymsg-url given*"])


def test_mixins_define_distinct_tests() -> None:
    # A test name defined by two mixins would silently hide one of them.
    mixins = [cls for cls in ConformanceTests.__mro__[1:] if cls.__name__ in testing.__all__]
    names = Counter(name for cls in mixins for name in vars(cls) if name.startswith("test_"))
    assert [name for name, count in names.items() if count > 1] == []
