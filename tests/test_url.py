"""Value objects: TransportURL parsing and rendering, Target validation, versions."""

from __future__ import annotations

import dataclasses

import pytest

import polymsg
from polymsg._target import parse_version, version_is_compatible

# -- TransportURL -------------------------------------------------------------


def test_single_host_with_everything() -> None:
    url = polymsg.TransportURL.parse("rabbit://user:secret@broker.example:5672/prod?heartbeat=30")
    assert url.transport == "rabbit"
    assert len(url.hosts) == 1
    host = url.hosts[0]
    assert (host.hostname, host.port, host.username, host.password) == (
        "broker.example", 5672, "user", "secret")
    assert url.virtual_host == "prod"
    assert dict(url.query) == {"heartbeat": "30"}


def test_multi_host_keeps_order_and_credentials() -> None:
    url = polymsg.TransportURL.parse("rabbit+kombu://a:pa@h1:5672,b:pb@h2,h3:5674/")
    assert url.transport == "rabbit+kombu"
    assert [(h.username, h.password, h.hostname, h.port) for h in url.hosts] == [
        ("a", "pa", "h1", 5672), ("b", "pb", "h2", None), (None, None, "h3", 5674)]


@pytest.mark.parametrize(("text", "hostname", "port"), [
    ("zmq://[::1]:9501/", "::1", 9501),
    ("zmq://[fe80::1]/", "fe80::1", None),
    ("rabbit://guest:guest@[2001:db8::5]:5672/", "2001:db8::5", 5672),
])
def test_ipv6_hosts(text: str, hostname: str, port: int | None) -> None:
    url = polymsg.TransportURL.parse(text)
    assert (url.hosts[0].hostname, url.hosts[0].port) == (hostname, port)
    assert f"[{hostname}]" in str(url)
    assert polymsg.TransportURL.parse(url.render(hide_password=False)) == url


@pytest.mark.parametrize(("text", "vhost"), [
    ("rabbit://h/", None),
    ("rabbit://h", None),
    ("rabbit://h/vh", "vh"),
    ("rabbit://h/%2F", "/"),
    ("rabbit://h/a%20b", "a b"),
])
def test_virtual_host(text: str, vhost: str | None) -> None:
    assert polymsg.TransportURL.parse(text).virtual_host == vhost


def test_query_is_a_read_only_mapping() -> None:
    url = polymsg.TransportURL.parse("rabbit://h/?a=1&b=two&empty=")
    assert dict(url.query) == {"a": "1", "b": "two", "empty": ""}
    with pytest.raises(TypeError):
        url.query["a"] = "2"  # type: ignore[index]


def test_memory_name_is_the_host() -> None:
    assert polymsg.TransportURL.parse("memory://bus1").hosts[0].hostname == "bus1"
    assert polymsg.TransportURL.parse("memory://").hosts == ()


def test_scheme_is_case_insensitive() -> None:
    assert polymsg.TransportURL.parse("RABBIT://h/").transport == "rabbit"


def test_password_hidden_in_str_and_repr() -> None:
    url = polymsg.TransportURL.parse("rabbit://alice:s3cr3t@h1:5672,bob:hunter2@h2/vh")
    for text in (str(url), repr(url), repr(url.hosts[0]), f"{url}"):
        assert "s3cr3t" not in text
        assert "hunter2" not in text
    assert "alice:****@h1:5672" in str(url)
    assert "bob:****@h2" in str(url)


def test_render_with_password_round_trips() -> None:
    text = "rabbit://us%40er:p%3Ass@h1:5672,h2:5673/my%2Fvhost?heartbeat=5"
    url = polymsg.TransportURL.parse(text)
    assert url.hosts[0].username == "us@er"
    assert url.hosts[0].password == "p:ss"
    assert url.virtual_host == "my/vhost"
    assert polymsg.TransportURL.parse(url.render(hide_password=False)) == url


def test_parse_accepts_a_parsed_url() -> None:
    url = polymsg.TransportURL.parse("memory://x")
    assert polymsg.TransportURL.parse(url) is url


