"""``rabbit+kombu`` — polymsg's AMQP engine (:mod:`polymsg._amqp_engine`) on py-amqp.

The engine does everything a RabbitMQ driver does (connections, declarations,
publishing with confirms, subscriptions, the reply queue); this driver only
gives it py-amqp connections made by kombu's py-amqp transport, through
:class:`~polymsg_kombu._adapter.KombuAdapter`: one I/O thread per transport
(core's :mod:`polymsg._amqp_selector`), connections opened on short-lived threads and
then driven by it, and the private hooks kept for speed
(:mod:`polymsg_kombu._fastpath`).
"""

from __future__ import annotations

from oslo_config import cfg

from polymsg._amqp_engine import EngineDriver
from polymsg.driver import DriverOptions, TransportURL
from polymsg_kombu._adapter import KombuAdapter

__all__ = ["KombuDriver"]


class KombuDriver(EngineDriver):
    """The ``rabbit+kombu`` transport, also ``rabbit://`` (see the module docstring)."""

    connection_prefix = "polymsg-kombu"

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts) -> None:
        super().__init__(url, options, conf, KombuAdapter())
