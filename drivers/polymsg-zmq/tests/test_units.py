"""Pure logic: wire helpers, options and URLs, the ring file's rules, registration."""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points

import pytest
from oslo_config import cfg
from polymsg_zmq import ZmqDriver, list_opts
from polymsg_zmq._options import overlay, settings_from, split_address
from polymsg_zmq._ratelog import RateLimited, clip
from polymsg_zmq._topics import consumer_groups
from polymsg_zmq._wire import (
    InvalidFrame,
    deal_packed,
    decode_deadline,
    decode_header,
    encode_deadline,
    ipc_path,
    pack,
    unpack,
    validate_name,
)
from zmqtest import Hosts

import polymsg


def settings(url: str) -> object:
    parsed = polymsg.TransportURL.parse(url)
    return settings_from(overlay(cfg.ConfigOpts(), parsed), parsed)


def test_entry_points_register_driver_options_and_commands() -> None:
    drivers = {ep.name: ep for ep in entry_points(group="polymsg.drivers")}
    assert drivers["zmq"].load() is ZmqDriver
    opts = {ep.name: ep for ep in entry_points(group="oslo.config.opts")}
    assert opts["polymsg_zmq"].load() is list_opts
    commands = {ep.name for ep in entry_points(group="polymsg.cli")}
    assert {"zmq-receiver", "zmq-keygen"} <= commands


def test_list_opts_is_the_driver_group() -> None:
    [(group, opts)] = list_opts()
    assert group == ZmqDriver.options_group == "polymsg_zmq"
    names = {opt.dest for opt in opts}
    assert {"host", "receiver_port", "ipc_dir", "matchmaker", "ring_file", "redis_url",
            "matchmaker_ttl", "curve_public_key", "curve_secret_key"} <= names
    assert names == {opt.dest for opt in ZmqDriver.list_opts()}


def test_url_host_port_and_query_override_options() -> None:
    resolved = settings("zmq://node-7:9999/?ipc_dir=/tmp/x&matchmaker_ttl=2.5")
    assert (resolved.host, resolved.port, resolved.ipc_dir) == ("node-7", 9999, "/tmp/x")
    assert resolved.address == "node-7:9999"
    assert resolved.matchmaker_ttl == 2.5
    assert settings("zmq://[::1]:9000/").address == "[::1]:9000"


@pytest.mark.parametrize("query,complaint", [
    ("no_such_option=1", "no_such_option"),
    ("matchmaker=ring", "ring_file"),
    ("matchmaker=redis", "redis_url"),
    ("matchmaker=zookeeper", "matchmaker"),
    ("curve_public_key=" + "a" * 40, "both"),
    ("curve_public_key=short&curve_secret_key=short", "40-character"),
])
def test_bad_options_are_invalid_transport_urls(query: str, complaint: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match=complaint):
        polymsg.get_transport(f"zmq://127.0.0.1:1/?{query}")


def test_several_hosts_in_the_url_are_not_supported() -> None:
    with pytest.raises(polymsg.NotSupported):
        polymsg.get_transport("zmq://a:1,b:2/")


def test_split_address() -> None:
    assert split_address("node", 9501) == ("node", 9501)
    assert split_address("node:1234", 9501) == ("node", 1234)
    assert split_address("[fe80::1]:77", 9501) == ("fe80::1", 77)
    assert split_address("[fe80::1]", 9501) == ("fe80::1", 9501)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", "nul\0byte", ""])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(polymsg.InvalidTarget):
        validate_name(name, "topic")


def test_ipc_paths_stay_inside_the_directory_and_short_enough() -> None:
    assert ipc_path("/run/p", "polymsg", "compute") == "/run/p/t/polymsg/compute"
    long_topic = "t" * 200
    path = ipc_path("/run/p", "polymsg", long_topic)
    assert path.startswith("/run/p/t/polymsg/#") and len(path) <= 107
    assert path == ipc_path("/run/p", "polymsg", long_topic)  # stable
    assert ipc_path("/run/p", "polymsg", "#x") != ipc_path("/run/p", "polymsg", "x")
    with pytest.raises(polymsg.InvalidTarget, match="too long"):
        ipc_path("/" + "d" * 100, "polymsg", "compute")


@pytest.mark.parametrize("raw", [
    b"not json", b"[]", b'{"k":"rpc"}', b'{"k":"x","x":"e","t":"t"}',
    b'{"k":"rpc","x":"..","t":"t"}', b'{"k":"rpc","x":"e","t":"t","ttl":-1}',
    b'{"k":"rpc","x":"e","t":"t","ttl":true}', b'{"k":"rpc","x":"e","t":"t","s":5}',
    b'{"k":"note","x":"e","t":"t"}', b'{"k":"note","x":"e","t":"t","p":"info","pools":[1]}',
    b'{"k":"note","x":"e","t":"t","p":"info","pools":[' + b",".join(b'"p%d"' % n
                                                            for n in range(257)) + b"]}",
])
def test_bad_headers_are_invalid_frames(raw: bytes) -> None:
    with pytest.raises(InvalidFrame):
        decode_header(raw)


def test_good_header_and_deadline_round_trip() -> None:
    header = decode_header(b'{"k":"note","x":"e","t":"t","p":"info","pools":["a"],"ttl":1}')
    assert header["pools"] == ["a"]
    assert decode_deadline(encode_deadline(12.5)) == 12.5
    assert decode_deadline(encode_deadline(None)) is None
    with pytest.raises(InvalidFrame):
        decode_deadline(b"123")


