"""The pika connection parameters of the ``rabbit+pika`` driver, from the shared options.

The options are core's ``[polymsg_rabbit]`` group (:mod:`polymsg.amqp`),
read by both RabbitMQ drivers, each overridable per transport by a URL query
key of the same name, e.g.
``rabbit+pika://user:pass@host:5671/?ssl=true&ssl_ca_file=/etc/ca.pem``.
Hosts, credentials, TLS, backoff and host order come from core's
:class:`~polymsg.amqp.ConnectionSpec`; this module only turns one host of
it into :class:`pika.ConnectionParameters`.
"""

from __future__ import annotations

import ssl
from typing import Any

import pika
from oslo_config import cfg

from polymsg import amqp

__all__ = ["connection_parameters", "list_opts"]

def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The driver's options for ``oslo-config-generator --namespace polymsg_pika``."""
    return amqp.list_opts()


def connection_parameters(spec: amqp.ConnectionSpec, endpoint: amqp.Endpoint, name: str,
                          context: ssl.SSLContext | None) -> pika.ConnectionParameters:
    """pika's parameters for one host of ``spec``; ``context`` from ``spec.tls``."""
    credentials: Any
    if spec.login_method == "EXTERNAL":
        credentials = pika.credentials.ExternalCredentials()
    else:
        credentials = pika.PlainCredentials(endpoint.username, endpoint.password,
                                            erase_on_connect=False)
    return pika.ConnectionParameters(
        host=endpoint.hostname,
        port=endpoint.port,
        virtual_host=spec.virtual_host,
        credentials=credentials,
        heartbeat=spec.heartbeat,
        connection_attempts=1,
        socket_timeout=spec.connect_timeout,
        stack_timeout=spec.connect_timeout,
        ssl_options=pika.SSLOptions(context, endpoint.hostname) if context is not None else None,
        client_properties={"connection_name": name, "product": "polymsg-pika"},
    )
