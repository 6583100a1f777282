"""The AMQP engine of polymsg's RabbitMQ drivers, for driver authors.

``rabbit+kombu`` and ``rabbit+pika`` share everything here and keep only an
I/O adapter over their client library. It holds no broker-client import
and builds on the driver SPI (:mod:`polymsg.driver`), which knows nothing
of AMQP:

* the wire format, names and declarations (:mod:`polymsg._amqp`'s
  ``encode_*``/``decode_*``, :class:`Layout`, :class:`Route`…);
* the :class:`Declarer`: routes declared once per connection, and the
  policy for a refused declaration (``406``: used as it is, with a
  warning), over a driver's :class:`DeclareChannel`;
* :class:`RabbitDriver`, the base class declaring capabilities and options,
  and :func:`translated`: a client library's errors leave a driver only as
  :class:`~polymsg.MessageDeliveryFailure`, the original as its cause;
* the one option group both drivers read, ``[polymsg_rabbit]``
  (:func:`rabbit_opts`, :data:`RABBIT_GROUP`, :func:`layout_from_options`),
  and :class:`RabbitSettings`, what a driver reads of it;
* delivery: :class:`Attempts` counts a message's :class:`Outcome` values
  (confirmed, nacked, returned, channel closed, lost) against one table,
  :data:`LIMITS`, and says when to send it again;
* deliveries: :func:`decode` (garbage logged at a bounded rate),
  :class:`Delivery`, the incoming message that replies to calls, and
  :class:`QueueWatch` (stream offsets, quorum delivery-limit warnings);
* the :class:`ReplyTable` of calls waiting for replies (interim frames
  merged, malformed replies logged at a bounded rate);
* the :class:`ConfirmWindow` of casts and notifications awaiting their confirm;
* connecting: :class:`ConnectionSpec` (hosts, credentials, virtual host,
  TLS, heartbeat), :class:`Reconnect` (host order, backoff with jitter),
  :func:`classify` (permanent or transient) and :func:`connection_error`
  (the error a sender gets);
* the engine itself, written once against the I/O port
  (:mod:`polymsg._amqp_port`): :class:`polymsg._amqp_engine.EngineDriver`
  and what it drives (:mod:`polymsg._amqp_link`,
  :mod:`polymsg._amqp_declaring`, :mod:`polymsg._amqp_publisher`,
  :mod:`polymsg._amqp_subscription`, :mod:`polymsg._amqp_reply_queue`). A
  driver on it is a subclass given an :class:`~polymsg._amqp_port.Adapter`
  over its client library.
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
    conflict_error,
    consume_arguments,
    decode_notification,
    decode_reply,
    decode_request,
    encode_notification,
    encode_reply,
    encode_request,
    expiration,
    fanout_queue_name,
    for_broker,
    new_id,
    next_stream_offset,
    properties,
    queue_arguments,
    reply_queue_name,
    requeue_warning,
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
from polymsg._amqp_declare import PRECONDITION_FAILED, DeclareChannel, DeclareDone, Declarer
from polymsg._amqp_delivery import LIMITS, Attempts, Outcome, Unrouted
from polymsg._amqp_driver import RabbitDriver, delivery_failure, private_hooks_allowed, translated
from polymsg._amqp_incoming import Delivery, QueueWatch, SendReply, decode
from polymsg._amqp_options import (
    RABBIT_GROUP,
    RENAMED,
    RabbitSettings,
    layout_from_options,
    list_opts,
    rabbit_opts,
)
from polymsg._amqp_replies import ReplyTable
from polymsg._amqp_window import ConfirmWindow

__all__ = [
    "CONTENT_ENCODING",
    "CONTENT_TYPE",
    "ENVELOPE_VERSION",
    "LIMITS",
    "PERSISTENT",
    "PRECONDITION_FAILED",
    "QUICK_DEATH",
    "RABBIT_GROUP",
    "RENAMED",
    "TRANSIENT",
    "Attempts",
    "ConfirmWindow",
    "ConnectionSpec",
    "DeclareChannel",
    "DeclareDone",
    "Declarer",
    "Delivery",
    "Endpoint",
    "ExchangeSpec",
    "Failure",
    "Kind",
    "Layout",
    "Notification",
    "Outcome",
    "QueueSpec",
    "QueueWatch",
    "RabbitDriver",
    "RabbitSettings",
    "Reconnect",
    "ReplyFrame",
    "ReplyTable",
    "Request",
    "Route",
    "SendReply",
    "TLSSpec",
    "Unrouted",
    "classify",
    "conflict_error",
    "connection_error",
    "consume_arguments",
    "decode",
    "decode_notification",
    "decode_reply",
    "decode_request",
    "delivery_failure",
    "encode_notification",
    "encode_reply",
    "encode_request",
    "expiration",
    "fanout_queue_name",
    "for_broker",
    "give_up_reason",
    "layout_from_options",
    "list_opts",
    "new_id",
    "next_stream_offset",
    "private_hooks_allowed",
    "properties",
    "queue_arguments",
    "rabbit_opts",
    "reply_queue_name",
    "requeue_warning",
    "translated",
]
