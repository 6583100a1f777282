"""Secrets never in errors or str(); files holding secrets open to others get a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

import polymsg
from polymsg import _secrets
from polymsg._transport import _driver_options
from polymsg._url import is_secret_key
from polymsg.driver import Driver

SECRET = "s3cr3t"

MALFORMED = [
    f"rabbit//guest:{SECRET}@127.0.0.1:5672/",          # the case from the issue
    f"rabbit:/guest:{SECRET}@127.0.0.1:5672/",
    f"guest:{SECRET}@host://x",
    f"ra bbit://guest:{SECRET}@h/",
    f"rabbit://guest:{SECRET}/@host/",                  # '/' in a password, unquoted
    f"rabbit://guest:{SECRET}:x@h:99999/",
    f"rabbit://guest:{SECRET}@h:port/",
    f"rabbit://a:pa@h1,guest:{SECRET},x@[::1/",
    f"rabbit://guest:{SECRET}",
    f"zmq://h:abc/?curve_secret_key={SECRET}",
    f"rabbit//h/?password={SECRET}&heartbeat=5",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_url_errors_never_show_the_password(text: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL) as caught:
        polymsg.TransportURL.parse(text)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


@pytest.mark.parametrize("key", ["curve_secret_key", "password", "token", "api_key",
                                 "ssl_key_password", "access-token", "private_key",
                                 "redis_password", "secret"])
def test_secret_looking_query_values_are_masked(key: str) -> None:
    url = polymsg.TransportURL.parse(f"zmq://h:9501/?{key}={SECRET}&heartbeat=30")
    for text in (str(url), repr(url), url.render()):
        assert SECRET not in text
        assert f"{key}=****" in text and "heartbeat=30" in text
    assert url.query[key] == SECRET  # the value itself is intact
    assert f"{key}={SECRET}" in url.render(hide_password=False)


@pytest.mark.parametrize("key", ["curve_public_key", "ssl_key_file", "ssl_cert_file",
                                 "heartbeat", "matchmaker", "keepalive"])
def test_public_query_values_are_shown(key: str) -> None:
    assert not is_secret_key(key)
    assert f"{key}=value" in str(polymsg.TransportURL.parse(f"zmq://h/?{key}=value"))


def test_urls_inside_query_values_have_their_password_hidden() -> None:
    url = polymsg.TransportURL.parse(
        f"zmq://h/?redis_url=redis://:{SECRET}@127.0.0.1:6379/0&matchmaker=redis")
    assert SECRET not in str(url) and "redis_url=redis://:****@127.0.0.1:6379/0" in str(url)


def test_passwords_of_every_host_are_masked() -> None:
    url = polymsg.TransportURL.parse(f"rabbit://a:{SECRET}@h1,b:{SECRET}2@h2/")
    assert SECRET not in str(url) and str(url).count("****") == 2


class _SecretOptionDriver(Driver):
    """Options only: enough for the transport's option handling."""

    options_group = "secret_test"

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return [cfg.StrOpt("curve_secret_key", secret=True),
                cfg.IntOpt("heartbeat", default=30),
                cfg.StrOpt("ssl_key_file", default="")]


@pytest.mark.parametrize("query", [f"curve_secret_key={SECRET}&heartbeat={SECRET}",
                                   f"heartbeat={SECRET}"])
def test_option_errors_never_show_a_secret(query: str) -> None:
    # heartbeat= is not a secret, but the IntOpt error quotes it: fine. A bad secret
    # value is never quoted, nor its parse error.
    url = polymsg.TransportURL.parse(f"fake://h/?curve_secret_key={SECRET}x&{query}")
    with pytest.raises(polymsg.InvalidTransportURL) as caught:
        _driver_options(_SecretOptionDriver, url, cfg.ConfigOpts())
    assert "curve_secret_key=" not in str(caught.value)
    assert f"{SECRET}x" not in str(caught.value)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_secrets, "_warned", set())


def _conf_file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "service.conf"
    path.write_text(text)
    path.chmod(mode)
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == _secrets.__name__]


@pytest.mark.usefixtures("fresh_warnings")
def test_world_readable_config_with_a_password_warns_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _conf_file(tmp_path, f"[DEFAULT]\ntransport_url = memory://u:{SECRET}@bus-perm/\n",
                      0o644)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="polymsg-test")
    with caplog.at_level(logging.WARNING):
        polymsg.get_transport(conf=conf).cleanup()
        polymsg.get_transport(conf=conf).cleanup()
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and "transport_url" in warnings[0]
    assert SECRET not in warnings[0] and "0644" in warnings[0]


@pytest.mark.usefixtures("fresh_warnings")
@pytest.mark.parametrize("mode, text", [
    (0o640, f"transport_url = memory://u:{SECRET}@bus-perm/\n"),   # group-only: the usual
    (0o600, f"transport_url = memory://u:{SECRET}@bus-perm/\n"),
    (0o644, "transport_url = memory://bus-perm\n"),                  # no secret in it
])
def test_no_warning_when_the_secret_is_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, text: str) -> None:
    path = _conf_file(tmp_path, "[DEFAULT]\n" + text, mode)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="polymsg-test")
    with caplog.at_level(logging.WARNING):
        polymsg.get_transport(conf=conf).cleanup()
    assert _warnings(caplog) == []


@pytest.mark.usefixtures("fresh_warnings")
def test_secret_driver_option_and_key_file(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = _conf_file(tmp_path, f"[secret_test]\ncurve_secret_key = {SECRET}\n", 0o604)
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    conf = cfg.ConfigOpts()
    opts = _SecretOptionDriver.list_opts()
    conf.register_opts(opts, group="secret_test")
    conf(["--config-file", str(path)], project="polymsg-test")
    values: dict[str, Any] = {"curve_secret_key": SECRET, "heartbeat": 30,
                              "ssl_key_file": str(key)}
    with caplog.at_level(logging.WARNING):
        _secrets.warn_readable_secrets(conf, "secret_test", opts, values)
        _secrets.warn_readable_secrets(conf, "secret_test", opts, values)
    warnings = _warnings(caplog)
    assert len(warnings) == 2, warnings
    assert any(str(path) in w and "[secret_test] curve_secret_key" in w for w in warnings)
    assert any(str(key) in w and "ssl_key_file" in w for w in warnings)
    assert all(SECRET not in w for w in warnings)
