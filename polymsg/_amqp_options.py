"""The RabbitMQ options, one group for both drivers, and the layout they describe.

``rabbit+kombu`` and ``rabbit+pika`` read the same options from the same
group, ``[polymsg_rabbit]``, so switching ``rabbit://`` to ``rabbit+pika://``
keeps every setting. Each option may be overridden per transport by a URL
query key of the same name (``?heartbeat_timeout_threshold=30&ssl=true``).
Where oslo.messaging's ``[oslo_messaging_rabbit]`` has the same option,
the name and default are oslo.messaging's.

Older polymsg releases registered these options twice, in
``[polymsg_kombu]`` and ``[polymsg_pika]``, some under other names; those
groups and names are still read (with oslo.config's deprecation warning),
and the old names still work as URL query keys (:data:`RENAMED`).

Drivers reach this module as ``polymsg.amqp`` (``rabbit_opts``,
``RABBIT_GROUP``, ``layout_from_options``, ``RabbitSettings``: what a driver
reads of them, once).

Adding an option
================
Append it to the list of the function for its topic below
(:func:`_connection_opts`, :func:`_delivery_opts`, :func:`_queue_opts`);
:func:`rabbit_opts` concatenates them. A renamed option lists its old name
in :data:`RENAMED`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oslo_config import cfg

from polymsg._amqp_connection import ConnectionSpec
from polymsg._amqp_layout import Layout
from polymsg._amqp_topology import layout_from_topology, topology_opts

if TYPE_CHECKING:  # polymsg.driver imports this module through polymsg._amqp
    from polymsg.driver import DriverOptions, TransportURL

__all__ = ["RABBIT_GROUP", "RENAMED", "RabbitSettings", "layout_from_options", "list_opts",
           "rabbit_opts"]

#: The configuration group both RabbitMQ drivers read.
RABBIT_GROUP = "polymsg_rabbit"

#: Old option names (polymsg 0.x, ``[polymsg_kombu]``/``[polymsg_pika]``) -> new ones.
RENAMED: dict[str, str] = {
    "heartbeat": "heartbeat_timeout_threshold",
    "retry_interval": "rabbit_retry_interval",
    "retry_backoff": "rabbit_retry_backoff",
    "retry_interval_max": "rabbit_interval_max",
    "failover_strategy": "kombu_failover_strategy",
    "login_method": "rabbit_login_method",
    "prefetch_count": "rabbit_qos_prefetch_count",
    "transient_queues_ttl": "rabbit_transient_queues_ttl",
    "ssl_verify_hostname": "ssl_enforce_hostname_verification",
}

_OLD_GROUPS = ("polymsg_kombu", "polymsg_pika")


def _old(name: str) -> list[cfg.DeprecatedOpt]:
    """Where an option used to be read: the old drivers' groups, under its old name."""
    old = next((key for key, new in RENAMED.items() if new == name), name)
    return [cfg.DeprecatedOpt(old, group=group) for group in _OLD_GROUPS]


