"""get_transport and driver lookup: errors that say what to do, options from URLs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, distribution
from typing import Any, ClassVar

import pytest
from oslo_config import cfg

import polymsg
from polymsg import _registry, _transport
from polymsg._memory import MemoryDriver
from polymsg.driver import Driver, DriverOptions


def installed(dist: str) -> bool:
    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


# -- URL required ---------------------------------------------------------------


def test_no_url_anywhere_says_how_to_set_one() -> None:
    with pytest.raises(polymsg.InvalidTransportURL) as info:
        polymsg.get_transport()
    message = str(info.value)
    assert "url=" in message
    assert "transport_url" in message


def test_no_url_in_a_caller_conf() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="transport_url"):
        polymsg.get_transport(conf=cfg.ConfigOpts())


def test_bad_url_text_is_rejected_before_any_driver_loads() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="port"):
        polymsg.get_transport("memory://h:notaport")


# -- driver lookup --------------------------------------------------------------


def test_memory_driver_resolves(transports: list[polymsg.Transport]) -> None:
    assert _registry.load_driver("memory") is MemoryDriver
    transport = polymsg.get_transport("memory://")
    transports.append(transport)
    assert {"rpc", "notify"} <= transport.capabilities
    assert transport.capabilities <= polymsg.driver.CAPABILITIES


def test_unknown_driver_names_the_entry_point_group() -> None:
    with pytest.raises(polymsg.DriverLoadFailure) as info:
        polymsg.get_transport("carrierpigeon://coop")
    assert "'carrierpigeon'" in str(info.value)
    assert "polymsg.drivers" in str(info.value)


def test_aliases_resolve_to_their_canonical_name() -> None:
    assert _registry.canonical_name("rabbit") == "rabbit+kombu"
    assert _registry.canonical_name("rabbit+pika") == "rabbit+pika"
    assert _registry.canonical_name("zmq") == "zmq"


def test_missing_aliased_driver_names_its_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry.ALIASES, "pigeon", "pigeon+coop")
    monkeypatch.setitem(_registry.DISTRIBUTIONS, "pigeon+coop", "polymsg-pigeon")
    with pytest.raises(polymsg.DriverLoadFailure) as info:
        polymsg.get_transport("pigeon://coop")
    assert "pip install polymsg-pigeon" in str(info.value)


@pytest.mark.parametrize(("scheme", "dist"), [
    ("rabbit", "polymsg-kombu"),
    ("rabbit+kombu", "polymsg-kombu"),
    ("rabbit+pika", "polymsg-pika"),
    ("zmq", "polymsg-zmq"),
])
def test_first_party_drivers_load_or_name_their_distribution(scheme: str, dist: str) -> None:
    if installed(dist):
        driver = _registry.load_driver(scheme)
        assert issubclass(driver, Driver)
        assert driver.capabilities <= polymsg.driver.CAPABILITIES
    else:
        with pytest.raises(polymsg.DriverLoadFailure, match=f"pip install {dist}"):
            _registry.load_driver(scheme)


MANAGER = "polymsg._registry.stevedore_driver.DriverManager"


class _NotADriver:
    pass


def _fake_manager(plugin: Any) -> Any:
    class Manager:
        def __init__(self, namespace: str, name: str, invoke_on_load: bool = False,
                     **kwargs: Any) -> None:
            if isinstance(plugin, Exception):
                raise plugin
            self.driver = plugin
    return Manager


def test_entry_point_that_is_not_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MANAGER, _fake_manager(_NotADriver))
    monkeypatch.setattr(_registry, "_advertised", lambda name: True)
    with pytest.raises(polymsg.DriverLoadFailure, match=r"not a polymsg\.driver\.Driver"):
        _registry.load_driver("odd")


def test_driver_failing_to_import_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    failure = ImportError("No module named 'fancybroker'")
    monkeypatch.setattr(MANAGER, _fake_manager(failure))
    monkeypatch.setattr(_registry, "_advertised", lambda name: True)
    with pytest.raises(polymsg.DriverLoadFailure, match="fancybroker") as info:
        _registry.load_driver("fancy")
    assert info.value.__cause__ is failure


# -- options from the URL query -------------------------------------------------


class OptionsDriver(MemoryDriver):
    """The memory driver with options, to exercise query overrides."""

    options_group: ClassVar[str | None] = "test_driver"
    seen: ClassVar[list[DriverOptions]] = []

    @classmethod
    def list_opts(cls) -> Sequence[cfg.Opt]:
        return [cfg.IntOpt("heartbeat", default=60, help="Seconds between heartbeats."),
                cfg.BoolOpt("ssl", default=False, help="Use TLS."),
                cfg.StrOpt("mode", default="plain", choices=["plain", "fancy"], help="Mode.")]

    def __init__(self, url: polymsg.TransportURL, options: DriverOptions,
                 conf: cfg.ConfigOpts) -> None:
        super().__init__(url, options, conf)
        OptionsDriver.seen.append(options)


@pytest.fixture
def options_driver(monkeypatch: pytest.MonkeyPatch) -> type[OptionsDriver]:
    OptionsDriver.seen.clear()
    monkeypatch.setattr(_transport, "load_driver", lambda scheme: OptionsDriver)
    return OptionsDriver


def test_driver_options_default_from_config(options_driver: type[OptionsDriver],
                                            transports: list[polymsg.Transport]) -> None:
    conf = cfg.ConfigOpts()
    transports.append(polymsg.get_transport("opts://", conf=conf))
    (options,) = options_driver.seen
    assert (options.heartbeat, options.ssl, options.mode) == (60, False, "plain")
    assert conf.test_driver.heartbeat == 60  # registered in the driver's group


def test_query_overrides_and_converts(options_driver: type[OptionsDriver],
                                      transports: list[polymsg.Transport]) -> None:
    transports.append(polymsg.get_transport("opts://?heartbeat=5&ssl=true&mode=fancy"))
    (options,) = options_driver.seen
    assert (options.heartbeat, options.ssl, options.mode) == (5, True, "fancy")


def test_unknown_query_key_is_named(options_driver: type[OptionsDriver]) -> None:
    with pytest.raises(polymsg.InvalidTransportURL) as info:
        polymsg.get_transport("opts://?heartbeet=5")
    assert "'heartbeet'" in str(info.value)
    assert "heartbeat" in str(info.value)  # the known ones are listed


@pytest.mark.parametrize("query", ["heartbeat=soon", "mode=weird", "ssl=maybe"])
def test_bad_query_value_is_named(options_driver: type[OptionsDriver], query: str) -> None:
    key = query.partition("=")[0]
    with pytest.raises(polymsg.InvalidTransportURL, match=f"'{key}'"):
        polymsg.get_transport(f"opts://?{query}")


def test_unknown_query_key_on_a_driver_without_options() -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="'foo'"):
        polymsg.get_transport("memory://?foo=1")


def test_several_hosts_need_multi_host() -> None:
    assert "multi_host" not in MemoryDriver.capabilities
    with pytest.raises(polymsg.NotSupported, match="several hosts"):
        polymsg.get_transport("memory://a,b")


# -- no import-time magic -------------------------------------------------------


def test_import_scans_no_entry_points_and_loads_no_cli() -> None:
    code = (
        "import importlib.metadata as md, sys\n"
        "def boom(*a, **k): raise SystemExit('entry points scanned at import')\n"
        "md.entry_points = boom\n"
        "import polymsg\n"
        "assert 'polymsg._cli' not in sys.modules and 'click' not in sys.modules\n"
        "assert 'polymsg_kombu' not in sys.modules and 'kombu' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip() == "ok", done.stderr


def test_fake_is_memory(transports: list[polymsg.Transport]) -> None:
    # oslo.messaging's unit tests write fake://; it is polymsg's in-process bus.
    assert _registry.load_driver("fake") is MemoryDriver
    transport = polymsg.get_transport("fake://")
    transports.append(transport)
    with polymsg.get_rpc_server(transport, polymsg.Target(topic="t", server="s"),
                                [_Echo()]):
        client = polymsg.RPCClient(transport, polymsg.Target(topic="t"), timeout=30)
        assert client.call({}, "echo", value=3) == 3


class _Echo:
    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


def test_missing_first_party_driver_says_how_to_install_from_a_checkout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_advertised", lambda name: False)
    with pytest.raises(polymsg.DriverLoadFailure) as info:
        _registry.load_driver("rabbit")
    message = str(info.value)
    assert "pip install ./drivers/polymsg-kombu" in message
    assert "memory://" in message
