"""CURVE keys: zmq-keygen's keys read back as written, and secrets stay out of text."""

from __future__ import annotations

import os
import tempfile
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from oslo_config import cfg
from polymsg_zmq._curve import keypair
from polymsg_zmq._options import GROUP, overlay, settings_from
from polymsg_zmq.cli import zmq_keygen

import polymsg

PAIRS = 1000


def test_generated_keys_read_back_through_oslo_config_and_the_url() -> None:
    pairs = [keypair() for _ in range(PAIRS)]
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        for index, (public, secret) in enumerate(pairs):
            handle.write(f"[k{index}]\ncurve_public_key = {public}\n"
                         f"curve_secret_key = {secret}\n")
    try:
        conf = cfg.ConfigOpts()
        for index in range(PAIRS):
            conf.register_opts([cfg.StrOpt("curve_public_key"),
                                cfg.StrOpt("curve_secret_key", secret=True)],
                               group=f"k{index}")
        conf(args=[], default_config_files=[handle.name])
        read = [(conf[f"k{i}"].curve_public_key, conf[f"k{i}"].curve_secret_key)
                for i in range(PAIRS)]
    finally:
        os.unlink(handle.name)
    assert read == pairs
    for public, secret in pairs:
        assert "$" not in public + secret
        url = polymsg.TransportURL.parse(
            "zmq://127.0.0.1:9/?" + urlencode({"curve_public_key": public,
                                               "curve_secret_key": secret}))
        keys = settings_from(overlay(cfg.ConfigOpts(), url), url).curve
        assert keys is not None and (keys.public, keys.secret) == (public, secret)


def test_keygen_prints_configuration_lines_and_url_query_keys() -> None:
    result = CliRunner().invoke(zmq_keygen)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    public = lines[0].removeprefix("curve_public_key = ")
    secret = lines[1].removeprefix("curve_secret_key = ")
    assert len(public) == len(secret) == 40
    query = lines[2].removeprefix("# as URL query keys: ?")
    url = polymsg.TransportURL.parse(f"zmq://127.0.0.1:9/?{query}")
    assert (url.query["curve_public_key"], url.query["curve_secret_key"]) == (public, secret)


def test_a_dollar_in_a_configured_key_is_a_clear_error() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write(f"[{GROUP}]\ncurve_secret_key = abc$nosuchoption\n")
    try:
        conf = cfg.ConfigOpts()
        conf(args=[], default_config_files=[handle.name])
        with pytest.raises(polymsg.InvalidTransportURL, match=r"'\$\$'") as caught:
            overlay(conf, None)
    finally:
        os.unlink(handle.name)
    assert "abc" not in str(caught.value)


def test_secret_key_is_masked_in_reprs_and_errors() -> None:
    public, secret = keypair()
    url = polymsg.TransportURL.parse("zmq://127.0.0.1:9/?" + urlencode(
        {"curve_public_key": public, "curve_secret_key": secret,
         "redis_url": "redis://:hunter2@127.0.0.1:1/0", "matchmaker": "redis"}))
    settings = settings_from(overlay(cfg.ConfigOpts(), url), url)
    assert secret not in repr(settings) and "hunter2" not in repr(settings)
    assert secret not in repr(settings.curve)
    short = polymsg.TransportURL.parse("zmq://127.0.0.1:9/?" + urlencode(
        {"curve_public_key": public, "curve_secret_key": secret[:-1]}))
    with pytest.raises(polymsg.InvalidTransportURL) as caught:
        settings_from(overlay(cfg.ConfigOpts(), short), short)
    assert secret[:-1] not in str(caught.value)
    assert (caught.value.__cause__ is None and caught.value.__context__ is None) or \
        secret[:-1] not in repr(caught.value.__context__)


@pytest.mark.parametrize("mode,warned", [(0o644, True), (0o600, False)])
def test_receiver_warns_of_a_key_file_others_can_read(
        mode: int, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from polymsg_zmq.cli import load_settings

    caplog.set_level(logging.WARNING, logger="polymsg_zmq")
    public, secret = keypair()
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write(f"[{GROUP}]\ncurve_public_key = {public}\ncurve_secret_key = {secret}\n")
    try:
        os.chmod(handle.name, mode)
        settings = load_settings("zmq://127.0.0.1:9/", (handle.name,))
    finally:
        os.unlink(handle.name)
    assert settings.curve is not None and settings.curve.secret == secret
    assert ("other users can read it" in caplog.text) is warned
    assert secret not in caplog.text
