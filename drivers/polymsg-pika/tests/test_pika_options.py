"""Options, URLs and registration: pure logic, no broker needed."""

from __future__ import annotations

import time
from importlib.metadata import entry_points
from typing import Any

import pytest
from oslo_config import cfg
from polymsg_pika import PikaDriver, list_opts
from polymsg_pika._errors import describe
from polymsg_pika._options import connection_parameters

import polymsg
from polymsg import amqp
from polymsg.driver import DriverOptions


def _options(**overrides: object) -> DriverOptions:
    values = {opt.dest: opt.default for opt in PikaDriver.list_opts()}
    values.update(overrides)
    return DriverOptions(values)


def test_entry_points_register_the_driver_and_its_options() -> None:
    drivers = {ep.name: ep.value for ep in entry_points(group="polymsg.drivers")}
    assert drivers["rabbit+pika"] == "polymsg_pika:PikaDriver"
    opts = {ep.name: ep.value for ep in entry_points(group="oslo.config.opts")}
    assert opts["polymsg_pika"] == "polymsg_pika:list_opts"
    [(group, listed)] = list_opts()
    assert group == PikaDriver.options_group == "polymsg_rabbit"
    assert {opt.dest for opt in listed} == {opt.dest for opt in PikaDriver.list_opts()}


def test_options_come_from_the_config_group_and_the_url_overrides_them() -> None:
    conf = cfg.ConfigOpts()
    conf.register_opts(PikaDriver.list_opts(), group="polymsg_rabbit")
    conf.set_override("heartbeat_timeout_threshold", 17, group="polymsg_rabbit")
    conf.set_override("rabbit_qos_prefetch_count", 5, group="polymsg_rabbit")
    url = "rabbit+pika://h/?rabbit_qos_prefetch_count=9"
    with polymsg.get_transport(url, conf=conf) as transport:
        options = transport._driver.options
        assert (options.heartbeat_timeout_threshold, options.rabbit_qos_prefetch_count) == \
            (17, 9)


def test_unknown_url_option_is_named() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="no_such_option"):
        polymsg.get_transport("rabbit+pika://h/?no_such_option=1")


def test_creating_a_transport_does_not_touch_the_network() -> None:
    started = time.monotonic()
    with polymsg.get_transport("rabbit+pika://guest:guest@192.0.2.1:5672/") as transport:
        assert "multi_host" in transport.capabilities
    assert time.monotonic() - started < 1.0


def _parameters(text: str, **overrides: object) -> list[Any]:
    spec = amqp.ConnectionSpec.from_url(polymsg.TransportURL.parse(text), _options(**overrides))
    context = spec.tls.context() if spec.tls is not None else None
    return [connection_parameters(spec, e, "name", context) for e in spec.endpoints]


def test_connection_parameters_per_host() -> None:
    params = _parameters("rabbit+pika://alice:secret@a:1,b,carol@c:3/vh",
                         heartbeat_timeout_threshold=7)
    assert [(p.host, p.port) for p in params] == [("a", 1), ("b", 5672), ("c", 3)]
    assert [(p.credentials.username, p.credentials.password) for p in params] == \
        [("alice", "secret"), ("guest", "guest"), ("carol", "")]
    assert {p.virtual_host for p in params} == {"vh"}
    assert {p.heartbeat for p in params} == {7}
    assert params[0].client_properties["connection_name"] == "name"


def test_default_virtual_host_and_tls_port() -> None:
    [plain] = _parameters("rabbit+pika://h/")
    [secure] = _parameters("rabbit+pika://h/", ssl=True, ssl_verify=False)
    assert (plain.virtual_host, plain.port, plain.ssl_options) == ("/", 5672, None)
    assert secure.port == 5671 and secure.ssl_options is not None


def test_key_without_certificate_is_refused() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl_cert_file"):
        polymsg.get_transport("rabbit+pika://h/?ssl=true&ssl_key_file=/k.pem")


def test_describe_digs_out_the_cause() -> None:
    from pika.adapters.utils.connection_workflow import (
        AMQPConnectionWorkflowFailed,
        AMQPConnectorSocketConnectError,
    )
    wrapped = AMQPConnectionWorkflowFailed(
        [AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "Connection refused"))])
    assert describe(wrapped) == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert describe(None) == "no reason given"


def test_names_too_long_for_rabbitmq_are_refused_before_sending() -> None:
    with polymsg.get_transport("rabbit+pika://192.0.2.1/") as transport:
        with pytest.raises(polymsg.InvalidTarget, match="too long"):
            polymsg.RPCClient(transport, polymsg.Target(topic="t" * 300))
        with pytest.raises(polymsg.InvalidTarget, match="too long"):
            polymsg.RPCClient(transport, polymsg.Target(topic="t" * 200, server="s" * 100))
