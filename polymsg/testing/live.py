"""The conformance suite against the URL given with ``--polymsg-url``.

Run it against any deployment (needs the opt-in plugin)::

    pytest -p polymsg.testing.plugin --polymsg-url memory:// --pyargs polymsg.testing.live

Every test skips when no URL is given.
"""

from __future__ import annotations

import pytest

from polymsg.testing._fixtures import isolate_memory_url
from polymsg.testing._suite import ConformanceTests
from polymsg.testing.plugin import OPTION

__all__ = ["TestLive"]


class TestLive(ConformanceTests):
    """:class:`~polymsg.testing.ConformanceTests` on ``--polymsg-url``."""

    @pytest.fixture
    def transport_url(self, pytestconfig: pytest.Config) -> str:
        """The ``--polymsg-url`` URL (a bare ``memory://`` gets a bus per test)."""
        url = pytestconfig.getoption(OPTION, default=None)
        if not url:
            pytest.skip("no --polymsg-url given "
                        "(run: pytest -p polymsg.testing.plugin --polymsg-url URL "
                        "--pyargs polymsg.testing.live)")
        return isolate_memory_url(str(url))
