"""polymsg's RabbitMQ driver on kombu: ``rabbit+kombu://`` (and core's alias ``rabbit://``).

It speaks oslo.messaging's AMQP wire format (:mod:`polymsg.driver`'s
``amqp`` module), so polymsg and oslo.messaging services on one broker call
each other and read each other's notifications.

Threading model
===============
A transport opens up to three connections, lazily: a *publisher* connection,
a *consumer* connection (RPC servers' and listeners' queues) and a *reply*
connection (the transport's reply queue, on the first call). Each is owned by
one I/O thread that connects (failing over between the URL's hosts, with
backoff), reads incoming frames as they arrive and sends heartbeats, so
heartbeats keep flowing however long endpoints run: endpoints run on the
facade's worker threads, never on an I/O thread. kombu/py-amqp connections
are not thread-safe, so every use of a connection (reads, publishes,
acknowledgements, declarations) happens under that connection's lock.

* Publishes and acknowledgements are queued operations: the thread finding
  the lock free writes every queued one with a single system call, so
  sending threads never wait for each other's writes.
* Casts and notifications go on a confirm-mode channel and return once
  RabbitMQ confirmed them; concurrent senders share confirm round trips.
  Calls' requests and replies go on a channel without confirms. A call
  never waits to send: its request is queued for whichever thread holds
  the connection, or, when it needs connecting or declaring first, sent by
  a helper thread that fails its future if it cannot.
* Deliveries are decoded by the consumer connection's I/O thread after it
  released the lock, and queued for the facade's workers, which acknowledge
  them later.
* Replies come on the transport's single reply queue (``reply_<hex>``,
  consumed without acks) and are routed to waiting calls by message id. A
  call waiting alone reads its reply off the socket on its own thread;
  several waiting calls are served by the reply connection's I/O thread.

Delivery
========
* The sender declares the queue it sends to (``topic``, ``topic.server``,
  ``<topic>.<priority>``), once per connection, so messages wait for a
  server or listener that starts later. Every message is published
  ``mandatory``: if the queue has gone meanwhile (expired, deleted) the
  broker returns the message, the driver declares the queue again and
  resends it (a call's request too, within the call's timeout: up to 2 more
  times, then ``MessageDeliveryFailure``). A fanout cast that reached no
  server and a reply whose caller is gone are logged (INFO, at most 5 lines
  of each per 10 s per transport).
* ``cleanup()`` deletes the transport's reply queue and its servers' fanout
  queues; the queues of topics stay for the servers to come.
* ``queue_ttl`` becomes the queue's ``x-expires``; ``message_ttl`` and a
  call's timeout become the message's ``expiration``, so a request is never
  executed after its caller gave up.
* Declarations follow core's policy (:class:`polymsg.amqp.Declarer`): a
  queue or exchange that exists with other arguments (RabbitMQ's
  PRECONDITION_FAILED) is used as it is, with a warning naming it.
* Bodies that are not polymsg/oslo messages are logged and rejected without
  requeue (dead-lettered if the queue has a dead-letter policy).
* Lost connections are re-established by the I/O threads; consumers are
  re-declared on the new connection. A send waits for the connection within
  its ``retry`` budget (``None``: forever; ``N``: N more connection rounds)
  and is sent again when the connection dropped before its confirm, then
  raises ``MessageDeliveryFailure``. Messages taken but not acknowledged
  before a connection loss are redelivered by RabbitMQ.

Options are the ``[polymsg_rabbit]`` group shared with polymsg-pika
(:mod:`polymsg.amqp`), each overridable as a URL query key, TLS included.
"""

try:
    import kombu  # noqa: F401 - checked here for a clear install hint
except ImportError as exc:  # pragma: no cover - a broken installation
    raise ImportError(
        "the rabbit+kombu polymsg driver needs kombu: pip install polymsg-kombu"
    ) from exc

from polymsg_kombu._driver import KombuDriver
from polymsg_kombu._options import list_opts

__all__ = ["KombuDriver", "list_opts"]
