"""Options and URLs of both RabbitMQ drivers: one option group, so switching the scheme
keeps every setting; bad keys and values named; nothing touches the network before
it is used."""

from __future__ import annotations

import time

import pytest
from oslo_config import cfg

import polymsg


def test_both_drivers_read_one_group(scheme: str) -> None:
    conf = cfg.ConfigOpts()
    with polymsg.get_transport("rabbit+kombu://h/", conf=conf):
        pass  # registers [polymsg_rabbit]
    conf.set_override("ssl", True, group="polymsg_rabbit")
    conf.set_override("ssl_verify", False, group="polymsg_rabbit")
    conf.set_override("rabbit_qos_prefetch_count", 5, group="polymsg_rabbit")
    conf.set_override("heartbeat_timeout_threshold", 17, group="polymsg_rabbit")
    url = f"{scheme}://h/?heartbeat_timeout_threshold=9&amqp_durable_queues=true"
    with polymsg.get_transport(url, conf=conf) as transport:
        options = transport._driver.options  # type: ignore[attr-defined]
        # The URL overrides the group; what it does not name comes from the group.
        assert (options.ssl, options.rabbit_qos_prefetch_count,
                options.heartbeat_timeout_threshold, options.amqp_durable_queues) == \
            (True, 5, 9, True)


def test_old_url_keys_still_work(scheme: str) -> None:
    url = (f"{scheme}://h/?heartbeat=13&prefetch_count=7&retry_interval=0.5"
           "&failover_strategy=shuffle&transient_queues_ttl=60")
    with polymsg.get_transport(url) as transport:
        options = transport._driver.options  # type: ignore[attr-defined]
        assert (options.heartbeat_timeout_threshold, options.rabbit_qos_prefetch_count,
                options.rabbit_retry_interval, options.kombu_failover_strategy,
                options.rabbit_transient_queues_ttl) == (13, 7, 0.5, "shuffle", 60)


@pytest.mark.parametrize(("query", "named"), [
    ("heartbeet=10", "heartbeet"),           # an unknown key
    ("no_such_option=1", "no_such_option"),
    ("heartbeat=often", "heartbeat"),        # a value of the wrong kind
])
def test_a_bad_url_option_is_named(scheme: str, query: str, named: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match=named):
        polymsg.get_transport(f"{scheme}://h/?{query}")


def test_a_key_without_certificate_is_refused(scheme: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl_cert_file"):
        polymsg.get_transport(f"{scheme}://h/?ssl=true&ssl_key_file=/k.pem")


def test_creating_a_transport_does_not_touch_the_network(scheme: str) -> None:
    started = time.monotonic()
    with polymsg.get_transport(f"{scheme}://guest:guest@192.0.2.1:5672/") as transport:
        assert "multi_host" in transport.capabilities
    assert time.monotonic() - started < 1.0


def test_names_too_long_for_rabbitmq_are_refused_before_sending(scheme: str) -> None:
    with polymsg.get_transport(f"{scheme}://192.0.2.1/") as transport:
        with pytest.raises(polymsg.InvalidTarget, match="too long"):
            polymsg.RPCClient(transport, polymsg.Target(topic="t" * 300))
        with pytest.raises(polymsg.InvalidTarget, match="too long"):
            polymsg.RPCClient(transport, polymsg.Target(topic="t" * 200, server="s" * 100))
