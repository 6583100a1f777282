"""Transport: a loaded driver plus the configuration it was built from."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol, cast

from oslo_config import cfg

from polymsg import _health
from polymsg._config import OWN_DEFAULTS, register_defaults, register_opts, value, warn_unknown_keys
from polymsg._exceptions import InvalidTransportURL, NotSupported
from polymsg._observability import configure as configure_observability
from polymsg._prometheus import serve_configured
from polymsg._registry import load_driver
from polymsg._secrets import warn_readable_secrets
from polymsg._url import TransportURL, mask_value
from polymsg.driver import Driver, DriverOptions

__all__ = ["Transport", "get_transport"]

LOG = logging.getLogger(__name__)


class _Runner(Protocol):
    def stop(self) -> None: ...
    def wait(self) -> None: ...


class Transport:
    """A connection to one messaging transport, shared by clients and servers.

    Create it with :func:`get_transport`. ``capabilities`` says which
    features its driver declares; :meth:`cleanup` (or leaving a ``with``
    block) stops any server still running on it and closes the driver.
    """

    def __init__(self, driver: Driver, conf: cfg.ConfigOpts, url: TransportURL,
                 allowed_remote_exmods: Iterable[str]) -> None:
        self._driver = driver
        self.conf = conf
        self.url = url
        self.allowed_remote_exmods: tuple[str, ...] = tuple(allowed_remote_exmods)
        self.capabilities: frozenset[str] = frozenset(type(driver).capabilities)
        self._runners: weakref.WeakSet[_Runner] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def default_exchange(self) -> str:
        """The exchange of targets that name none (``[DEFAULT] control_exchange``)."""
        return str(value(self.conf, "control_exchange"))

    def require(self, capability: str, what: str) -> None:
        """Raise :class:`NotSupported` unless the driver declares ``capability``."""
        if capability not in self.capabilities:
            raise NotSupported(
                f"{what} needs the {capability!r} capability, which the "
                f"{self.url.transport!r} driver does not declare"
            )

    def require_send_feature(self, feature: str, what: str) -> None:
        """Raise :class:`NotSupported` unless the driver lists ``feature`` in its
        ``send_features``."""
        if feature not in type(self._driver).send_features:
            raise NotSupported(
                f"{what} needs the {feature!r} send feature, which the "
                f"{self.url.transport!r} driver does not implement"
            )

    def _track(self, runner: _Runner) -> None:
        with self._lock:
            self._runners.add(runner)

    def cleanup(self) -> None:
        """Stop servers and listeners still running on this transport, then
        release the driver's connections and threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runners = list(self._runners)
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.wait()
        _health.forget(self)
        self._driver.cleanup()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<polymsg.Transport {self.url}>"


def get_transport(url: str | TransportURL | None = None, *, conf: cfg.ConfigOpts | None = None,
                  allowed_remote_exmods: Iterable[str] = ()) -> Transport:
    """Create a :class:`Transport` for ``url`` (or ``[DEFAULT] transport_url``).

    ``conf`` is an oslo.config ``ConfigOpts``; ``None`` means a private one
    with defaults (the global ``cfg.CONF`` is never touched). Query keys of
    the URL override the driver's options; an unknown key raises
    :class:`InvalidTransportURL`.
    """
    if conf is None:
        conf = cfg.ConfigOpts()
    register_defaults(conf)
    configure_observability(conf)
    if url is None:
        url = value(conf, "transport_url")
        if not url:
            raise InvalidTransportURL(
                "no transport URL: pass url= to get_transport() or set "
                "[DEFAULT] transport_url in the configuration (e.g. 'memory://')"
            )
    parsed = TransportURL.parse(url)
    driver_cls = load_driver(parsed.transport)
    if len(parsed.hosts) > 1 and "multi_host" not in driver_cls.capabilities:
        raise NotSupported(f"the {parsed.transport!r} driver does not support several hosts")
    options = _driver_options(driver_cls, parsed, conf)
    warn_readable_secrets(conf, driver_cls.options_group, driver_cls.list_opts(), options.values)
    serve_configured(conf)
    driver = driver_cls(parsed, options, cast(cfg.ConfigOpts, _DriverConf(conf)))
    transport = Transport(driver, conf, parsed, allowed_remote_exmods)
    _health.watch(transport)
    return transport


def _driver_options(driver_cls: type[Driver], url: TransportURL,
                    conf: cfg.ConfigOpts) -> DriverOptions:
    opts = {opt.dest: opt for opt in driver_cls.list_opts()}
    group = driver_cls.options_group
    values: dict[str, Any] = {}
    if opts and group:
        register_opts(conf, list(opts.values()), group=group)
        warn_unknown_keys(conf, group, opts.values())
        values = {name: conf[group][name] for name in opts}
    # An option's deprecated names (a renamed option) still work as query keys.
    aliases = {old.name.replace("-", "_"): opt for opt in opts.values()
               for old in opt.deprecated_opts if old.name}
    for key, text in url.query.items():
        opt = opts.get(key) or aliases.get(key)
        if opt is None:
            known = ", ".join(sorted(opts)) or "none"
            raise InvalidTransportURL(
                f"unknown option {key!r} in transport URL for driver {url.transport!r} "
                f"(known options: {known})"
            )
        try:
            values[opt.dest] = opt.type(text)
        except (ValueError, TypeError) as exc:
            # A secret's value (or its parse error, which may quote it) is not shown.
            shown = "****" if opt.secret else mask_value(key, text)
            detail = f"{shown!r} for option {key!r}" + (f": {exc}" if shown == text else "")
            raise InvalidTransportURL(f"invalid value {detail} in transport URL") from exc
    return DriverOptions(values)


class _DriverConf:
    """The caller's ConfigOpts as a driver sees it: the [DEFAULT] options polymsg
    shares with oslo.messaging read as polymsg reads them (its own defaults
    unless set; see ``polymsg._config``), everything else as it is."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self._conf = conf

    def __getattr__(self, name: str) -> Any:
        if name in OWN_DEFAULTS:
            return value(self._conf, name)
        return getattr(self._conf, name)

    def __getitem__(self, name: str) -> Any:
        if name in OWN_DEFAULTS:
            return value(self._conf, name)
        return self._conf[name]

    def __contains__(self, name: str) -> bool:
        return name in self._conf
