"""Target: where a message goes, or what a server listens to."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from polymsg._exceptions import InvalidTarget

__all__ = ["Target", "check_ttl", "parse_version", "version_is_compatible"]

_VERSION = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class Target:
    """Names a destination (for clients) or a subscription (for servers).

    A sender needs ``topic``; ``server`` pins one server of the topic and
    ``fanout=True`` reaches every server of it (casts only). A server needs
    ``topic`` and ``server``. ``exchange`` isolates (``None`` means the
    configured ``control_exchange``); ``namespace`` and ``version``
    (``"MAJOR.MINOR"``) select endpoints.
    """

    topic: str | None = None
    server: str | None = None
    exchange: str | None = None
    namespace: str | None = None
    version: str | None = None
    fanout: bool = False

    def __post_init__(self) -> None:
        for name in ("topic", "server", "exchange", "namespace"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidTarget(f"Target {name} must be a non-empty string, got {value!r}")
        if self.version is not None:
            parse_version(self.version)
        if not isinstance(self.fanout, bool):
            raise InvalidTarget(f"Target fanout must be a bool, got {self.fanout!r}")

    def replace(self, **changes: Any) -> Target:
        """A copy with ``changes`` applied."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise InvalidTarget(f"invalid Target field: {exc}") from exc


def parse_version(version: str) -> tuple[int, int]:
    """``"1.3"`` -> ``(1, 3)``; anything else raises :class:`InvalidTarget`."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidTarget(f"version must look like 'MAJOR.MINOR', got {version!r}")
    major, minor = version.split(".")
    return int(major), int(minor)


def version_is_compatible(available: str, wanted: str) -> bool:
    """True when ``available`` can serve ``wanted``: same major, minor at least as high."""
    have, want = parse_version(available), parse_version(wanted)
    return have[0] == want[0] and have[1] >= want[1]


def check_ttl(name: str, value: float | None) -> float | None:
    """Validate a TTL hint: ``None`` or a positive number of seconds (as float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)
