"""Options, URLs and registration: pure logic, no broker needed."""

from __future__ import annotations

import time
from importlib.metadata import entry_points

import pytest
from oslo_config import cfg
from polymsg_pika import PikaDriver, list_opts
from polymsg_pika._errors import describe
from polymsg_pika._options import Backoff, connection_parameters

import polymsg
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
    assert group == PikaDriver.options_group == "polymsg_pika"
    assert {opt.dest for opt in listed} == {opt.dest for opt in PikaDriver.list_opts()}


def test_options_come_from_the_config_group_and_the_url_overrides_them() -> None:
    conf = cfg.ConfigOpts()
    conf.register_opts(PikaDriver.list_opts(), group="polymsg_pika")
    conf.set_override("heartbeat", 17, group="polymsg_pika")
    conf.set_override("prefetch_count", 5, group="polymsg_pika")
    with polymsg.get_transport("rabbit+pika://h/?prefetch_count=9", conf=conf) as transport:
        options = transport._driver.options
        assert (options.heartbeat, options.prefetch_count) == (17, 9)


def test_unknown_url_option_is_named() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="no_such_option"):
        polymsg.get_transport("rabbit+pika://h/?no_such_option=1")


def test_creating_a_transport_does_not_touch_the_network() -> None:
    started = time.monotonic()
    with polymsg.get_transport("rabbit+pika://guest:guest@192.0.2.1:5672/") as transport:
        assert "multi_host" in transport.capabilities
    assert time.monotonic() - started < 1.0


def test_connection_parameters_per_host() -> None:
    url = polymsg.TransportURL.parse("rabbit+pika://alice:secret@a:1,b,carol@c:3/vh")
    params = connection_parameters(url, _options(heartbeat=7), "name")
    assert [(p.host, p.port) for p in params] == [("a", 1), ("b", 5672), ("c", 3)]
    assert [(p.credentials.username, p.credentials.password) for p in params] == \
        [("alice", "secret"), ("guest", "guest"), ("carol", "")]
    assert {p.virtual_host for p in params} == {"vh"}
    assert {p.heartbeat for p in params} == {7}
    assert params[0].client_properties["connection_name"] == "name"


def test_default_virtual_host_and_tls_port() -> None:
    url = polymsg.TransportURL.parse("rabbit+pika://h/")
    [plain] = connection_parameters(url, _options(), "n")
    [secure] = connection_parameters(url, _options(ssl=True, ssl_verify=False), "n")
    assert (plain.virtual_host, plain.port, plain.ssl_options) == ("/", 5672, None)
    assert secure.port == 5671 and secure.ssl_options is not None


def test_shuffled_failover_keeps_every_host() -> None:
    url = polymsg.TransportURL.parse("rabbit+pika://a,b,c,d/")
    params = connection_parameters(url, _options(failover_strategy="shuffle"), "n")
    assert sorted(p.host for p in params) == ["a", "b", "c", "d"]


def test_key_without_certificate_is_refused() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl_cert_file"):
        polymsg.get_transport("rabbit+pika://h/?ssl=true&ssl_key_file=/k.pem")


@pytest.mark.parametrize(("failures", "delay"), [
    (0, 0.0), (1, 0.0), (2, 1.0), (3, 0.0), (4, 3.0), (6, 5.0), (8, 7.0), (40, 10.0)])
def test_backoff_waits_only_between_rounds_and_grows(failures: int, delay: float) -> None:
    backoff = Backoff(hosts=2, interval=1.0, step=2.0, maximum=10.0)
    assert backoff.delay(failures) == delay


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
