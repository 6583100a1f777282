"""polymsg's conformance suite, shipped for driver authors and deployments.

Every driver runs the same tests. A driver's test module is a page of empty
subclasses::

    from polymsg.testing import ConformanceTests

    class TestMemoryConformance(ConformanceTests):
        url = "memory://"

Subclass single areas (:class:`RPCTests`, :class:`NotificationTests`…) to
run part of the suite; override :meth:`DriverFixtures.get_transport_url`
(or the ``transport_url`` fixture) to give each test its own URL. To check a
live deployment, load the opt-in plugin::

    pytest -p polymsg.testing.plugin --polymsg-url rabbit://… --pyargs polymsg.testing.live

pytest is needed only by this package, not by polymsg itself.
"""

import pytest

# Before the test modules are imported, so pytest explains failing asserts.
pytest.register_assert_rewrite(
    "polymsg.testing._aio", "polymsg.testing._capabilities", "polymsg.testing._delivery",
    "polymsg.testing._errors", "polymsg.testing._conversions", "polymsg.testing._oslo_behaviours",
    "polymsg.testing._fixtures", "polymsg.testing._lifecycle", "polymsg.testing._multi_host",
    "polymsg.testing._notifications",
    "polymsg.testing._rpc", "polymsg.testing._security", "polymsg.testing._spread",
    "polymsg.testing._support", "polymsg.testing._versions",
)

from polymsg.testing._aio import AsyncConformance  # noqa: E402
from polymsg.testing._capabilities import CapabilityTests  # noqa: E402
from polymsg.testing._conversions import ConversionTests  # noqa: E402
from polymsg.testing._delivery import DeliveryTests  # noqa: E402
from polymsg.testing._errors import ErrorTests  # noqa: E402
from polymsg.testing._fixtures import DriverFixtures, Harness  # noqa: E402
from polymsg.testing._lifecycle import LifecycleTests  # noqa: E402
from polymsg.testing._multi_host import MultiHostTests  # noqa: E402
from polymsg.testing._notifications import NotificationTests  # noqa: E402
from polymsg.testing._oslo_behaviours import OsloBehaviourTests  # noqa: E402
from polymsg.testing._rpc import RPCTests  # noqa: E402
from polymsg.testing._security import SecurityTests  # noqa: E402
from polymsg.testing._spread import SpreadTests  # noqa: E402
from polymsg.testing._suite import ConformanceTests  # noqa: E402
from polymsg.testing._support import (  # noqa: E402
    Invocation,
    Notification,
    NotificationEndpoint,
    Recorder,
    RPCEndpoint,
)
from polymsg.testing._versions import VersionTests  # noqa: E402

__all__ = [
    "AsyncConformance",
    "CapabilityTests",
    "ConformanceTests",
    "ConversionTests",
    "DeliveryTests",
    "DriverFixtures",
    "ErrorTests",
    "Harness",
    "Invocation",
    "LifecycleTests",
    "MultiHostTests",
    "Notification",
    "NotificationEndpoint",
    "NotificationTests",
    "OsloBehaviourTests",
    "RPCEndpoint",
    "RPCTests",
    "Recorder",
    "SecurityTests",
    "SpreadTests",
    "VersionTests",
]