def _connection_opts() -> list[cfg.Opt]:
    return [
        cfg.IntOpt("heartbeat_timeout_threshold", default=60, min=0,
                   deprecated_opts=_old("heartbeat_timeout_threshold"),
                   help="Seconds after which a silent broker connection counts as dead; "
                        "proposed to the broker as the AMQP heartbeat (0 turns heartbeats "
                        "off). Heartbeats keep flowing however long endpoints run."),
        cfg.FloatOpt("connect_timeout", default=5.0, min=0.1,
                     deprecated_opts=_old("connect_timeout"),
                     help="Seconds one connection attempt (TCP, TLS and AMQP handshake) "
                          "may take."),
        cfg.FloatOpt("rabbit_retry_interval", default=1.0, min=0.0,
                     deprecated_opts=_old("rabbit_retry_interval"),
                     help="Seconds to wait before the second round of connection attempts "
                          "(one round tries every host of the URL once, without waiting)."),
        cfg.FloatOpt("rabbit_retry_backoff", default=2.0, min=0.0,
                     deprecated_opts=_old("rabbit_retry_backoff"),
                     help="Seconds added to the wait after each further failed round "
                          "(up to a fifth less at random)."),
        cfg.FloatOpt("rabbit_interval_max", default=30.0, min=0.0,
                     deprecated_opts=_old("rabbit_interval_max"),
                     help="Longest wait between rounds of connection attempts, in seconds."),
        cfg.StrOpt("kombu_failover_strategy", default="round-robin",
                   choices=("round-robin", "shuffle"),
                   deprecated_opts=_old("kombu_failover_strategy"),
                   help="Order in which the URL's hosts are tried: as written, or shuffled "
                        "(spreads clients over a cluster)."),
        cfg.StrOpt("rabbit_login_method", default="AMQPLAIN",
                   choices=("PLAIN", "AMQPLAIN", "EXTERNAL"),
                   deprecated_opts=_old("rabbit_login_method"),
                   help="How to log in: PLAIN or AMQPLAIN (user name and password) or "
                        "EXTERNAL (the TLS client certificate)."),
        cfg.IntOpt("listen_retry", default=3, min=0,
                   help="Failed rounds of connection attempts after which starting an RPC "
                        "server or notification listener raises MessageDeliveryFailure "
                        "(a refused login or virtual host raises at once)."),
        cfg.BoolOpt("ssl", default=False, deprecated_opts=_old("ssl"),
                    help="Connect over TLS (default port 5671)."),
        cfg.StrOpt("ssl_ca_file", default="", deprecated_opts=_old("ssl_ca_file"),
                   help="PEM file of CA certificates the broker's certificate is checked "
                        "against (default: the system's trusted CAs)."),
        cfg.StrOpt("ssl_cert_file", default="", deprecated_opts=_old("ssl_cert_file"),
                   help="PEM client certificate to present."),
        cfg.StrOpt("ssl_key_file", default="", deprecated_opts=_old("ssl_key_file"),
                   help="Private key of ssl_cert_file."),
        cfg.BoolOpt("ssl_verify", default=True, deprecated_opts=_old("ssl_verify"),
                    help="Verify the broker's certificate (turn off for tests only)."),
        cfg.BoolOpt("ssl_enforce_hostname_verification", default=True,
                    deprecated_opts=_old("ssl_enforce_hostname_verification"),
                    help="Check that the broker's certificate names the host of the URL."),
    ]


def _delivery_opts() -> list[cfg.Opt]:
    return [
        cfg.IntOpt("rabbit_qos_prefetch_count", default=0, min=0,
                   deprecated_opts=_old("rabbit_qos_prefetch_count"),
                   help="Unacknowledged messages a server or listener may hold per "
                        "subscription (0: no limit)."),
        cfg.IntOpt("confirm_window", default=256, min=0, deprecated_opts=_old("confirm_window"),
                   help="Casts and notifications a transport may have published but not yet "
                        "seen confirmed by RabbitMQ. While fewer are unconfirmed, cast() and "
                        "notify() return once the message is written on a live connection "
                        "(connection errors past `retry` are still raised); the driver keeps "
                        "each message until its confirm, publishes it again after a lost "
                        "connection or a negative confirm, and logs a warning with its id if "
                        "it finally cannot be delivered. 0: each cast and notification waits "
                        "for its own confirm and raises its own failure."),
        cfg.FloatOpt("confirm_flush_timeout", default=10.0, min=0.0,
                     deprecated_opts=_old("confirm_flush_timeout"),
                     help="Seconds Transport.cleanup() waits for the confirms of casts and "
                          "notifications still in the confirm window; those still "
                          "unconfirmed then are logged with their ids."),
        cfg.BoolOpt("exchange_scoped_names", default=True,
                    help="Name the RPC queues and fanout exchanges of targets on an exchange "
                         "other than control_exchange after that exchange too "
                         "('<exchange>/<topic>'), so exchanges isolate. false: "
                         "oslo.messaging's names on every exchange, so polymsg and "
                         "oslo.messaging services interoperate on any exchange; servers of one "
                         "topic on two exchanges then share the topic's queues and fanout."),
    ]


