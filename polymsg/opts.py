"""polymsg's configuration options, for ``oslo-config-generator --namespace polymsg``."""

from __future__ import annotations

from oslo_config import cfg

from polymsg._config import DEFAULT_OPTS

__all__ = ["list_opts"]


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """``[(group, [opts])]`` for core polymsg; each driver distribution lists its own."""
    from polymsg._memory import MemoryDriver
    from polymsg._observability import list_opts as observability_opts

    result: list[tuple[str | None, list[cfg.Opt]]] = [("DEFAULT", list(DEFAULT_OPTS))]
    result.extend(observability_opts())
    if MemoryDriver.options_group and MemoryDriver.list_opts():
        result.append((MemoryDriver.options_group, list(MemoryDriver.list_opts())))
    from polymsg import _prometheus

    groups = dict(result)  # the Prometheus options join [polymsg_observability]
    if _prometheus.GROUP in groups:
        groups[_prometheus.GROUP].extend(_prometheus.OPTS)
    else:
        result.append((_prometheus.GROUP, list(_prometheus.OPTS)))
    return result
