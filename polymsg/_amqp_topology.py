"""Queue types of the RabbitMQ drivers: quorum queues, stream fanout, stable names.

The options carry oslo.messaging's names, defaults and queue arguments, so a
polymsg service and an oslo.messaging service configured alike declare the
same queues and share them. :func:`topology_opts` lists them (both drivers
register them with the rest of their RabbitMQ options);
:func:`layout_from_topology` turns their values into a
:class:`~polymsg._amqp.Layout`; :func:`conflict_error` explains a
``406 PRECONDITION_FAILED`` on a queue declaration in those terms.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from polymsg._amqp_layout import Layout, QueueSpec

if TYPE_CHECKING:
    from polymsg.driver import DriverOptions

__all__ = ["QueueNamer", "broker_major", "conflict_error", "consume_arguments", "for_broker",
           "layout_from_topology", "next_stream_offset", "requeue_warning", "topology_opts"]


def topology_opts() -> list[cfg.Opt]:
    """A fresh list of the queue-type options (oslo.messaging's names and defaults)."""
    return [
        cfg.BoolOpt("rabbit_quorum_queue", default=False,
                    help="Declare topic, server and notification queues as quorum queues "
                         "(x-queue-type: quorum): replicated over a cluster's nodes, durable. "
                         "Exchanges are then durable and messages persistent whatever "
                         "amqp_durable_queues says. Must match every other service on the "
                         "same queues."),
        cfg.BoolOpt("rabbit_transient_quorum_queue", default=False,
                    help="Declare reply and fanout queues as quorum queues too (they still "
                         "expire after rabbit_transient_queues_ttl unused)."),
        cfg.IntOpt("rabbit_quorum_delivery_limit", default=0, min=0,
                   help="x-delivery-limit of quorum queues: deliveries after which a message "
                        "that keeps coming back is dropped or dead-lettered (0: the broker's "
                        "default)."),
        cfg.IntOpt("rabbit_quorum_max_memory_length", default=0, min=0,
                   help="x-max-in-memory-length of quorum queues (0: not set)."),
        cfg.IntOpt("rabbit_quorum_max_memory_bytes", default=0, min=0,
                   help="x-max-in-memory-bytes of quorum queues (0: not set)."),
        cfg.BoolOpt("rabbit_stream_fanout", default=False,
                    help="One stream (x-queue-type: stream) per topic, <topic>_fanout, takes "
                         "the fanout casts instead of a queue per server; its messages are "
                         "kept for rabbit_transient_queues_ttl seconds (x-max-age). Needs "
                         "rabbit_transient_quorum_queue and a rabbit_qos_prefetch_count above 0."),
        cfg.BoolOpt("use_queue_manager", default=False,
                    help="Name reply and fanout queues <hostname>:<processname>:<n> instead "
                         "of at random, so a restarted process reuses its queues."),
        cfg.StrOpt("hostname", default=socket.gethostname(), sample_default="node1.example.com",
                   help="Host name in queue names when use_queue_manager is on."),
        cfg.StrOpt("processname", default=os.path.basename(sys.argv[0] or "python"),
                   sample_default="nova-api",
                   help="Process name in queue names when use_queue_manager is on."),
    ]


def layout_from_topology(options: DriverOptions, base: Layout) -> Layout:
    """``base`` (durability and TTL options) with the queue types ``options`` ask for.

    Raises :class:`~polymsg.InvalidTransportURL` for combinations the broker
    cannot serve (stream fanout without transient quorum queues or without a
    prefetch bound).
    """
    from polymsg._exceptions import InvalidTransportURL

    stream = bool(options.get("rabbit_stream_fanout", False))
    transient_quorum = bool(options.get("rabbit_transient_quorum_queue", False))
    if stream and not transient_quorum:
        raise InvalidTransportURL("rabbit_stream_fanout needs rabbit_transient_quorum_queue=true")
    if stream and int(options.get("rabbit_qos_prefetch_count", 0) or 0) <= 0:
        raise InvalidTransportURL("rabbit_stream_fanout needs rabbit_qos_prefetch_count above 0 "
                                  "(a stream "
                                  "consumer must bound what it holds)")
    namer = None
    if options.get("use_queue_manager", False):
        namer = QueueNamer(str(options.get("hostname") or socket.gethostname()),
                           str(options.get("processname") or "python"))
    return replace(
        base,
        quorum=bool(options.get("rabbit_quorum_queue", False)),
        transient_quorum=transient_quorum,
        quorum_delivery_limit=int(options.get("rabbit_quorum_delivery_limit", 0)),
        quorum_max_memory_length=int(options.get("rabbit_quorum_max_memory_length", 0)),
        quorum_max_memory_bytes=int(options.get("rabbit_quorum_max_memory_bytes", 0)),
        stream_fanout=stream,
        namer=namer,
    )


class QueueNamer:
    """Stable names for reply and fanout queues: ``<hostname>:<processname>:<n>``.

    ``n`` counts the names this process took, from 1; a process of the same
    name started again on the same host counts from 1 again, so it takes
    the queues of its predecessor (which still hold what was sent to them
    meanwhile) instead of leaving them to expire and declaring new ones.
    Two live processes of one name on one host must differ in
    ``processname``.
    """

    def __init__(self, hostname: str, processname: str) -> None:
        self.prefix = f"{hostname}:{processname}"
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self.prefix}:{self._count}"


def broker_major(server_properties: Mapping[str, Any] | None) -> int | None:
    """RabbitMQ's major version from a connection's server properties (``None``: unknown)."""
    version = (server_properties or {}).get("version")
    if isinstance(version, (bytes, bytearray)):
        version = bytes(version).decode("ascii", "replace")
    found = re.match(r"\s*(\d+)\.", version) if isinstance(version, str) else None
    return int(found.group(1)) if found else None


