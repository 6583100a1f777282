"""Configuration: list_opts, the oslo.config entry point, private and caller ConfigOpts."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from oslo_config import cfg, generator

import polymsg
import polymsg.opts

DEFAULTS = {
    "transport_url": None,
    "rpc_response_timeout": 60,
    "control_exchange": "polymsg",
    "executor_thread_pool_size": 64,
}


def test_list_opts_shape_and_defaults() -> None:
    groups = dict(polymsg.opts.list_opts())
    assert "DEFAULT" in groups
    opts = {opt.dest: opt for opt in groups["DEFAULT"]}
    assert {name: opt.default for name, opt in opts.items()} == DEFAULTS
    assert opts["transport_url"].secret
    for group, group_opts in polymsg.opts.list_opts():
        assert group_opts, f"group {group} lists no options"
        for opt in group_opts:
            assert isinstance(opt, cfg.Opt)
            assert opt.help, f"[{group}] {opt.dest} has no help text"


def test_list_opts_returns_fresh_lists() -> None:
    first = polymsg.opts.list_opts()
    first[0][1].clear()
    assert polymsg.opts.list_opts()[0][1], "list_opts must not hand out its own list"


def test_oslo_config_entry_point_is_list_opts() -> None:
    (ep,) = [ep for ep in entry_points(group="oslo.config.opts") if ep.name == "polymsg"]
    assert ep.load() is polymsg.opts.list_opts


def test_oslo_config_generator_renders_the_options(tmp_path: Path) -> None:
    out = tmp_path / "polymsg.conf.sample"
    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(["--namespace", "polymsg", "--output-file", str(out)])
    generator.generate(conf)
    text = out.read_text()
    for name in DEFAULTS:
        assert f"#{name} = " in text
    assert "#control_exchange = polymsg" in text


def test_private_conf_leaves_global_conf_alone(transports: list[polymsg.Transport]) -> None:
    before = sorted(cfg.CONF)
    transports.append(polymsg.get_transport("memory://conf-test"))
    assert sorted(cfg.CONF) == before
    assert "transport_url" not in before


def test_private_conf_gets_the_defaults(transports: list[polymsg.Transport]) -> None:
    transport = polymsg.get_transport("memory://conf-test")
    transports.append(transport)
    assert transport.default_exchange == "polymsg"
    assert transport.conf is not cfg.CONF
    assert transport.conf.rpc_response_timeout == 60


def test_caller_conf_from_a_config_file(tmp_path: Path,
                                        transports: list[polymsg.Transport]) -> None:
    path = tmp_path / "svc.conf"
    path.write_text("[DEFAULT]\ntransport_url = memory://from-file\n"
                    "control_exchange = billing\nrpc_response_timeout = 7\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)])
    transport = polymsg.get_transport(conf=conf)
    transports.append(transport)
    assert transport.url.hosts[0].hostname == "from-file"
    assert transport.default_exchange == "billing"
    assert conf.rpc_response_timeout == 7


def test_caller_conf_overrides_are_read_live(transports: list[polymsg.Transport]) -> None:
    conf = cfg.ConfigOpts()
    transport = polymsg.get_transport("memory://conf-test", conf=conf)
    transports.append(transport)
    conf.set_override("control_exchange", "ops")
    assert transport.default_exchange == "ops"


def test_an_explicit_url_beats_the_config(tmp_path: Path,
                                          transports: list[polymsg.Transport]) -> None:
    path = tmp_path / "svc.conf"
    path.write_text("[DEFAULT]\ntransport_url = nosuchdriver://h\n")
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)])
    transport = polymsg.get_transport("memory://explicit", conf=conf)
    transports.append(transport)
    assert transport.url.hosts[0].hostname == "explicit"


def test_options_registered_by_someone_else_are_reused(
        transports: list[polymsg.Transport]) -> None:
    # A service moving from another messaging library may have registered
    # control_exchange itself, with its own default.
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt("control_exchange", default="legacy"))
    transport = polymsg.get_transport("memory://conf-test", conf=conf)
    transports.append(transport)
    assert transport.default_exchange == "legacy"


def test_one_conf_serves_several_transports(transports: list[polymsg.Transport]) -> None:
    conf = cfg.ConfigOpts()
    transports.append(polymsg.get_transport("memory://a", conf=conf))
    transports.append(polymsg.get_transport("memory://b", conf=conf))
    assert [t.conf for t in transports] == [conf, conf]