def test_consumer_groups_and_registration_keys() -> None:
    groups, keys, qttl = consumer_groups("e", "t", {"kind": "rpc", "server": "s1", "qttl": 2})
    assert groups == ["*", "s:s1"] and qttl == 2.0
    assert keys == {("rpc", "e", "t", ""), ("rpc", "e", "t", "s1")}
    groups, keys, qttl = consumer_groups("e", "t", {"kind": "note", "pool": "p",
                                                    "priorities": ["info", "error"]})
    assert groups == ["n:info:p", "n:error:p"] and qttl is None
    assert ("note", "e", "t", "error", "p") in keys
    for bad in ({"kind": "rpc"}, {"kind": "note", "priorities": []}, {"kind": "?"},
                {"kind": "rpc", "server": "s", "qttl": "x"}):
        with pytest.raises(ValueError):
            consumer_groups("e", "t", bad)


def test_ring_file_rules_and_reload() -> None:
    from polymsg_zmq._matchmaker import RingMatchmaker

    hosts = Hosts(["a"])
    path = hosts.write_ring({"compute": ["h1", "h2:7000"], "compute.h9": ["h9"],
                             "compute.info": ["n1"], "*": ["fallback"]})
    try:
        ring = RingMatchmaker(hosts[0].settings(matchmaker_cache="0"))
        port = hosts[0].port
        assert ring.rpc_hosts("x", "compute") == [f"h1:{port}", "h2:7000"]
        assert ring.rpc_hosts("x", "compute", "h9") == [f"h9:{port}"]
        assert ring.rpc_hosts("x", "compute", "h2") == ["h2:7000"]  # server named like a host
        with pytest.raises(polymsg.MessageDeliveryFailure, match=r"compute\.other"):
            ring.rpc_hosts("x", "compute", "other")
        assert ring.rpc_hosts("x", "anything", "srv") == [f"fallback:{port}"]
        assert ring.note_hosts("x", "compute", "info") == [(f"n1:{port}", None)]
        assert ring.note_hosts("x", "compute", "error") == [(f"h1:{port}", None),
                                                            ("h2:7000", None)]
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"compute": ["h3"]}, handle)
        os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
        assert ring.rpc_hosts("x", "compute") == [f"h3:{port}"]
        assert ring.rpc_hosts("x", "unlisted") == []
        # replies go to hosts the ring names (any entry) and to this host only
        assert ring.knows_host("h3") and ring.knows_host("127.0.0.1")
        assert not ring.knows_host("h1") and not ring.knows_host("192.0.2.1")
    finally:
        hosts.close()


def test_bad_ring_file_is_reported() -> None:
    hosts = Hosts(["a"])
    try:
        with pytest.raises(polymsg.InvalidTransportURL, match="cannot read ring file"):
            polymsg.get_transport(hosts[0].url(matchmaker="ring",
                                               ring_file=os.path.join(hosts.root, "none")))
        path = hosts.write_ring({"compute": "not-a-list"})  # type: ignore[dict-item]
        with pytest.raises(polymsg.InvalidTransportURL, match="JSON object"):
            polymsg.get_transport(hosts[0].url(ring_file=path))
        path = hosts.write_ring({"compute": ["node:not-a-port"]})
        with pytest.raises(polymsg.InvalidTransportURL, match="not-a-port"):
            polymsg.get_transport(hosts[0].url(ring_file=path))
    finally:
        hosts.close()


@pytest.mark.parametrize("count,hands", [(1, 3), (2, 3), (23, 3), (7, 2), (6, 6)])
def test_deal_packed_hands_out_one_body_at_a_time(count: int, hands: int) -> None:
    bodies = [f"body-{n}".encode() for n in range(count)]
    dealt = deal_packed(b"".join(pack(b) for b in bodies), hands)
    assert len(dealt) == min(count, hands)
    for index, hand in enumerate(dealt):
        assert unpack(b"".join(hand)) == bodies[index::len(dealt)]
    with pytest.raises(InvalidFrame):
        deal_packed(b"\0\0\0\x09short", 2)


@pytest.mark.parametrize("query,bind,host", [
    ("", "127.0.0.1", "127.0.0.1"),
    ("bind_address=10.1.2.3", "10.1.2.3", "10.1.2.3"),
    ("host=localhost", "127.0.0.1", "localhost"),
])
def test_default_bind_is_loopback_unless_told_an_address(query: str, bind: str,
                                                        host: str) -> None:
    parsed = settings(f"zmq:///?{query}")
    assert (parsed.bind_address, parsed.host) == (bind, host)  # type: ignore[attr-defined]
    named = settings("zmq://node-7:9501/")
    assert (named.bind_address, named.host) == ("node-7", "node-7")  # type: ignore[attr-defined]


def test_rate_limited_log_details_a_few_and_counts_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="t")
    limited = RateLimited(logging.getLogger("t"), "garbage", interval=3600, detail=3)
    for n in range(1000):
        limited.log("bad thing %d: %s", n, clip("x" * 10_000))
    assert limited.count == 1000
    assert len(caplog.records) == 3
    assert max(len(r.getMessage()) for r in caplog.records) < 200
    limited._started -= 3600  # the interval is over
    limited.summary()
    assert "997 more" in caplog.records[-1].getMessage()
