"""polymsg and oslo.messaging on one ConfigOpts; unknown keys in polymsg's groups."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from oslo_config import cfg

import polymsg
from polymsg import _config, _memory

oslo_messaging = pytest.importorskip("oslo_messaging")


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for transport in made:
        transport.cleanup()


def _polymsg(conf: cfg.ConfigOpts, made: list[Any]) -> polymsg.Transport:
    transport = polymsg.get_transport("memory://shared-conf", conf=conf)
    made.append(transport)
    return transport


def _oslo(conf: cfg.ConfigOpts, made: list[Any]) -> Any:
    transport = oslo_messaging.get_rpc_transport(conf, url="fake://")
    made.append(transport)
    oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="t"))  # rpc opts
    oslo_messaging.get_notification_transport(conf, url="fake://").cleanup()
    return transport


ORDERS: list[tuple[str, list[Callable[[cfg.ConfigOpts, list[Any]], Any]]]] = [
    ("polymsg first", [_polymsg, _oslo]),
    ("oslo first", [_oslo, _polymsg]),
]


@pytest.mark.parametrize("order", [o for _, o in ORDERS], ids=[n for n, _ in ORDERS])
def test_both_libraries_keep_their_defaults_in_either_order(
        order: list[Callable[..., Any]], cleanup: list[Any]) -> None:
    conf = cfg.ConfigOpts()
    conf([])
    for make in order:
        make(conf, cleanup)  # no DuplicateOptError
    transport = next(t for t in cleanup if isinstance(t, polymsg.Transport))
    assert transport.default_exchange == "polymsg"
    assert conf.control_exchange == "openstack"  # what oslo.messaging reads
    assert conf.transport_url == "rabbit://"
    assert conf.rpc_response_timeout == 60
    conf.set_override("control_exchange", "nova")
    assert transport.default_exchange == conf.control_exchange == "nova"


def test_a_config_file_value_applies_to_both(tmp_path: Path, cleanup: list[Any]) -> None:
    path = tmp_path / "service.conf"
    path.write_text("[DEFAULT]\ncontrol_exchange = compute\ntransport_url = memory://x\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)])
    transport = _polymsg(conf, cleanup)
    _oslo(conf, cleanup)
    assert transport.default_exchange == conf.control_exchange == "compute"
    from polymsg._config import value
    assert value(conf, "transport_url") == "memory://x"


def test_set_transport_defaults_is_honoured_by_both(cleanup: list[Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    opts = oslo_messaging.transport._transport_opts
    monkeypatch.setattr(opts[1], "default", opts[1].default)  # restored after the test
    oslo_messaging.set_transport_defaults(control_exchange="nova")
    conf = cfg.ConfigOpts()
    conf([])
    transport = _polymsg(conf, cleanup)
    _oslo(conf, cleanup)
    assert conf.control_exchange == "nova"
    assert transport.default_exchange == "nova"


class _GroupDriver(_memory.MemoryDriver):
    options_group: ClassVar[str | None] = "polymsg_test_group"

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return [cfg.IntOpt("rabbit_retry_interval", default=1)]


def test_unknown_key_in_a_polymsg_group_is_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        cleanup: list[Any]) -> None:
    path = tmp_path / "service.conf"
    path.write_text("[polymsg_test_group]\nrabbit_retry_interval = 2\n"
                    "rabit_retry_interval = 3\n[other]\nwhatever = 1\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)])
    monkeypatch.setattr("polymsg._transport.load_driver", lambda scheme: _GroupDriver)
    with caplog.at_level(logging.WARNING, logger="polymsg"):
        transport = polymsg.get_transport("memory://unknown-keys", conf=conf)
    cleanup.append(transport)
    warnings = [r.getMessage() for r in caplog.records if "unknown option" in r.getMessage()]
    assert len(warnings) == 1
    assert "'rabit_retry_interval'" in warnings[0]
    assert "[polymsg_test_group]" in warnings[0]
    assert transport._driver.options.rabbit_retry_interval == 2


def test_warn_unknown_keys_knows_deprecated_names(tmp_path: Path) -> None:
    path = tmp_path / "service.conf"
    path.write_text("[grp]\nold_name = 1\nnew-name = 2\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)])
    opt = cfg.IntOpt("new_name", deprecated_name="old_name")
    assert _config.warn_unknown_keys(conf, "grp", [opt]) == []
