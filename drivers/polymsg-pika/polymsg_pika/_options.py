"""Options of the ``rabbit+pika`` driver and the pika connection parameters built from them.

Every option lives in the ``[polymsg_pika]`` group and may be overridden per
transport by a URL query key of the same name, e.g.
``rabbit+pika://user:pass@host:5671/?ssl=true&ssl_ca_file=/etc/ca.pem&heartbeat=30``.

TLS
===
``ssl=true`` turns TLS on (the default port becomes 5671). The broker's
certificate is checked against ``ssl_ca_file`` (or the system's trusted
authorities when unset) and must name the URL's host unless
``ssl_verify_hostname=false``; ``ssl_verify=false`` turns both checks off
(encryption without knowing who answers: tests only). ``ssl_cert_file`` and
``ssl_key_file`` present a client certificate (mutual TLS, or
``login_method=EXTERNAL``).

The option names and meanings are those of ``polymsg-kombu``, so a URL works
unchanged with either RabbitMQ driver.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import Any

import pika
from oslo_config import cfg

from polymsg import InvalidTransportURL
from polymsg.driver import DriverOptions, TransportHost, TransportURL, amqp

__all__ = ["GROUP", "OPTS", "Backoff", "connection_parameters", "layout", "list_opts",
           "ssl_context"]

GROUP = "polymsg_pika"

OPTS: list[cfg.Opt] = [
    cfg.IntOpt("heartbeat", default=60, min=0,
               help="AMQP heartbeat timeout in seconds proposed to the broker; 0 turns "
                    "heartbeats off. The I/O thread answers heartbeats however long "
                    "endpoints run."),
    cfg.FloatOpt("connect_timeout", default=5.0, min=0.1,
                 help="Seconds one connection attempt (TCP, TLS and AMQP handshake) may take."),
    cfg.FloatOpt("retry_interval", default=1.0, min=0.0,
                 help="Seconds to wait before the second round of connection attempts "
                      "(one round tries every host of the URL once, without waiting)."),
    cfg.FloatOpt("retry_backoff", default=2.0, min=0.0,
                 help="Seconds added to the wait after each further failed round."),
    cfg.FloatOpt("retry_interval_max", default=30.0, min=0.0,
                 help="Longest wait between rounds of connection attempts, in seconds."),
    cfg.StrOpt("failover_strategy", default="round-robin", choices=("round-robin", "shuffle"),
               help="Order in which the URL's hosts are tried: as written, or shuffled "
                    "once per transport (spreads clients over a cluster)."),
    cfg.StrOpt("login_method", default="PLAIN", choices=("PLAIN", "AMQPLAIN", "EXTERNAL"),
               help="How to log in: PLAIN (user name and password; AMQPLAIN is accepted "
                    "as a synonym) or EXTERNAL (the TLS client certificate)."),
    cfg.IntOpt("prefetch_count", default=64, min=0,
               help="Unacknowledged messages a server or listener may hold per "
                    "subscription (0 means no limit)."),
    cfg.BoolOpt("amqp_durable_queues", default=False,
                help="Declare exchanges and topic/notification queues durable. Must match "
                     "every other service (oslo.messaging included) on the same exchange."),
    cfg.BoolOpt("amqp_auto_delete", default=False,
                help="Declare exchanges and topic/notification queues auto-delete. Must "
                     "match every other service on the same exchange."),
    cfg.IntOpt("transient_queues_ttl", default=1800, min=0,
               help="Seconds without a consumer after which reply and fanout queues are "
                    "removed by the broker (0: never)."),
    cfg.BoolOpt("ssl", default=False, help="Connect with TLS (default port 5671)."),
    cfg.StrOpt("ssl_ca_file", default="",
               help="PEM file of CA certificates the broker's certificate is checked "
                    "against (default: the system's trusted CAs)."),
    cfg.StrOpt("ssl_cert_file", default="", help="PEM client certificate to present."),
    cfg.StrOpt("ssl_key_file", default="", help="Private key of ssl_cert_file."),
    cfg.BoolOpt("ssl_verify", default=True,
                help="Verify the broker's certificate (turn off for tests only)."),
    cfg.BoolOpt("ssl_verify_hostname", default=True,
                help="Check that the broker's certificate names the host of the URL."),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The driver's options for ``oslo-config-generator --namespace polymsg_pika``."""
    return [(GROUP, list(OPTS))]


