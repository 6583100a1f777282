"""Driver lookup: URL scheme -> Driver class, through stevedore entry points."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from stevedore import driver as stevedore_driver

from polymsg._exceptions import DriverLoadFailure
from polymsg.driver import Driver

__all__ = ["ALIASES", "DISTRIBUTIONS", "NAMESPACE", "load_driver"]

LOG = logging.getLogger(__name__)

NAMESPACE = "polymsg.drivers"

#: Short names owned by core, so two distributions never fight over one.
#: ``fake`` is the URL oslo.messaging's unit tests use for its in-process driver.
ALIASES = {"rabbit": "rabbit+kombu", "fake": "memory"}

#: Which distribution provides each first-party driver (for install hints).
DISTRIBUTIONS = {
    "memory": "polymsg",
    "rabbit+kombu": "polymsg-kombu",
    "rabbit+pika": "polymsg-pika",
    "zmq": "polymsg-zmq",
}


def canonical_name(scheme: str) -> str:
    """The entry-point name a URL scheme resolves to (``rabbit`` -> ``rabbit+kombu``)."""
    return ALIASES.get(scheme, scheme)


def _advertised(name: str) -> bool:
    """True when an installed distribution registers ``name`` (checked first, so
    stevedore is only asked for drivers that exist and logs nothing)."""
    return bool(entry_points(group=NAMESPACE, name=name))


def _install_hint(name: str, dist: str | None) -> str:
    builtin = "(memory:// is built in: one process, no broker, e.g. for unit tests)"
    if dist is None:
        return (f"install a distribution registering {name!r} on the {NAMESPACE!r} "
                f"entry-point group {builtin}")
    return (f"install the {dist!r} distribution: from a polymsg checkout, "
            f"'pip install ./drivers/{dist}' (or a wheel built from that directory); "
            f"from a package index that has it, 'pip install {dist}' "
            f"{builtin}")


def load_driver(scheme: str) -> type[Driver]:
    """The Driver class for ``scheme``; :class:`DriverLoadFailure` says what to install."""
    name = canonical_name(scheme)
    if not _advertised(name):
        dist = DISTRIBUTIONS.get(name)
        raise DriverLoadFailure(f"no polymsg driver for {scheme!r}: {_install_hint(name, dist)}")
    try:
        manager: Any = stevedore_driver.DriverManager(NAMESPACE, name, invoke_on_load=False)
        plugin = manager.driver
    except Exception as exc:  # an installed driver failed to import
        raise DriverLoadFailure(f"the polymsg driver for {scheme!r} failed to load: {exc}") from exc
    if not (isinstance(plugin, type) and issubclass(plugin, Driver)):
        raise DriverLoadFailure(f"entry point {name!r} is not a polymsg.driver.Driver subclass")
    return plugin
