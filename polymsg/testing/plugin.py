"""Opt-in pytest plugin: ``--polymsg-url`` for running the suite against a deployment.

Not registered automatically. Load it explicitly::

    pytest -p polymsg.testing.plugin --polymsg-url rabbit://user:pw@broker:5672/ \\
        --pyargs polymsg.testing.live

Tests in :mod:`polymsg.testing.live` use that URL (and skip without one);
other tests can read it from the ``polymsg_url`` fixture.
"""

from __future__ import annotations

import pytest

__all__ = ["polymsg_url", "pytest_addoption"]

OPTION = "polymsg_url"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--polymsg-url``."""
    group = parser.getgroup("polymsg", "polymsg conformance suite")
    group.addoption(
        "--polymsg-url", dest=OPTION, default=None, metavar="URL",
        help="transport URL the polymsg conformance suite runs against "
             "(e.g. memory://, rabbit://guest:guest@localhost:5672/)",
    )


@pytest.fixture
def polymsg_url(pytestconfig: pytest.Config) -> str | None:
    """The ``--polymsg-url`` given on the command line, or ``None``."""
    value = pytestconfig.getoption(OPTION, default=None)
    return str(value) if value else None
