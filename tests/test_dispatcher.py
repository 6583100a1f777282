"""RPC dispatch (polymsg._dispatcher): the per-request shortcuts keep its rules."""

from __future__ import annotations

from typing import Any

import pytest

import polymsg
from polymsg._dispatcher import RPCDispatcher


class _Old:
    target = polymsg.Target(version="1.1")

    def ping(self, ctxt: dict[str, Any], value: Any) -> str:
        return f"old {value}"


class _New:
    target = polymsg.Target(version="1.3")

    def ping(self, ctxt: dict[str, Any], value: Any) -> str:
        return f"new {value}"


def _call(dispatcher: RPCDispatcher, method: Any, version: str | None = None,
          **args: Any) -> Any:
    func = dispatcher.find(method, None, version)
    return dispatcher.invoke(func, {}, {"method": method, "args": args})


def test_repeated_requests_pick_the_same_endpoint_as_the_first_time() -> None:
    dispatcher = RPCDispatcher([_Old(), _New()], polymsg.NoOpSerializer())
    for _ in range(3):
        assert _call(dispatcher, "ping", "1.0", value=1) == "old 1"
        assert _call(dispatcher, "ping", "1.2", value=2) == "new 2"
    with pytest.raises(polymsg.UnsupportedVersion):
        dispatcher.find("ping", None, "1.4")
    with pytest.raises(polymsg.UnsupportedVersion):
        dispatcher.find("ping", None, "2.0")


def test_a_method_replaced_on_the_endpoint_is_called_as_it_is_now() -> None:
    endpoint = _Old()
    dispatcher = RPCDispatcher([endpoint], polymsg.NoOpSerializer())
    assert _call(dispatcher, "ping", value=1) == "old 1"
    endpoint.ping = lambda ctxt, value: f"patched {value}"  # type: ignore[method-assign]
    assert _call(dispatcher, "ping", value=2) == "patched 2"
    del endpoint.ping
    assert _call(dispatcher, "ping", value=3) == "old 3"


@pytest.mark.parametrize("method", [["ping"], {"a": 1}, 7, None, "", "_private"])
def test_junk_method_names_are_no_such_method(method: Any) -> None:
    dispatcher = RPCDispatcher([_Old()], polymsg.NoOpSerializer())
    with pytest.raises(polymsg.NoSuchMethod):
        dispatcher.find(method, None, None)


def test_arguments_must_be_an_object() -> None:
    dispatcher = RPCDispatcher([_Old()], polymsg.NoOpSerializer())
    func = dispatcher.find("ping", None, None)
    with pytest.raises(TypeError, match="JSON object"):
        dispatcher.invoke(func, {}, {"method": "ping", "args": [1]})


class _Tagging(polymsg.Serializer):
    def serialize_entity(self, ctxt: dict[str, Any], entity: Any) -> Any:
        return f"out:{entity}"

    def deserialize_entity(self, ctxt: dict[str, Any], entity: Any) -> Any:
        return f"in:{entity}"

    def serialize_context(self, ctxt: dict[str, Any]) -> dict[str, Any]:
        return ctxt

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        return dict(ctxt, seen=True)


class _Echo:
    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return [ctxt.get("seen"), value]


def test_a_serializer_still_sees_every_argument_and_result() -> None:
    dispatcher = RPCDispatcher([_Echo()], _Tagging())
    assert _call(dispatcher, "echo", value="x") == "out:[True, 'in:x']"
