"""One validation of names, timeouts and contexts in the facade (pure logic)."""

from __future__ import annotations

import math
from typing import Any

import pytest

import polymsg
from polymsg._target import MAX_NAME_BYTES, check_name, check_timeout, check_ttl

# Names real oslo.messaging deployments use: FQDN servers, cinder's host@backend,
# dotted and dashed topics.
GOOD = ["compute", "conductor", "host-1.example.com", "cinder-volume", "host@lvm-1",
        "ironic.conductor_manager", "q-agent-notifier-port-update", "notifications",
        "versioned_notifications", "node:5672", "n\u00f6de", "x" * MAX_NAME_BYTES,
        "\u00e9" * (MAX_NAME_BYTES // 2), "a..b", ".hidden", "%41"]

BAD = {
    "#": "'#'", "*": "'*'", "a.#": "'#'", "*.compute": "'*'", "a/b": "'/'", "a\\b": "'\\\\\\\\'",
    "a\nb": "'\\\\n'", "a b": "' '", "a\tb": "'\\\\t'", "a\0b": "'\\\\x00'",
    "a\x7fb": "'\\\\x7f'", "a\u2028b": "'\\\\u2028'", "a\u200bb": "'\\\\u200b'",
    "a\ud800b": "'\\\\ud800'", ".": "'.'", "..": "'..'",
    "x" * (MAX_NAME_BYTES + 1): "too long", "\u00e9" * 128: "256 bytes",
}


@pytest.mark.parametrize("name", GOOD)
@pytest.mark.parametrize("field", ["topic", "server", "exchange"])
def test_real_names_are_accepted(field: str, name: str) -> None:
    target = polymsg.Target(**{field: name})
    assert getattr(target, field) == name
    assert check_name("pool", name) == name


@pytest.mark.parametrize("name, says", BAD.items(), ids=[repr(n[:20]) for n in BAD])
@pytest.mark.parametrize("field", ["topic", "server", "exchange"])
def test_hostile_names_raise_invalid_target_naming_field_and_character(
        field: str, name: str, says: str) -> None:
    with pytest.raises(polymsg.InvalidTarget, match=says) as caught:
        polymsg.Target(**{field: name})
    assert str(caught.value).startswith(field) or f"{field} cannot" in str(caught.value)
    assert len(str(caught.value)) < 400, "a huge name was echoed whole"


@pytest.mark.parametrize("value", [None, "", 3, b"bytes"])
def test_non_string_names_are_refused(value: Any) -> None:
    if value is None:
        assert polymsg.Target(topic=None).topic is None
        with pytest.raises(polymsg.InvalidTarget):
            check_name("pool", value)
        return
    with pytest.raises(polymsg.InvalidTarget, match="non-empty string"):
        polymsg.Target(topic=value)


@pytest.mark.parametrize("field", ["topic", "exchange"])
def test_amqp_reserved_prefix_is_refused_where_it_names_a_queue(field: str) -> None:
    with pytest.raises(polymsg.InvalidTarget, match="amq"):
        polymsg.Target(**{field: "amq.direct"})
    with pytest.raises(polymsg.InvalidTarget, match="amq"):
        check_name("pool", "amq.pool")
    # A server's queue is <topic>.<server>: a server may be called amq.example.com.
    assert polymsg.Target(server="amq.example.com", topic="amqp.compute").server


def test_replace_and_prepare_validate_too() -> None:
    target = polymsg.Target(topic="compute")
    with pytest.raises(polymsg.InvalidTarget, match="server"):
        target.replace(server="*")
    with polymsg.get_transport("memory://names-prepare") as transport:
        client = polymsg.RPCClient(transport, target)
        with pytest.raises(polymsg.InvalidTarget, match="topic"):
            client.prepare(topic="a\nb")


class Listening:
    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any,
             metadata: Any) -> None:
        """A notification endpoint."""


def test_derived_names_must_fit_amqp() -> None:
    with polymsg.get_transport("memory://names-size") as transport:
        fits = polymsg.Target(topic="t" * 100, server="s" * 154)  # t.s = 255 bytes
        polymsg.RPCClient(transport, fits)
        polymsg.get_rpc_server(transport, fits, [])
        polymsg.RPCClient(transport, polymsg.Target(topic="t" * 215))  # + fanout suffix = 255
        for target in [polymsg.Target(topic="t" * 100, server="s" * 155),
                       polymsg.Target(topic="t" * 216),
                       polymsg.Target(topic="t" * 100, server="s" * 100, exchange="e" * 60)]:
            with pytest.raises(polymsg.InvalidTarget, match="255 bytes"):
                polymsg.RPCClient(transport, target)
        # The configured exchange adds no prefix to queue names.
        default = polymsg.Target(topic="t" * 100, server="s" * 154,
                                 exchange=transport.default_exchange)
        polymsg.RPCClient(transport, default)
        # A notification topic only needs room for ".critical".
        polymsg.Notifier(transport, "pub", topics=["t" * 246])
        polymsg.get_notification_listener(transport, [polymsg.Target(topic="t" * 246)],
                                          [Listening()])
        with pytest.raises(polymsg.InvalidTarget, match="too long"):
            polymsg.Notifier(transport, "pub", topics=["t" * 247])
        with pytest.raises(polymsg.InvalidTarget, match="too long"):
            polymsg.get_notification_listener(transport, [polymsg.Target(topic="t" * 247)], [])


def test_publisher_id_and_pool_are_names() -> None:
    with polymsg.get_transport("memory://names-notify") as transport:
        polymsg.Notifier(transport, "compute.host-1.example.com")
        for bad in ["a\nb", "#", "x" * 300]:
            with pytest.raises(polymsg.InvalidTarget, match="publisher_id"):
                polymsg.Notifier(transport, bad)
            with pytest.raises(polymsg.InvalidTarget, match="pool"):
                polymsg.get_notification_listener(
                    transport, [polymsg.Target(topic="notifications")], [], pool=bad)


@pytest.mark.parametrize("value", [0, 0.5, 60, 1e9])
def test_good_timeouts(value: float) -> None:
    assert check_timeout("timeout", value) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.001, "1", True, [1]],
                         ids=repr)
def test_bad_timeouts_and_ttls(value: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        check_timeout("timeout", value)
    with pytest.raises(ValueError, match="message_ttl"):
        check_ttl("message_ttl", value)


def test_context_must_be_a_dict_after_the_serializer() -> None:
    class ToDict(polymsg.NoOpSerializer):
        def serialize_context(self, ctxt: Any) -> Any:
            return {"user": ctxt.user} if hasattr(ctxt, "user") else ctxt

    class RequestContext:
        user = "alice"

    with polymsg.get_transport("memory://names-ctxt") as transport:
        target = polymsg.Target(topic="t", server="s")

        class Endpoint:
            def get(self, ctxt: Any) -> Any:
                return ctxt

        with polymsg.get_rpc_server(transport, target, [Endpoint()]):
            client = polymsg.RPCClient(transport, target, timeout=10, serializer=ToDict())
            assert client.call(RequestContext(), "get") == {"user": "alice"}
            with pytest.raises(polymsg.SerializationError, match="context"):
                client.call(["not", "a", "dict"], "get")
            notifier = polymsg.Notifier(transport, "pub")
            with pytest.raises(polymsg.SerializationError, match="context"):
                notifier.info("text", "event", {})
