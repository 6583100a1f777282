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

OPTS: list[cfg.Opt] = [
    cfg.IntOpt("heartbeat", default=60, min=0,
               help="AMQP heartbeat timeout in seconds (0 disables heartbeats). The driver's "
                    "I/O threads keep heartbeats going while endpoints run."),
    cfg.FloatOpt("connect_timeout", default=5.0, min=0.1,
                 help="Seconds to wait for a TCP/TLS connection and the AMQP handshake."),
    cfg.FloatOpt("retry_interval", default=1.0, min=0.0,
                 help="Seconds to wait before the second connection attempt round."),
    cfg.FloatOpt("retry_backoff", default=2.0, min=0.0,
                 help="Seconds added to the wait after each failed connection round."),
    cfg.FloatOpt("retry_interval_max", default=30.0, min=0.0,
                 help="Longest wait between connection rounds."),
    cfg.StrOpt("failover_strategy", default="round-robin", choices=("round-robin", "shuffle"),
               help="Order in which the URL's hosts are tried after a failure."),
    cfg.StrOpt("login_method", default="AMQPLAIN", choices=("PLAIN", "AMQPLAIN", "EXTERNAL"),
               help="SASL mechanism used to log in to RabbitMQ."),
    cfg.BoolOpt("ssl", default=False, help="Connect over TLS."),
    cfg.StrOpt("ssl_ca_file", default="",
               help="PEM file of CA certificates the broker's certificate is checked "
                    "against (default: the system's trusted CAs)."),
    cfg.StrOpt("ssl_cert_file", default="", help="PEM client certificate to present."),
    cfg.StrOpt("ssl_key_file", default="", help="Private key of ssl_cert_file."),
    cfg.BoolOpt("ssl_verify", default=True,
                help="Verify the broker's certificate (turn off for tests only)."),
    cfg.BoolOpt("ssl_verify_hostname", default=True,
                help="Check that the broker's certificate names the host of the URL."),
    cfg.IntOpt("prefetch_count", default=64, min=0,
               help="Unacknowledged messages a consumer may hold (0: unlimited)."),
    cfg.BoolOpt("amqp_durable_queues", default=False,
                help="Declare exchanges and topic/notification queues durable. Must match "
                     "every other service (oslo.messaging included) on the same exchange."),
    cfg.BoolOpt("amqp_auto_delete", default=False,
                help="Declare exchanges and topic/notification queues auto-delete. Must "
                     "match every other service on the same exchange."),
    cfg.IntOpt("transient_queues_ttl", default=1800, min=0,
               help="Seconds without a consumer after which reply and fanout queues are "
                    "removed by the broker (0: never)."),
]


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

    @classmethod
    def from_options(cls, url: TransportURL, options: DriverOptions) -> Settings:
        """Settings from a transport URL and the driver's option values."""
        hosts = url.hosts or (TransportHost(),)
        ttl = int(options.get("transient_queues_ttl", 1800))
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
            layout=amqp.Layout(
                durable=bool(options.get("amqp_durable_queues", False)),
                auto_delete=bool(options.get("amqp_auto_delete", False)),
                transient_queue_ttl=float(ttl) if ttl > 0 else None,
            ),
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