def for_broker(queue: QueueSpec, server_properties: Mapping[str, Any] | None) -> QueueSpec:
    """``queue`` as it is declared on the broker whose ``server_properties`` are given.

    RabbitMQ 4 and later (and a broker of unknown version) get ``queue`` as
    it is: durable. On RabbitMQ 3 a classic topic, server or notification
    queue keeps the durability oslo.messaging gives it
    (``amqp_durable_queues``), so a polymsg service and an oslo.messaging
    service on its defaults declare one queue alike.
    """
    if queue.legacy_durable is None or queue.legacy_durable == queue.durable:
        return queue
    major = broker_major(server_properties)
    if major is None or major >= 4:
        return queue
    return replace(queue, durable=queue.legacy_durable)


def consume_arguments(queue: QueueSpec, next_offset: int | None = None) -> dict[str, Any] | None:
    """The ``basic.consume`` arguments for ``queue`` (``None``: none).

    A stream consumer starts at the next message published; one that read
    the stream before (``next_offset``, from :func:`next_stream_offset`)
    resumes right after the last message it was given, so a reconnect
    misses nothing the stream still holds.
    """
    args = dict(queue.consume_arguments)
    if next_offset is not None and "x-stream-offset" in args:
        args["x-stream-offset"] = next_offset
    return args or None


def next_stream_offset(headers: Mapping[str, Any] | None) -> int | None:
    """The offset after a stream delivery's ``x-stream-offset`` header (``None``: no offset)."""
    value = (headers or {}).get("x-stream-offset")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value + 1
    return None


#: The delivery limit RabbitMQ 4 gives a quorum queue that sets none.
DEFAULT_DELIVERY_LIMIT = 20


def requeue_warning(queue: QueueSpec, headers: Mapping[str, Any] | None,
                    body: bytes | bytearray | memoryview | str) -> str | None:
    """What to log when requeueing this delivery takes it past its queue's delivery limit.

    A quorum queue counts the deliveries a processing failure returns
    (``basic.reject``; since RabbitMQ 4.3 ``basic.nack`` is not counted) in
    the ``x-delivery-count`` header, and drops the message, or dead-letters
    it where a policy names a dead-letter exchange, once the count passes
    ``x-delivery-limit`` (RabbitMQ 4's default: 20). ``None`` for other
    queues and for deliveries below the limit.
    """
    if queue.arguments.get("x-queue-type") != "quorum":
        return None
    count = (headers or {}).get("x-delivery-count", 0)
    if not isinstance(count, int) or isinstance(count, bool):
        return None
    limit = int(queue.arguments.get("x-delivery-limit") or DEFAULT_DELIVERY_LIMIT)
    if count + 1 <= limit:
        return None
    from polymsg._amqp import _open  # the envelope reader; the id is all this needs

    try:
        raw = _open(body)
        unique_id = raw.get("_unique_id") or raw.get("message_id") or "?"
    except Exception:  # a message that cannot be read is named by its queue alone
        unique_id = "?"
    return (f"message {unique_id} on queue {queue.name!r} was returned {count + 1} times, past "
            f"the queue's delivery limit of {limit}: RabbitMQ drops it, or dead-letters it "
            f"where a policy names a dead-letter exchange")


_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")

#: The option that decides each queue argument a conflict can name, per queue role.
_OPTION_OF = {
    "shared": "rabbit_quorum_queue",
    "transient": "rabbit_transient_quorum_queue",
    "stream": "rabbit_stream_fanout",
}


def conflict_error(queue: QueueSpec, broker_text: str) -> str | None:
    """Why a ``406 PRECONDITION_FAILED`` on declaring ``queue`` must stop the caller.

    ``None`` when the conflict is harmless: the queue exists with another
    expiry or delivery limit (only the hint given second does not apply), or
    it is a classic non-durable queue a peer on older settings made and
    polymsg asked for a classic durable one (it is used as it is; RabbitMQ
    4.3 would not have let it be made). A conflict on the queue type
    (classic, quorum, stream) or on durability of a quorum or stream queue
    gets the text of the error: the queue, the argument, what was asked and
    the option value that would match the queue as it is.
    """
    found = _INEQUIVALENT.search(broker_text)
    arg = found.group(1) if found else ""
    asked = str(queue.arguments.get("x-queue-type", "classic"))
    if arg not in ("x-queue-type", "durable"):
        return None
    if arg == "durable" and asked == "classic":
        return None
    option = _OPTION_OF.get(queue.role, "rabbit_quorum_queue")
    if asked == "classic":
        hint = f"it was made as a quorum or stream queue; {option}=true declares it alike"
    else:
        hint = (f"it exists as another type (a classic queue, made by a service with "
                f"{option}=false); set {option}=false to use it, or delete the queue "
                f"(see the RabbitMQ 4 page of polymsg's documentation) to move it to {asked}")
    return (f"queue {queue.name!r} exists with another {arg!r} than polymsg declares "
            f"(x-queue-type {asked}, durable={queue.durable}): {hint}. RabbitMQ said: "
            f"{broker_text}")


def describe(layout: Layout) -> dict[str, Any]:
    """The queue types of ``layout`` per role, for logs and ``polymsg`` diagnostics."""
    return {
        "shared": "quorum" if layout.quorum else "classic",
        "transient": "quorum" if layout.transient_quorum else "classic",
        "fanout": "stream" if layout.stream_fanout else (
            "quorum" if layout.transient_quorum else "classic"),
    }
