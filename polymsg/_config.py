"""polymsg's own options and their registration on a caller's ConfigOpts.

One process may hold polymsg and oslo.messaging on one ConfigOpts (a service
migrating one part at a time). Both libraries define ``[DEFAULT]
transport_url``, ``control_exchange``, ``rpc_response_timeout`` and
``executor_thread_pool_size``; oslo.config refuses a second, different option
of the same name. So polymsg registers *twins* (:class:`_Twin`): options that
compare equal to the other library's option of the same name and type, so
whichever library registers second reuses the first one's option instead of
failing. Each library keeps its own default:

* the registered option carries the other library's default (``rabbit://``,
  ``openstack``), so oslo.messaging reads what it always read, in either order;
* polymsg reads these options through :func:`value`, which gives polymsg's own
  default (no URL, ``polymsg``) while the option holds oslo.messaging's
  default and nobody set it.

A value set by the user (config file, command line, ``set_override``,
``set_default``) or chosen by the application as the default (oslo.messaging's
``set_transport_defaults``) applies to both libraries.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from oslo_config import cfg

__all__ = ["DEFAULT_OPTS", "register_opts", "value", "warn_unknown_keys"]

LOG = logging.getLogger(__name__)


class _Twin:
    """Mixin: an option equal to any option of the same class and name.

    When the twin is registered second, it adopts nothing (the first option
    stays); when it is registered first and the other library's option comes
    second, the twin takes that option's default, so that library reads the
    default it declared.
    """

    def _is_twin(self, other: object) -> bool:
        return (isinstance(other, cfg.Opt)
                and other.name == self.name  # type: ignore[attr-defined]
                and type(other.type) is type(self.type))  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if self._is_twin(other):
            if not isinstance(other, _Twin):
                self.default = other.default  # type: ignore[attr-defined]
            return True
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class _TwinStrOpt(_Twin, cfg.StrOpt):
    pass


class _TwinIntOpt(_Twin, cfg.IntOpt):
    pass


#: polymsg's own defaults of the [DEFAULT] options it shares with oslo.messaging.
OWN_DEFAULTS: dict[str, Any] = {
    "transport_url": None,
    "control_exchange": "polymsg",
    "rpc_response_timeout": 60,
    "executor_thread_pool_size": 64,
}

#: The defaults oslo.messaging declares for the same options (registered, see above).
_FOREIGN_DEFAULTS: dict[str, Any] = {
    "transport_url": "rabbit://",
    "control_exchange": "openstack",
}

_HELP = {
    "transport_url": "The transport URL, e.g. rabbit://user:pass@host:5672/vhost, zmq:// or "
                     "memory://. polymsg has no default (a URL must be given); "
                     "oslo.messaging, sharing this option, defaults to rabbit://.",
    "rpc_response_timeout": "Seconds to wait for a reply to a call.",
    "control_exchange": "The exchange targets use when they name none. Unset, polymsg uses "
                        "'polymsg' (and oslo.messaging in the same process 'openstack'): "
                        "set it to share an exchange with oslo.messaging services.",
    "executor_thread_pool_size": "Worker threads of a server's or listener's threading "
                                 "executor.",
}


def _opts(defaults: dict[str, Any]) -> list[cfg.Opt]:
    def pick(name: str) -> Any:
        return defaults.get(name, OWN_DEFAULTS[name])

    return [
        _TwinStrOpt("transport_url", secret=True, default=pick("transport_url"),
                    help=_HELP["transport_url"]),
        _TwinIntOpt("rpc_response_timeout", default=pick("rpc_response_timeout"), min=0,
                    help=_HELP["rpc_response_timeout"]),
        _TwinStrOpt("control_exchange", default=pick("control_exchange"),
                    help=_HELP["control_exchange"]),
        _TwinIntOpt("executor_thread_pool_size", default=pick("executor_thread_pool_size"),
                    min=1, deprecated_name="rpc_thread_pool_size",
                    help=_HELP["executor_thread_pool_size"]),
    ]


#: The [DEFAULT] options as polymsg documents them (``list_opts``, sample config).
DEFAULT_OPTS: list[cfg.Opt] = _opts({})


def register_defaults(conf: cfg.ConfigOpts) -> None:
    """Register the [DEFAULT] options on ``conf`` (twins: see the module docstring).

    Fresh option objects each time: a twin adopts another library's default
    on one ConfigOpts, never on another.
    """
    register_opts(conf, _opts(_FOREIGN_DEFAULTS))


def value(conf: cfg.ConfigOpts, name: str) -> Any:
    """``[DEFAULT] name`` as polymsg reads it.

    polymsg's own default when the option holds the default oslo.messaging
    declares for it (``openstack``, ``rabbit://``) and nobody set it;
    otherwise its value, whether set by the user or chosen by the
    application as the option's default (oslo.messaging's
    ``set_transport_defaults(control_exchange="nova")`` included).
    """
    try:
        info = conf.get_location(name)
    except (cfg.NoSuchOptError, AttributeError):
        return OWN_DEFAULTS[name]
    current = conf[name]
    if ((info is None or info.location is cfg.Locations.opt_default)
            and name in _FOREIGN_DEFAULTS and current == _FOREIGN_DEFAULTS[name]):
        return OWN_DEFAULTS[name]
    return current


def register_opts(conf: cfg.ConfigOpts, opts: Sequence[cfg.Opt], group: str | None = None) -> None:
    """Register ``opts`` on ``conf``, tolerating an identical or foreign twin.

    A service migrating from another messaging library may already have an
    option of the same name registered (with another default); polymsg then
    reads that one rather than failing.
    """
    for opt in opts:
        try:
            conf.register_opt(opt, group=group)
        except cfg.DuplicateOptError:
            LOG.debug("option %s already registered on this ConfigOpts; reusing it", opt.dest)


_warned: set[tuple[str, str, str]] = set()
_warned_lock = threading.Lock()


def config_files(conf: cfg.ConfigOpts) -> list[str]:
    """The configuration files ``conf`` was loaded from, in order."""
    files = list(getattr(conf, "config_file", None) or [])
    for directory in getattr(conf, "config_dir", None) or []:
        files.extend(sorted(glob.glob(os.path.join(directory, "*.conf"))))
    return files


def sections(conf: cfg.ConfigOpts) -> dict[str, dict[str, list[str]]]:
    """``{section (lower case): {key: [values]}}`` of every file ``conf`` read."""
    merged: dict[str, dict[str, list[str]]] = {}
    for path in config_files(conf):
        parsed: dict[str, dict[str, Any]] = {}
        try:
            cfg.ConfigParser(path, parsed).parse()
        except (OSError, cfg.ParseError) as exc:
            LOG.debug("could not re-read %s for unknown keys: %s", path, exc)
            continue
        for section, keys in parsed.items():
            merged.setdefault(section.lower(), {}).update(keys)
    return merged


def known_names(opts: Iterable[cfg.Opt]) -> set[str]:
    """Every key that sets one of ``opts``: names, dests and deprecated names."""
    names: set[str] = set()
    for opt in opts:
        names.update({opt.name, opt.dest})
        for old in getattr(opt, "deprecated_opts", ()) or ():
            if old.name:
                names.add(old.name)
    return {name.replace("-", "_") for name in names}


def warn_unknown_keys(conf: cfg.ConfigOpts, group: str, opts: Iterable[cfg.Opt]) -> list[str]:
    """Log a warning for each key of ``[group]`` in ``conf``'s files that none of
    ``opts`` reads (a typo, or an option of another version); returns them.

    Each (file set, group, key) is reported once per process.
    """
    keys = sections(conf).get(group.lower(), {})
    known = known_names(opts)
    unknown = sorted(key for key in keys if key.replace("-", "_") not in known)
    files = ",".join(config_files(conf))
    for key in unknown:
        with _warned_lock:
            if (files, group, key) in _warned:
                continue
            _warned.add((files, group, key))
        LOG.warning("unknown option %r in group [%s] of %s: polymsg ignores it (known "
                    "options: %s)", key, group, files, ", ".join(sorted(known)))
    return unknown
