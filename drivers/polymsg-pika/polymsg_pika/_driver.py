"""``rabbit+pika`` — polymsg's AMQP engine (:mod:`polymsg._amqp_engine`) on pika.

The engine does everything a RabbitMQ driver does (connections, declarations,
publishing with confirms, subscriptions, the reply queue); this driver only
gives it pika, through :class:`~polymsg_pika._adapter.PikaAdapter`: one I/O
thread per transport running pika's ``IOLoop`` (:mod:`polymsg_pika._loop`),
``SelectConnection`` objects driven by it, and the one private hook kept
for speed (:mod:`polymsg_pika._fastpath`).
"""

from __future__ import annotations

from oslo_config import cfg

from polymsg._amqp_engine import EngineDriver
from polymsg.driver import DriverOptions, TransportURL
from polymsg_pika._adapter import PikaAdapter

__all__ = ["PikaDriver"]


class PikaDriver(EngineDriver):
    """The ``rabbit+pika`` transport (see the module docstring)."""

    connection_prefix = "polymsg-pika"

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts) -> None:
        super().__init__(url, options, conf, PikaAdapter())
