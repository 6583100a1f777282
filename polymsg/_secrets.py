"""Warn about secrets in files other users can read.

A transport's secrets (the password in ``transport_url``, a CURVE secret key,
a Redis password, a TLS private key) often live in files: the configuration
files oslo.config read (``--config-file``) and key files named by options
(``ssl_key_file``). When such a file is readable or writable by users other
than its owner and group (``mode & 0o007``), polymsg logs one warning naming
the file, once per file and process. Group access is left alone: the usual
deployment is ``root:<service>`` with mode ``0640`` (or ``root:ssl-cert`` for
keys), which is exactly what keeps the secret from other users.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from oslo_config import cfg

from polymsg._url import TransportURL, is_secret_key

__all__ = ["OTHERS", "warn_readable_secrets"]

LOG = logging.getLogger(__name__)

#: Permission bits for users other than the owner and the group.
OTHERS = 0o007

_warned: set[str] = set()
_lock = threading.Lock()


def warn_readable_secrets(conf: cfg.ConfigOpts, group: str | None,
                          opts: Iterable[cfg.Opt], values: Mapping[str, Any]) -> None:
    """Check the files holding this transport's secrets; never raises.

    ``opts``/``values`` are the driver's options (in config ``group``) and
    their values after the URL's query was applied.
    """
    try:
        url = conf.transport_url
    except cfg.Error:  # not registered on this ConfigOpts
        url = None
    checks: list[tuple[str, str | None, Any]] = [("transport_url", None, url)]
    checks += [(opt.dest, group, values.get(opt.dest)) for opt in opts
               if opt.secret or is_secret_key(opt.dest) or opt.dest.endswith("key_file")]
    for name, section, value in checks:
        try:
            if name.endswith("key_file"):
                if value:
                    _check_file(str(value), f"the private key of {name}")
            elif _holds_secret(value):
                _check_source(conf, name, section)
        except Exception as exc:  # a warning helper must never stop a transport
            LOG.debug("could not check the file holding %s: %s", name, exc)


def _holds_secret(value: Any) -> bool:
    if not value or not isinstance(value, str):
        return False
    if "://" not in value:
        return True
    try:
        url = TransportURL.parse(value)
    except Exception:
        return True  # cannot tell: treat it as holding one
    return (any(host.password for host in url.hosts)
            or any(is_secret_key(key) and val for key, val in url.query.items()))


def _check_source(conf: cfg.ConfigOpts, name: str, group: str | None) -> None:
    location = conf.get_location(name, group)
    if location is None or location.location is not cfg.Locations.user:
        return
    if location.detail and os.path.isfile(location.detail):
        section = group or "DEFAULT"
        _check_file(location.detail, f"the secret [{section}] {name}")


def _check_file(path: str, what: str) -> None:
    try:
        info = os.stat(path)
    except OSError:
        return  # a missing file is reported by whoever opens it
    mode = stat.S_IMODE(info.st_mode)
    if not mode & OTHERS:
        return
    real = os.path.realpath(path)
    with _lock:
        if real in _warned:
            return
        _warned.add(real)
    LOG.warning("%s holds %s and is open to other users (mode %04o); "
                "restrict it, e.g. chmod o-rwx %s", path, what, mode, path)
