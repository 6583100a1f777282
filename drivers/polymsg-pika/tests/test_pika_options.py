"""Options, URLs and registration: pure logic, no broker needed."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

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


def test_describe_digs_out_the_cause() -> None:
    from pika.adapters.utils.connection_workflow import (
        AMQPConnectionWorkflowFailed,
        AMQPConnectorSocketConnectError,
    )
    wrapped = AMQPConnectionWorkflowFailed(
        [AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "Connection refused"))])
    assert describe(wrapped) == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert describe(None) == "no reason given"
