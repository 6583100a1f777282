"""The connection settings of the ``rabbit+kombu`` driver, from the shared RabbitMQ options.

The options are core's ``[polymsg_rabbit]`` group (:mod:`polymsg.amqp`),
read by both RabbitMQ drivers, each overridable per transport by a URL query
key of the same name, e.g.
``rabbit://user:pass@host:5671/vhost?ssl=true&ssl_ca_file=/etc/ca.pem``.
Hosts, credentials, TLS, backoff and host order come from core's
:class:`~polymsg.amqp.ConnectionSpec` (and the rest of what the driver reads
from :class:`~polymsg.amqp.RabbitSettings`); this module only turns them into
``amqp.Connection`` arguments.
"""

from __future__ import annotations

import ssl
from typing import Any

from oslo_config import cfg

from polymsg import amqp

__all__ = ["list_opts", "py_amqp_kwargs", "ssl_options"]

def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[("polymsg_rabbit", [opts])]`` for ``oslo-config-generator --namespace polymsg_kombu``."""
    return amqp.list_opts()


def py_amqp_kwargs(spec: amqp.ConnectionSpec, endpoint: amqp.Endpoint,
                   name: str) -> dict[str, Any]:
    """Keyword arguments of ``amqp.Connection`` for ``endpoint`` of ``spec``;
    ``name`` is shown by the broker (``connection_name``)."""
    sslopts: dict[str, Any] | bool = False
    if spec.tls is not None:
        sslopts = ssl_options(spec.tls)
        if sslopts.pop("verify_hostname", False):
            sslopts["server_hostname"] = endpoint.hostname
    host = endpoint.hostname
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return {
        "host": f"{host}:{endpoint.port}",
        "userid": endpoint.username,
        "password": endpoint.password,
        "virtual_host": spec.virtual_host,
        "heartbeat": spec.heartbeat,
        "connect_timeout": spec.connect_timeout,
        "login_method": spec.login_method,
        "ssl": sslopts,
        "client_properties": {"connection_name": name, "product": "polymsg-kombu"},
    }


def ssl_options(tls: amqp.TLSSpec) -> dict[str, Any]:
    """py-amqp's TLS options (a dict: py-amqp takes no ``SSLContext``)."""
    result: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
                              "verify_hostname": tls.verify and tls.verify_hostname}
    if tls.ca_file:
        result["ca_certs"] = tls.ca_file
    if tls.cert_file:
        result["certfile"] = tls.cert_file
        result["keyfile"] = tls.key_file or None
    return result
