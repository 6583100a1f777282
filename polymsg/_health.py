"""The transports a process has, and their health readings, for metrics exporters.

:func:`get_transport` enrolls each transport (:func:`watch`) and
:meth:`Transport.cleanup` removes it (:func:`forget`). An exporter (the
OpenTelemetry instruments of :mod:`polymsg._health_otel`) calls
:func:`readings` when it collects: each live transport's
:meth:`Driver.health` is read then, never in between, so health costs
nothing while no one collects.

Every reading carries three labels besides the driver's own: ``system``
(the messaging system, ``rabbitmq``, ``zeromq``, ``memory``), ``driver`` (the
driver's entry-point name, ``rabbit+kombu``) and ``transport``, an id made of
the URL's driver, hosts and virtual host, never its user names, passwords or
query (``rabbit+kombu://broker1:5672,broker2:5672/nova``), with ``#2``,
``#3``... appended while one process has several live transports to the same
place.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polymsg._observe import system_of
from polymsg._ratelimit import LogLimiter
from polymsg._registry import canonical_name
from polymsg._url import TransportURL
from polymsg.driver import HEALTH_STATS, Driver

if TYPE_CHECKING:
    from polymsg._transport import Transport

__all__ = ["Reading", "forget", "label_of", "readings", "transport_id", "watch"]

LOG = logging.getLogger(__name__)

_FAILED = LogLimiter(LOG, "failed health readings")


@dataclass(frozen=True)
class Reading:
    """One value of one health stat, with every label it is exported with."""

    name: str
    value: float
    labels: dict[str, str]


@dataclass(frozen=True)
class _Watched:
    driver: weakref.ref[Driver]
    labels: dict[str, str]


_lock = threading.Lock()
_watched: dict[int, _Watched] = {}


def transport_id(url: TransportURL) -> str:
    """``driver://host:port,host:port/vhost``: where a transport goes, without credentials
    or query."""
    hosts = ",".join(
        (f"[{h.hostname}]" if h.hostname and ":" in h.hostname else (h.hostname or ""))
        + (f":{h.port}" if h.port is not None else "")
        for h in url.hosts)
    return f"{canonical_name(url.transport)}://{hosts}/{url.virtual_host or ''}"


def watch(transport: Transport) -> None:
    """Report ``transport``'s health from now on (until :func:`forget`)."""
    base = transport_id(transport.url)
    driver = transport._driver
    with _lock:
        taken = {w.labels["transport"] for w in _watched.values()}
        label, count = base, 1
        while label in taken:
            count += 1
            label = f"{base}#{count}"
        labels = {"system": system_of(transport),
                  "driver": canonical_name(transport.url.transport), "transport": label}
        _watched[id(transport)] = _Watched(weakref.ref(driver), labels)
        weakref.finalize(transport, _forget_id, id(transport))
    from polymsg._health_otel import instrument_global

    instrument_global()


def forget(transport: Transport) -> None:
    """Stop reporting ``transport`` (it was cleaned up)."""
    _forget_id(id(transport))


def _forget_id(key: int) -> None:
    with _lock:
        _watched.pop(key, None)


def label_of(transport: Transport) -> str | None:
    """The ``transport`` label ``transport``'s readings carry (None: not reported)."""
    with _lock:
        watched = _watched.get(id(transport))
        return watched.labels["transport"] if watched is not None else None


def watched_labels() -> list[dict[str, str]]:
    """The ``system``, ``driver`` and ``transport`` labels of every transport reported now."""
    with _lock:
        return [dict(w.labels) for w in _watched.values()]


def readings(name: str | None = None) -> Iterator[Reading]:
    """The current readings of every live transport (of stat ``name`` only, if given)."""
    with _lock:
        watched = list(_watched.values())
    for entry in watched:
        driver = entry.driver()
        if driver is None:
            continue
        try:
            stats = list(driver.health())
        except Exception as exc:  # a driver's bug must not break the collector
            _FAILED.log("reading the health of %s failed: %r", entry.labels["transport"], exc)
            continue
        for stat in stats:
            if stat.name not in HEALTH_STATS or (name is not None and stat.name != name):
                continue
            yield Reading(stat.name, float(stat.value), {**stat.labels, **entry.labels})