@dataclass(frozen=True)
class Backoff:
    """How long to wait between connection attempts.

    One round tries every host of the URL in turn without waiting; after
    the n-th failed round the wait is ``interval + step * (n - 1)`` seconds,
    at most ``maximum``.
    """

    hosts: int
    interval: float
    step: float
    maximum: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failed attempts."""
        hosts = max(1, self.hosts)
        if failures <= 0 or failures % hosts:
            return 0.0
        rounds = failures // hosts
        return max(0.0, min(self.maximum, self.interval + self.step * (rounds - 1)))

    @classmethod
    def from_options(cls, hosts: int, options: DriverOptions) -> Backoff:
        """The backoff the driver's options describe."""
        return cls(hosts, float(options.retry_interval), float(options.retry_backoff),
                   float(options.retry_interval_max))


def layout(options: DriverOptions, control_exchange: str) -> amqp.Layout:
    """Declaration policy from the ``amqp_*`` and ``transient_queues_ttl`` options.

    RPC names of targets on other exchanges than ``control_exchange`` are
    scoped by their exchange (see :meth:`polymsg.driver.amqp.Layout.scoped`).
    """
    ttl = int(options.transient_queues_ttl)
    return amqp.Layout(durable=bool(options.amqp_durable_queues),
                       auto_delete=bool(options.amqp_auto_delete),
                       transient_queue_ttl=float(ttl) if ttl > 0 else None,
                       control_exchange=control_exchange)


def connection_parameters(url: TransportURL, options: DriverOptions,
                          name: str) -> list[pika.ConnectionParameters]:
    """One :class:`pika.ConnectionParameters` per host of ``url``, in the order
    ``failover_strategy`` says (``guest``/``guest`` when the URL has no user)."""
    use_ssl = bool(options.ssl)
    context = ssl_context(options) if use_ssl else None
    hosts = list(url.hosts or (TransportHost(),))
    if options.failover_strategy == "shuffle":
        random.shuffle(hosts)
    return [_parameters(host, url, options, name, context) for host in hosts]


def _parameters(host: TransportHost, url: TransportURL, options: DriverOptions, name: str,
                context: ssl.SSLContext | None) -> pika.ConnectionParameters:
    hostname = host.hostname or "localhost"
    credentials: Any
    if options.login_method == "EXTERNAL":
        credentials = pika.credentials.ExternalCredentials()
    else:
        username = host.username if host.username is not None else "guest"
        password = host.password if host.password is not None else (
            "guest" if host.username is None else "")
        credentials = pika.PlainCredentials(username, password, erase_on_connect=False)
    timeout = float(options.connect_timeout)
    return pika.ConnectionParameters(
        host=hostname,
        port=host.port or (5671 if context is not None else 5672),
        virtual_host=url.virtual_host or "/",
        credentials=credentials,
        heartbeat=int(options.heartbeat),
        connection_attempts=1,
        socket_timeout=timeout,
        stack_timeout=timeout,
        ssl_options=pika.SSLOptions(context, hostname) if context is not None else None,
        client_properties={"connection_name": name, "product": "polymsg-pika"},
    )


def ssl_context(options: DriverOptions) -> ssl.SSLContext:
    """The client TLS context the ``ssl_*`` options describe; a missing or
    unreadable file raises :class:`~polymsg.InvalidTransportURL` naming it."""
    cert, key = options.ssl_cert_file or "", options.ssl_key_file or ""
    if key and not cert:
        raise InvalidTransportURL("ssl_key_file is set but ssl_cert_file is not")
    try:
        context = ssl.create_default_context(cafile=options.ssl_ca_file or None)
        if not options.ssl_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif not options.ssl_verify_hostname:
            context.check_hostname = False
        if cert:
            context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidTransportURL(f"cannot set up TLS from the ssl_* options: {exc}") from exc
    return context
