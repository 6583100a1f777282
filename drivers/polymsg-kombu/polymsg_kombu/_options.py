"""Options of the ``rabbit+kombu`` driver and the connection settings built from them.

Every option can be set in the ``[polymsg_kombu]`` group of the
configuration and overridden per transport by a URL query key of the same
name, e.g. ``rabbit://user:pass@host:5671/vhost?ssl=true&ssl_ca_file=/etc/ca.pem``.

TLS
===
``ssl=true`` connects over TLS (default port 5671). The broker certificate
is verified against ``ssl_ca_file`` (a PEM bundle) or, without it, the
system's trusted CAs, and its name must match the host of the URL unless
``ssl_verify_hostname=false``. ``ssl_verify=false`` turns verification off
altogether (encryption without authentication of the broker: tests only).
``ssl_cert_file`` and ``ssl_key_file`` present a client certificate (for
``login_method=EXTERNAL``).
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from polymsg.driver import DriverOptions, InvalidTransportURL, TransportHost, TransportURL, amqp

__all__ = ["GROUP", "OPTS", "Settings", "list_opts"]

GROUP = "polymsg_kombu"

#: The options both RabbitMQ drivers share (names and meanings as polymsg-pika's).
OPTS: list[cfg.Opt] = amqp.rabbit_opts()


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[("polymsg_kombu", [opts])]`` for ``oslo-config-generator --namespace polymsg_kombu``."""
    return [(GROUP, list(OPTS))]


@dataclass(frozen=True)
class Settings:
    """Everything needed to open connections for one transport."""

    hosts: tuple[TransportHost, ...]
    virtual_host: str
    heartbeat: int
    connect_timeout: float
    retry_interval: float
    retry_backoff: float
    retry_interval_max: float
    shuffle: bool
    login_method: str
    ssl: dict[str, Any] | None
    prefetch_count: int
    layout: amqp.Layout
    confirm_window: int = 256
    confirm_flush_timeout: float = 10.0

    @classmethod
    def from_options(cls, url: TransportURL, options: DriverOptions) -> Settings:
        """Settings from a transport URL and the driver's option values."""
        hosts = url.hosts or (TransportHost(),)
        return cls(
            hosts=tuple(hosts),
            virtual_host=url.virtual_host or "/",
            heartbeat=int(options.get("heartbeat", 60)),
            connect_timeout=float(options.get("connect_timeout", 5.0)),
            retry_interval=float(options.get("retry_interval", 1.0)),
            retry_backoff=float(options.get("retry_backoff", 2.0)),
            retry_interval_max=float(options.get("retry_interval_max", 30.0)),
            shuffle=options.get("failover_strategy", "round-robin") == "shuffle",
            login_method=str(options.get("login_method", "AMQPLAIN")),
            ssl=ssl_options(options),
            prefetch_count=int(options.get("prefetch_count", 64)),
            layout=amqp.layout_from_options(options),
            confirm_window=int(options.get("confirm_window", 256)),
            confirm_flush_timeout=float(options.get("confirm_flush_timeout", 10.0)),
        )

    def backoff(self, failed_rounds: int) -> float:
        """Seconds to wait after ``failed_rounds`` consecutive failed rounds (>= 1)."""
        wait = self.retry_interval + self.retry_backoff * (failed_rounds - 1)
        return max(0.0, min(wait, self.retry_interval_max))

    def round_order(self, start: int) -> Sequence[int]:
        """Indexes of the hosts to try in one round, the current one first."""
        count = len(self.hosts)
        if self.shuffle:
            order = list(range(count))
            random.shuffle(order)
            return order
        return [(start + i) % count for i in range(count)]

    def connection_kwargs(self, host: TransportHost) -> dict[str, Any]:
        """Keyword arguments of ``kombu.Connection`` for ``host``."""
        sslopts: dict[str, Any] | bool = False
        if self.ssl is not None:
            sslopts = dict(self.ssl)
            if sslopts.pop("verify_hostname", False):
                sslopts["server_hostname"] = host.hostname or "localhost"
        return {
            "hostname": host.hostname or "localhost",
            "port": host.port or (5671 if self.ssl is not None else 5672),
            "userid": host.username if host.username is not None else "guest",
            "password": host.password if host.password is not None else (
                "guest" if host.username is None else ""),
            "virtual_host": self.virtual_host,
            "heartbeat": self.heartbeat,
            "connect_timeout": self.connect_timeout,
            "login_method": self.login_method,
            "ssl": sslopts,
            "transport": "pyamqp",
        }


def ssl_options(options: DriverOptions) -> dict[str, Any] | None:
    """py-amqp's TLS options from the ``ssl*`` options; ``None`` when TLS is off."""
    if not options.get("ssl", False):
        return None
    verify = bool(options.get("ssl_verify", True))
    result: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
                              "verify_hostname": verify and options.get("ssl_verify_hostname",
                                                                        True)}
    cert, key = options.get("ssl_cert_file") or "", options.get("ssl_key_file") or ""
    if key and not cert:
        raise InvalidTransportURL("ssl_key_file is set but ssl_cert_file is not")
    if options.get("ssl_ca_file"):
        result["ca_certs"] = options.get("ssl_ca_file")
    if cert:
        result["certfile"] = cert
        result["keyfile"] = key or None
    return result
