"""Options both RabbitMQ drivers share, and the declaration layout they describe.

``rabbit+kombu`` and ``rabbit+pika`` read the same option names with the same
meanings, so a URL (``?heartbeat=30&ssl=true``) or a config section works
unchanged with either driver. Each driver registers its own copy in its own
group (``[polymsg_kombu]``, ``[polymsg_pika]``) and turns the values into its
library's connection parameters. Drivers reach this as
``polymsg.driver.amqp.rabbit_opts`` and ``polymsg.driver.amqp.layout_from_options``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oslo_config import cfg

from polymsg._amqp import Layout

if TYPE_CHECKING:  # polymsg.driver imports this module through polymsg._amqp
    from polymsg.driver import DriverOptions

__all__ = ["layout_from_options", "rabbit_opts"]


def rabbit_opts() -> list[cfg.Opt]:
    """A fresh list of the RabbitMQ options (one list per driver group)."""
    return [
        cfg.IntOpt("heartbeat", default=60, min=0,
                   help="AMQP heartbeat timeout in seconds proposed to the broker (0 turns "
                        "heartbeats off). The driver keeps heartbeats going however long "
                        "endpoints run."),
        cfg.FloatOpt("connect_timeout", default=5.0, min=0.1,
                     help="Seconds one connection attempt (TCP, TLS and AMQP handshake) "
                          "may take."),
        cfg.FloatOpt("retry_interval", default=1.0, min=0.0,
                     help="Seconds to wait before the second round of connection attempts "
                          "(one round tries every host of the URL once, without waiting)."),
        cfg.FloatOpt("retry_backoff", default=2.0, min=0.0,
                     help="Seconds added to the wait after each further failed round."),
        cfg.FloatOpt("retry_interval_max", default=30.0, min=0.0,
                     help="Longest wait between rounds of connection attempts, in seconds."),
        cfg.StrOpt("failover_strategy", default="round-robin",
                   choices=("round-robin", "shuffle"),
                   help="Order in which the URL's hosts are tried: as written, or shuffled "
                        "(spreads clients over a cluster)."),
        cfg.StrOpt("login_method", default="AMQPLAIN",
                   choices=("PLAIN", "AMQPLAIN", "EXTERNAL"),
                   help="How to log in: PLAIN or AMQPLAIN (user name and password) or "
                        "EXTERNAL (the TLS client certificate)."),
        cfg.BoolOpt("ssl", default=False, help="Connect over TLS (default port 5671)."),
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
                   help="Unacknowledged messages a server or listener may hold per "
                        "subscription (0: no limit)."),
        cfg.BoolOpt("amqp_durable_queues", default=False,
                    help="Declare exchanges and topic/notification queues durable. Must match "
                         "every other service (oslo.messaging included) on the same exchange."),
        cfg.BoolOpt("amqp_auto_delete", default=False,
                    help="Declare exchanges and topic/notification queues auto-delete. Must "
                         "match every other service on the same exchange."),
        cfg.IntOpt("confirm_window", default=256, min=0,
                   help="Casts and notifications a transport may have published but not yet "
                        "seen confirmed by RabbitMQ. While fewer are unconfirmed, cast() and "
                        "notify() return once the message is written on a live connection "
                        "(connection errors past `retry` are still raised); the driver keeps "
                        "each message until its confirm, publishes it again after a lost "
                        "connection or a negative confirm, and logs a warning with its id if "
                        "it finally cannot be delivered. 0: each cast and notification waits "
                        "for its own confirm and raises its own failure."),
        cfg.FloatOpt("confirm_flush_timeout", default=10.0, min=0.0,
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
        cfg.IntOpt("transient_queues_ttl", default=1800, min=0,
                   help="Seconds without a consumer after which reply and fanout queues are "
                        "removed by the broker (0: never)."),
    ]


def layout_from_options(options: DriverOptions, control_exchange: str | None = None) -> Layout:
    """The declaration policy the ``amqp_*`` and ``transient_queues_ttl`` options describe.

    RPC names of targets on exchanges other than ``control_exchange`` are
    scoped by their exchange (see :meth:`Layout.scoped`).
    """
    ttl = int(options.get("transient_queues_ttl", 1800))
    return Layout(durable=bool(options.get("amqp_durable_queues", False)),
                  auto_delete=bool(options.get("amqp_auto_delete", False)),
                  transient_queue_ttl=float(ttl) if ttl > 0 else None,
                  control_exchange=control_exchange,
                  exchange_scoped_names=bool(options.get("exchange_scoped_names", True)))