def _queue_opts() -> list[cfg.Opt]:
    """Declaration options (durability, expiry; quorum and stream queues go here)."""
    return [
        cfg.BoolOpt("amqp_durable_queues", default=False,
                    deprecated_opts=_old("amqp_durable_queues"),
                    help="Declare exchanges and topic/notification queues durable. Must match "
                         "every other service (oslo.messaging included) on the same exchange."),
        cfg.BoolOpt("amqp_auto_delete", default=False, deprecated_opts=_old("amqp_auto_delete"),
                    help="Declare exchanges and topic/notification queues auto-delete. Must "
                         "match every other service on the same exchange."),
        cfg.IntOpt("rabbit_transient_queues_ttl", default=1800, min=0,
                   deprecated_opts=_old("rabbit_transient_queues_ttl"),
                   help="Seconds without a consumer after which reply and fanout queues are "
                        "removed by the broker (0: never)."),
        *topology_opts(),
    ]


@functools.cache
def _all_opts() -> tuple[cfg.Opt, ...]:
    # One set of objects: both drivers register these in one group, and
    # oslo.config accepts a second registration only of an equal option.
    return (*_connection_opts(), *_delivery_opts(), *_queue_opts())


def rabbit_opts() -> list[cfg.Opt]:
    """The RabbitMQ options of the ``[polymsg_rabbit]`` group (both drivers)."""
    return list(_all_opts())


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[("polymsg_rabbit", [opts])]`` for ``oslo-config-generator``."""
    return [(RABBIT_GROUP, rabbit_opts())]


def layout_from_options(options: DriverOptions, control_exchange: str | None = None) -> Layout:
    """The declaration policy the ``amqp_*`` and ``rabbit_transient_queues_ttl``
    options describe.

    RPC names of targets on exchanges other than ``control_exchange`` are
    scoped by their exchange (see :meth:`Layout.scoped`).
    """
    ttl = int(options.get("rabbit_transient_queues_ttl", 1800))
    base = Layout(durable=bool(options.get("amqp_durable_queues", False)),
                  auto_delete=bool(options.get("amqp_auto_delete", False)),
                  transient_queue_ttl=float(ttl) if ttl > 0 else None,
                  control_exchange=control_exchange,
                  exchange_scoped_names=bool(options.get("exchange_scoped_names", True)))
    return layout_from_topology(options, base)


@dataclass(frozen=True)
class RabbitSettings:
    """What a RabbitMQ driver reads of the options, for one transport."""

    #: Hosts, credentials, virtual host, TLS, heartbeat, backoff.
    spec: ConnectionSpec
    #: What to declare and how to name it.
    layout: Layout
    #: ``basic.qos`` of consumers (0: unbounded).
    prefetch_count: int = 0
    #: Failed connection rounds before a server or listener gives up starting.
    listen_retry: int = 3
    #: Casts and notifications in flight awaiting their confirm (0: one at a time).
    confirm_window: int = 256
    #: How long closing waits for the confirm window to empty (seconds).
    confirm_flush_timeout: float = 10.0

    @property
    def heartbeat(self) -> int:
        """The heartbeat timeout proposed to the broker (seconds)."""
        return self.spec.heartbeat

    @classmethod
    def from_options(cls, url: TransportURL, options: DriverOptions,
                     control_exchange: str | None = None) -> RabbitSettings:
        """The settings of a transport URL and the driver's option values."""
        return cls(
            spec=ConnectionSpec.from_url(url, options),
            layout=layout_from_options(options, control_exchange),
            prefetch_count=int(options.get("rabbit_qos_prefetch_count", 0)),
            listen_retry=int(options.get("listen_retry", 3)),
            confirm_window=int(options.get("confirm_window", 256)),
            confirm_flush_timeout=float(options.get("confirm_flush_timeout", 10.0)),
        )
