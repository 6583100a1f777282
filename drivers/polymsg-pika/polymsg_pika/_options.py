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

from polymsg.driver import DriverOptions, InvalidTransportURL, TransportHost, TransportURL, amqp

__all__ = ["GROUP", "OPTS", "Backoff", "connection_parameters", "layout", "list_opts",
           "ssl_context"]

GROUP = "polymsg_pika"

#: The options both RabbitMQ drivers share (names and meanings as polymsg-kombu's).
OPTS: list[cfg.Opt] = amqp.rabbit_opts()


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
    """Declaration policy from the ``amqp_*`` and ``transient_queues_ttl`` options."""
    return amqp.layout_from_options(options, control_exchange)


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
