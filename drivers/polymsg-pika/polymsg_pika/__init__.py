"""polymsg's RabbitMQ driver on pika: ``rabbit+pika://user:pass@host:5672/vhost``.

Install ``polymsg-pika`` and pass such a URL to :func:`polymsg.get_transport`;
the driver speaks the same wire format as ``polymsg-kombu`` and
oslo.messaging. It is polymsg's AMQP engine (:mod:`polymsg._amqp_engine`: one
I/O thread per transport, pipelined publisher confirms) on pika, given it by
:mod:`polymsg_pika._adapter`; its options
(``[polymsg_rabbit]``, shared with polymsg-kombu, or URL query keys) in
:mod:`polymsg.amqp`.
"""

from polymsg_pika._driver import PikaDriver
from polymsg_pika._options import list_opts

__all__ = ["PikaDriver", "list_opts"]