def test_urls_are_frozen_and_hashable() -> None:
    a = polymsg.TransportURL.parse("rabbit://u:p@h:1/v?x=1")
    b = polymsg.TransportURL.parse("rabbit://u:p@h:1/v?x=1")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.transport = "zmq"  # type: ignore[misc]


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "12x"])
def test_bad_port_is_named(port: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match=f"invalid port '{port}'"):
        polymsg.TransportURL.parse(f"rabbit://user:topsecret@h:{port}/")


def test_errors_never_show_the_password() -> None:
    with pytest.raises(polymsg.InvalidTransportURL) as info:
        polymsg.TransportURL.parse("rabbit://user:topsecret@h:99999/")
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize("text", ["localhost:5672", "rabbit:/h", "", "//h/"])
def test_missing_scheme(text: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="driver://"):
        polymsg.TransportURL.parse(text)


@pytest.mark.parametrize("text", ["1abc://h", "ra bbit://h", "rab/bit://h"])
def test_bad_driver_name(text: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL):
        polymsg.TransportURL.parse(text)


@pytest.mark.parametrize("text", ["zmq://[::1/", "zmq://[::1]x/"])
def test_bad_ipv6(text: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match="IPv6"):
        polymsg.TransportURL.parse(text)


@pytest.mark.parametrize(("value", "type_name"), [
    (None, "NoneType"), (42, "int"), (b"memory://", "bytes"), (["memory://"], "list")])
def test_bad_input_types(value: object, type_name: str) -> None:
    with pytest.raises(polymsg.InvalidTransportURL, match=type_name) as info:
        polymsg.TransportURL.parse(value)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


# -- Target ---------------------------------------------------------------------


def test_target_defaults_and_equality() -> None:
    t = polymsg.Target(topic="compute")
    assert (t.topic, t.server, t.exchange, t.namespace, t.version, t.fanout) == (
        "compute", None, None, None, None, False)
    assert t == polymsg.Target(topic="compute")
    assert len({t, polymsg.Target(topic="compute"), polymsg.Target(topic="other")}) == 2


def test_target_is_frozen() -> None:
    t = polymsg.Target(topic="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.topic = "b"  # type: ignore[misc]


def test_target_replace_returns_a_changed_copy() -> None:
    t = polymsg.Target(topic="a", version="1.0")
    u = t.replace(server="s1", version="1.2")
    assert (u.topic, u.server, u.version) == ("a", "s1", "1.2")
    assert (t.server, t.version) == (None, "1.0")


@pytest.mark.parametrize("changes", [{"nosuch": 1}, {"version": "one"}, {"topic": ""}])
def test_target_replace_rejects_bad_changes(changes: dict[str, object]) -> None:
    with pytest.raises(polymsg.InvalidTarget):
        polymsg.Target(topic="a").replace(**changes)


@pytest.mark.parametrize("kwargs", [
    {"topic": ""}, {"topic": 5}, {"server": ""}, {"exchange": b"x"}, {"namespace": ""},
    {"version": "1"}, {"version": "1.2.3"}, {"version": "a.b"}, {"version": 1.0},
    {"fanout": "yes"},
])
def test_target_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(polymsg.InvalidTarget) as info:
        polymsg.Target(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert next(iter(kwargs)) in str(info.value)


# -- versions -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [("1.0", (1, 0)), ("2.13", (2, 13)),
                                              ("0.1", (0, 1))])
def test_parse_version(text: str, parsed: tuple[int, int]) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(("available", "wanted", "ok"), [
    ("1.0", "1.0", True),
    ("1.5", "1.2", True),
    ("1.2", "1.5", False),
    ("2.0", "1.0", False),
    ("1.9", "2.0", False),
    ("1.10", "1.9", True),  # numeric, not lexical
])
def test_version_compatibility(available: str, wanted: str, ok: bool) -> None:
    assert version_is_compatible(available, wanted) is ok
