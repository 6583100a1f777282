"""The AMQP engine of polymsg's RabbitMQ drivers, for driver authors.

``rabbit+kombu`` and ``rabbit+pika`` share everything here and keep only an
I/O adapter over their client library. It holds no broker-client import
and builds on the driver SPI (:mod:`polymsg.driver`), which knows nothing
of AMQP:

* the wire format, names and declarations (:mod:`polymsg._amqp`'s
  ``encode_*``/``decode_*``, :class:`Layout`, :class:`Route`…);
* the one option group both drivers read, ``[polymsg_rabbit]``
  (:func:`rabbit_opts`, :data:`RABBIT_GROUP`, :func:`layout_from_options`);
* connecting: :class:`ConnectionSpec` (hosts, credentials, virtual host,
  TLS, heartbeat), :class:`Reconnect` (host order, backoff with jitter),
  :func:`classify` (permanent or transient) and :func:`connection_error`
  (the error a sender gets);
* :func:`conflict_error`: whether a ``406 PRECONDITION_FAILED`` on a queue
  declaration must stop the caller, and the text it gets.
"""

from polymsg._amqp import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    ENVELOPE_VERSION,
    PERSISTENT,
    TRANSIENT,
    ExchangeSpec,
    Layout,
    Notification,
    QueueSpec,
    ReplyFrame,
    Request,
    Route,
    decode_notification,
    decode_reply,
    decode_request,
    encode_notification,
    encode_reply,
    encode_request,
    expiration,
    fanout_queue_name,
    new_id,
    properties,
    queue_arguments,
    reply_queue_name,
)
from polymsg._amqp_connection import (
    QUICK_DEATH,
    ConnectionSpec,
    Endpoint,
    Failure,
    Kind,
    Reconnect,
    TLSSpec,
    classify,
    connection_error,
    give_up_reason,
)
from polymsg._amqp_options import (
    RABBIT_GROUP,
    RENAMED,
    layout_from_options,
    list_opts,
    rabbit_opts,
)
from polymsg._amqp_topology import conflict_error

__all__ = [
    "CONTENT_ENCODING",
    "CONTENT_TYPE",
    "ENVELOPE_VERSION",
    "PERSISTENT",
    "QUICK_DEATH",
    "RABBIT_GROUP",
    "RENAMED",
    "TRANSIENT",
    "ConnectionSpec",
    "Endpoint",
    "ExchangeSpec",
    "Failure",
    "Kind",
    "Layout",
    "Notification",
    "QueueSpec",
    "Reconnect",
    "ReplyFrame",
    "Request",
    "Route",
    "TLSSpec",
    "classify",
    "conflict_error",
    "connection_error",
    "decode_notification",
    "decode_reply",
    "decode_request",
    "encode_notification",
    "encode_reply",
    "encode_request",
    "expiration",
    "fanout_queue_name",
    "give_up_reason",
    "layout_from_options",
    "list_opts",
    "new_id",
    "properties",
    "queue_arguments",
    "rabbit_opts",
    "reply_queue_name",
]
