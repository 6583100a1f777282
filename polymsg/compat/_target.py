"""oslo.messaging's mutable Target, and endpoints whose target is one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polymsg

__all__ = ["Target", "endpoints_for", "to_target"]

_FIELDS = ("exchange", "topic", "namespace", "version", "server", "fanout")


class Target:
    """oslo.messaging's Target: plain, mutable attributes; calling it gives a copy
    with changes (``target(server="host2")``). polymsg turns it into a
    :class:`polymsg.Target` (which validates the fields) where it is used."""

    def __init__(self, exchange: str | None = None, topic: str | None = None,
                 namespace: str | None = None, version: str | None = None,
                 server: str | None = None, fanout: bool | None = None,
                 legacy_namespaces: Sequence[str] | None = None) -> None:
        self.exchange = exchange
        self.topic = topic
        self.namespace = namespace
        self.version = version
        self.server = server
        self.fanout = fanout
        self.accepted_namespaces = [namespace, *(legacy_namespaces or [])]

    def __call__(self, **kwargs: Any) -> Target:
        for name in _FIELDS:
            kwargs.setdefault(name, getattr(self, name))
        return Target(**kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and vars(self) == vars(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)}" for name in _FIELDS
                          if getattr(self, name))
        return f"<Target {shown}>"


def to_target(target: Any) -> polymsg.Target:
    """``target`` (an oslo-style or a polymsg Target) as a :class:`polymsg.Target`."""
    if isinstance(target, polymsg.Target):
        return target
    if isinstance(target, Target):
        if target.accepted_namespaces[1:]:
            raise polymsg.InvalidTarget("legacy_namespaces are not supported: one namespace "
                                        "per endpoint target")
        return polymsg.Target(**{name: getattr(target, name) for name in _FIELDS[:-1]},
                              fanout=bool(target.fanout))
    raise TypeError(f"a target must be a Target, got {target!r}")


class _Endpoint:
    """An endpoint seen with its oslo-style ``target`` as a polymsg.Target."""

    def __init__(self, endpoint: Any, target: polymsg.Target) -> None:
        self.__dict__["_endpoint"] = endpoint
        self.__dict__["target"] = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_endpoint"], name)

    def __repr__(self) -> str:
        return repr(self.__dict__["_endpoint"])


def endpoints_for(endpoints: Sequence[Any]) -> list[Any]:
    """``endpoints``, each with an oslo-style ``target`` seen as a polymsg.Target
    (a ``target`` of any other type stays, and the server refuses it)."""
    return [_Endpoint(e, to_target(e.target)) if isinstance(getattr(e, "target", None), Target)
            else e for e in endpoints]
