"""The RabbitMQ drivers' shared connection policy and option group: pure logic."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from oslo_config import cfg

import polymsg
from polymsg import amqp
from polymsg.driver import DriverOptions


def _spec(url: str = "rabbit://u:secret@a:1,b,c:3/vh", **options: object) -> amqp.ConnectionSpec:
    values = {opt.dest: opt.default for opt in amqp.rabbit_opts()}
    values.update(options)
    return amqp.ConnectionSpec.from_url(polymsg.TransportURL.parse(url), DriverOptions(values))


def test_spec_reads_hosts_credentials_and_defaults() -> None:
    spec = _spec()
    assert [(e.hostname, e.port, e.username) for e in spec.endpoints] == \
        [("a", 1, "u"), ("b", 5672, "guest"), ("c", 3, "guest")]
    assert spec.endpoints[1].password == "guest"
    assert spec.virtual_host == "vh" and spec.heartbeat == 60
    assert "secret" not in repr(spec) and spec.hosts_label == "a:1, b:5672, c:3"


def test_tls_changes_the_default_port_and_checks_its_files_at_once() -> None:
    spec = _spec("rabbit://h/", ssl=True, ssl_verify=False)
    assert spec.endpoints[0].port == 5671 and spec.tls is not None
    assert isinstance(spec.tls.context(), ssl.SSLContext)
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl_cert_file"):
        _spec("rabbit://h/", ssl=True, ssl_key_file="/k.pem")
    with pytest.raises(polymsg.InvalidTransportURL, match="ssl"):
        _spec("rabbit://h/", ssl=True, ssl_ca_file="/nonexistent.pem")


@pytest.mark.parametrize(("rounds", "longest"), [(1, 1.0), (2, 3.0), (3, 5.0), (50, 10.0)])
def test_backoff_grows_per_round_with_jitter_below_the_cap(rounds: int, longest: float) -> None:
    spec = _spec(rabbit_retry_interval=1.0, rabbit_retry_backoff=2.0, rabbit_interval_max=10.0)
    waits = [spec.backoff(rounds) for _ in range(200)]
    assert spec.backoff(rounds, jitter=False) == longest
    assert all(longest * (1 - amqp_jitter()) <= w <= longest for w in waits)
    assert len(set(waits)) > 1, "no jitter"


def amqp_jitter() -> float:
    from polymsg._amqp_connection import JITTER
    return JITTER


def test_round_robin_tries_every_host_then_waits() -> None:
    reconnect = amqp.Reconnect(_spec(rabbit_retry_interval=1.0, rabbit_retry_backoff=0.0))
    failure = amqp.classify(ConnectionRefusedError(), "x")
    tried, waits = [], []
    for _ in range(6):
        tried.append(reconnect.next_endpoint().hostname)
        waits.append(reconnect.failed(failure))
    assert tried == ["a", "b", "c", "a", "b", "c"]
    assert [w > 0 for w in waits] == [False, False, True, False, False, True]
    assert reconnect.failed_rounds == 2


def test_shuffle_tries_every_host_once_per_round() -> None:
    reconnect = amqp.Reconnect(_spec("rabbit://a,b,c,d/", kombu_failover_strategy="shuffle"))
    failure = amqp.classify(ConnectionRefusedError(), "x")
    tried = []
    for _ in range(4):
        tried.append(reconnect.next_endpoint().hostname)
        reconnect.failed(failure)
    assert sorted(tried) == ["a", "b", "c", "d"]


def test_a_connection_dying_right_after_opening_counts_as_a_failed_round() -> None:
    reconnect = amqp.Reconnect(_spec())
    lost = amqp.classify(None, "a:1")
    reconnect.next_endpoint()
    reconnect.opened()
    assert reconnect.lost(lost) > 0 and reconnect.failed_rounds == 1
    reconnect.opened()
    reconnect._opened_at = time.monotonic() - amqp.QUICK_DEATH - 1  # it lived
    assert reconnect.lost(lost) == 0.0 and reconnect.failed_rounds == 0


@pytest.mark.parametrize(("exc", "code", "permanent"), [
    (ConnectionRefusedError(111, "refused"), None, False),
    (socket.gaierror(-2, "Name or service not known"), None, False),
    (TimeoutError(), None, False),
    (ssl.SSLError(1, "certificate verify failed"), None, True),
    (Exception("closed"), 320, False),   # CONNECTION_FORCED: the broker is going away
    (Exception("closed"), 403, True),    # ACCESS_REFUSED
    (Exception("closed"), 530, True),    # NOT_ALLOWED: vhost
    (Exception("closed"), 406, True),    # a declaration refused with a connection error
    (Exception("INTERNAL_ERROR"), 541, False),  # may pass
    # RabbitMQ 4.3 refusing a transient non-exclusive queue: retrying cannot help
    (Exception("INTERNAL_ERROR - Feature transient_nonexcl_queues is deprecated"), 541, True),
])
def test_classification(exc: BaseException, code: int | None, permanent: bool) -> None:
    assert amqp.classify(exc, "h:1", reply_code=code).permanent is permanent


def test_the_error_names_host_and_reason_never_the_password() -> None:
    spec = _spec("rabbit://u:hunter2@mq:5672/")
    failure = amqp.classify(Exception("x"), spec.endpoints[0].label, reply_code=403,
                            reason="ACCESS_REFUSED - Login was refused")
    error = amqp.connection_error(failure, what="the cast of 'm'")
    assert isinstance(error, polymsg.MessageDeliveryFailure)
    assert str(error) == ("the cast of 'm' failed: RabbitMQ at mq:5672 refused: "
                          "ACCESS_REFUSED - Login was refused")
    transient = amqp.classify(ConnectionRefusedError(), "mq:5672")
    assert "after 2 retries" in str(amqp.connection_error(transient, gave_up="after 2 retries"))


def test_one_group_and_old_names_still_work() -> None:
    opts = amqp.rabbit_opts()
    names = {opt.dest for opt in opts}
    assert {"heartbeat_timeout_threshold", "rabbit_retry_interval", "rabbit_interval_max",
            "kombu_failover_strategy", "rabbit_qos_prefetch_count", "ssl",
            "ssl_enforce_hostname_verification"} <= names
    assert set(amqp.RENAMED.values()) <= names
    assert amqp.list_opts() == [("polymsg_rabbit", opts)]
    conf = cfg.ConfigOpts()
    conf.register_opts(opts, group="polymsg_rabbit")
    conf([], default_config_files=[])
    assert conf.polymsg_rabbit.rabbit_qos_prefetch_count == 0  # oslo.messaging's default


def test_old_config_group_and_old_url_keys_are_read(tmp_path: object) -> None:
    import pathlib
    path = pathlib.Path(str(tmp_path)) / "old.conf"
    path.write_text("[polymsg_kombu]\nheartbeat = 17\nssl_verify_hostname = false\n")
    conf = cfg.ConfigOpts()
    conf.register_opts(amqp.rabbit_opts(), group="polymsg_rabbit")
    conf([], default_config_files=[str(path)])
    assert conf.polymsg_rabbit.heartbeat_timeout_threshold == 17
    assert conf.polymsg_rabbit.ssl_enforce_hostname_verification is False


def test_the_amqp_namespace_is_locked_and_the_spi_does_not_import_it() -> None:
    import subprocess
    import sys
    assert len(set(amqp.__all__)) == len(amqp.__all__)
    assert all(hasattr(amqp, name) for name in amqp.__all__)
    code = ("import sys, polymsg.driver; "
            "assert not [m for m in sys.modules if m.startswith('polymsg._amqp')], "
            "sorted(m for m in sys.modules if m.startswith('polymsg'))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_log_limiter_bounds_lines_and_cuts_fields(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from polymsg.driver import LogLimiter
    logger = logging.getLogger("polymsg.test.garbage")
    limiter = LogLimiter(logger, "bad things", interval=3600.0, burst=3)
    with caplog.at_level(logging.WARNING, logger="polymsg.test.garbage"):
        for i in range(10_000):
            limiter.log("bad thing %d: %s", i, "x" * 10_000)
    assert limiter.total == 10_000
    assert len(caplog.records) == 3
    assert all(len(r.getMessage()) < 400 for r in caplog.records)
    limiter._started -= 3600.0  # the interval is over: the next one reports the count
    with caplog.at_level(logging.WARNING, logger="polymsg.test.garbage"):
        limiter.log("bad thing %s", "again")
    assert "9997 more bad things" in caplog.records[3].getMessage()


def test_private_hooks_only_on_tested_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import version
    major, minor = (int(p) for p in version("oslo.config").split(".")[:2])
    tested = ((major, minor), (major, minor + 1))
    assert amqp.private_hooks_allowed("oslo.config", tested, "POLYMSG_TEST_SWITCH")
    assert not amqp.private_hooks_allowed("oslo.config", ((0, 1), (0, 2)), "POLYMSG_TEST_SWITCH")
    assert not amqp.private_hooks_allowed("no-such-distribution", tested, "POLYMSG_TEST_SWITCH")
    monkeypatch.setenv("POLYMSG_TEST_SWITCH", "0")
    assert not amqp.private_hooks_allowed("oslo.config", tested, "POLYMSG_TEST_SWITCH")
