"""polymsg's RabbitMQ driver on py-amqp: ``rabbit+kombu://`` (and core's alias ``rabbit://``).

It speaks oslo.messaging's AMQP wire format, so polymsg and oslo.messaging
services on one broker call each other and read each other's
notifications. Everything but the I/O is core's AMQP engine, shared with
``rabbit+pika`` (:mod:`polymsg._amqp_engine` describes threads, connections
and delivery); how it drives py-amqp is in :mod:`polymsg_kombu._driver`.
Options are the ``[polymsg_rabbit]`` group shared with polymsg-pika
(:mod:`polymsg.amqp`), each overridable as a URL query key, TLS included.
"""

try:
    import amqp  # noqa: F401 - checked here for a clear install hint
except ImportError as exc:  # pragma: no cover - a broken installation
    raise ImportError(
        "the rabbit+kombu polymsg driver needs py-amqp: pip install polymsg-kombu"
    ) from exc

from polymsg_kombu._driver import KombuDriver
from polymsg_kombu._options import list_opts

__all__ = ["KombuDriver", "list_opts"]
