"""What every RabbitMQ driver declares: its capabilities and its one option group."""

from __future__ import annotations

from collections.abc import Sequence

from oslo_config import cfg

from polymsg._amqp_options import RABBIT_GROUP, rabbit_opts
from polymsg.driver import CAPABILITIES, Driver

__all__ = ["RabbitDriver"]


class RabbitDriver(Driver):
    """Base of the RabbitMQ drivers: every capability, the ``[polymsg_rabbit]`` options."""

    capabilities = CAPABILITIES
    options_group = RABBIT_GROUP

    @classmethod
    def list_opts(cls) -> Sequence[cfg.Opt]:
        """The ``[polymsg_rabbit]`` options (also settable as URL query keys)."""
        return rabbit_opts()
