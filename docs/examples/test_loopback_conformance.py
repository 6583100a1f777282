"""The loopback driver's own tests: the whole conformance suite, in one class.

Run with the driver importable and registered (installed, or on the path
with its entry point)::

    pytest test_loopback_conformance.py
"""

from polymsg.testing import ConformanceTests


class TestLoopbackConformance(ConformanceTests):
    """Every conformance test, against ``loopback://``.

    ``capabilities`` is what the driver is meant to declare: the suite
    checks the transport declares exactly that, then runs the tests of those
    capabilities and checks the others raise ``NotSupported``.
    """

    url = "loopback://"
    capabilities = frozenset({"rpc", "fanout", "notify"})
