"""A small compute-like service written against oslo.messaging's API only.

It was an oslo.messaging service; moving it to polymsg changed one line, the
import below (it read ``import oslo_messaging as messaging``). Everything
else is oslo.messaging's API: an RPC server with three methods and an
expected exception, a client using call, cast and fanout with
``prepare(server=..., version=...)``, a notifier and a pooled listener.
The same file runs on every polymsg transport (``memory://``, ``rabbit://``,
``rabbit+pika://``, ``zmq://``), and over RabbitMQ it talks to services still
on oslo.messaging.
"""

from __future__ import annotations

import datetime
import threading
import uuid
from typing import Any

from polymsg.compat import oslo_messaging as messaging

EXCHANGE = "compute"
TOPIC = "compute"


class InstanceNotFound(Exception):
    """The instance does not exist on this host."""


class ComputeManager:
    """The RPC endpoint of one compute host (API version 1.2)."""

    target = messaging.Target(namespace="compute", version="1.2")

    def __init__(self, host: str, notifier: Any) -> None:
        self.host = host
        self.notifier = notifier
        self.instances: dict[str, dict[str, Any]] = {}
        self.resized = threading.Event()
        self.refreshed = threading.Event()

    def create_instance(self, ctxt: dict[str, Any], name: str) -> dict[str, Any]:
        instance = {"id": uuid.uuid4(), "name": name, "host": self.host,
                    "created_at": datetime.datetime(2026, 1, 1, 12, 0, 0),
                    "tags": {"new"}}
        self.instances[str(instance["id"])] = instance
        self.notifier.info(ctxt, "compute.instance.create.end", instance)
        return instance

    @messaging.expected_exceptions(InstanceNotFound)
    def get_instance(self, ctxt: dict[str, Any], instance_id: str) -> dict[str, Any]:
        try:
            return self.instances[instance_id]
        except KeyError:
            raise InstanceNotFound(f"instance {instance_id} is not on {self.host}") from None

    def resize(self, ctxt: dict[str, Any], instance_id: str, flavor: str) -> None:
        self.instances[instance_id]["flavor"] = flavor
        self.resized.set()

    def refresh_cache(self, ctxt: dict[str, Any]) -> None:
        self.refreshed.set()


class ComputeAPI:
    """The client side: what other services call."""

    def __init__(self, transport: Any, exchange: str = EXCHANGE) -> None:
        target = messaging.Target(topic=TOPIC, exchange=exchange, namespace="compute",
                                  version="1.0")
        self.client = messaging.get_rpc_client(transport, target, version_cap="1.2",
                                               timeout=30)

    def create_instance(self, ctxt: dict[str, Any], host: str, name: str) -> Any:
        return self.client.prepare(server=host, version="1.1").call(
            ctxt, "create_instance", name=name)

    def get_instance(self, ctxt: dict[str, Any], host: str, instance_id: str) -> Any:
        return self.client.prepare(server=host).call(ctxt, "get_instance",
                                                     instance_id=instance_id)

    def resize(self, ctxt: dict[str, Any], host: str, instance_id: str, flavor: str) -> None:
        self.client.prepare(server=host, version="1.2").cast(
            ctxt, "resize", instance_id=instance_id, flavor=flavor)

    def refresh_all(self, ctxt: dict[str, Any]) -> None:
        self.client.prepare(fanout=True).cast(ctxt, "refresh_cache")


class AuditEndpoint:
    """Notification endpoint: records instance creations."""

    filter_rule = messaging.NotificationFilter(event_type=r"^compute\.instance\.")

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.arrived = threading.Event()

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        self.seen.append({"publisher_id": publisher_id, "event_type": event_type,
                          "payload": payload, "metadata": metadata})
        self.arrived.set()


def start_compute(conf: Any, host: str, url: str | None = None,
                  exchange: str = EXCHANGE) -> tuple[Any, ComputeManager]:
    """Start the RPC server of compute ``host``; returns (server, its endpoint)."""
    transport = messaging.get_rpc_transport(conf, url=url)
    notifier = messaging.Notifier(messaging.get_notification_transport(conf, url=url),
                                  publisher_id=f"compute.{host}", driver="messagingv2",
                                  topics=["notifications"])
    manager = ComputeManager(host, notifier)
    target = messaging.Target(topic=TOPIC, server=host, exchange=exchange)
    server = messaging.get_rpc_server(transport, target, [manager], executor="threading")
    server.start()
    return server, manager


def start_audit(conf: Any, url: str | None = None, pool: str = "audit") -> tuple[Any, Any]:
    """Start a pooled notification listener; returns (listener, its endpoint)."""
    transport = messaging.get_notification_transport(conf, url=url)
    endpoint = AuditEndpoint()
    listener = messaging.get_notification_listener(
        transport, [messaging.Target(topic="notifications")], [endpoint],
        executor="threading", pool=pool)
    listener.start()
    return listener, endpoint
