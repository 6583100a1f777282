"""The whole conformance suite in one mixin."""

from __future__ import annotations

from polymsg.testing._capabilities import CapabilityTests
from polymsg.testing._conversions import ConversionTests
from polymsg.testing._delivery import DeliveryTests
from polymsg.testing._errors import ErrorTests
from polymsg.testing._lifecycle import LifecycleTests
from polymsg.testing._multi_host import MultiHostTests
from polymsg.testing._notifications import NotificationTests
from polymsg.testing._oslo_behaviours import OsloBehaviourTests
from polymsg.testing._rpc import RPCTests
from polymsg.testing._security import SecurityTests
from polymsg.testing._spread import SpreadTests
from polymsg.testing._versions import VersionTests

__all__ = ["ConformanceTests"]


class ConformanceTests(CapabilityTests, RPCTests, ErrorTests, VersionTests, NotificationTests,
                       DeliveryTests, LifecycleTests, MultiHostTests, SecurityTests,
                       ConversionTests, OsloBehaviourTests, SpreadTests):
    """Every conformance test. A driver's test module subclasses it once::

        from polymsg.testing import ConformanceTests

        class TestMyDriverConformance(ConformanceTests):
            url = "mydriver://localhost/"
            capabilities = frozenset({"rpc", "fanout", "notify"})

    Tests of capabilities the transport does not declare are skipped (and
    checked to raise :class:`polymsg.NotSupported` instead).
    """
