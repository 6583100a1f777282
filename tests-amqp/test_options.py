"""One option group for both RabbitMQ drivers: switching the scheme keeps every setting."""

from __future__ import annotations

from oslo_config import cfg

import polymsg


def test_both_drivers_read_one_group(scheme: str) -> None:
    conf = cfg.ConfigOpts()
    with polymsg.get_transport("rabbit+kombu://h/", conf=conf):
        pass  # registers [polymsg_rabbit]
    conf.set_override("ssl", True, group="polymsg_rabbit")
    conf.set_override("ssl_verify", False, group="polymsg_rabbit")
    conf.set_override("rabbit_qos_prefetch_count", 5, group="polymsg_rabbit")
    with polymsg.get_transport(f"{scheme}://h/?heartbeat_timeout_threshold=9",
                               conf=conf) as transport:
        options = transport._driver.options  # type: ignore[attr-defined]
        assert (options.ssl, options.rabbit_qos_prefetch_count,
                options.heartbeat_timeout_threshold) == (True, 5, 9)


def test_old_url_keys_still_work(scheme: str) -> None:
    url = (f"{scheme}://h/?heartbeat=13&prefetch_count=7&retry_interval=0.5"
           "&failover_strategy=shuffle&transient_queues_ttl=60")
    with polymsg.get_transport(url) as transport:
        options = transport._driver.options  # type: ignore[attr-defined]
        assert (options.heartbeat_timeout_threshold, options.rabbit_qos_prefetch_count,
                options.rabbit_retry_interval, options.kombu_failover_strategy,
                options.rabbit_transient_queues_ttl) == (13, 7, 0.5, "shuffle", 60)
