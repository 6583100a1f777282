"""polymsg's JSON conversions: oslo.messaging's wire form, errors naming the path."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import json
import uuid

import pytest

import polymsg
from polymsg._json import dumps, loads, to_primitive

WHEN = datetime.datetime(2026, 1, 1, 12, 0, 0)

CONVERTIBLE = {
    "created_at": WHEN,
    "with_micro": datetime.datetime(2026, 1, 1, 12, 0, 0, 123456),
    "day": datetime.date(2026, 1, 2),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "tags": {"only"},
    "frozen": frozenset({3}),
    "pair": (1, "two"),
    "price": decimal.Decimal("1.10"),
    "v4": ipaddress.ip_address("10.0.0.1"),
    "v6": ipaddress.ip_address("::1"),
    "raw": b"bytes",
    "error": KeyError("k"),
    "nested": {"list": [WHEN, {"deeper": (WHEN,)}]},
    7: "int key",
    None: "none key",
    True: "bool key",
    2.5: "float key",
}


def test_converts_as_oslo_serialization_does() -> None:
    jsonutils = pytest.importorskip("oslo_serialization.jsonutils")
    assert json.loads(dumps(to_primitive(CONVERTIBLE))) == json.loads(jsonutils.dumps(CONVERTIBLE))


def test_datetime_in_oslo_format() -> None:
    assert to_primitive(WHEN) == "2026-01-01T12:00:00.000000"
    aware = WHEN.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert to_primitive(aware) == "2026-01-01T10:00:00.000000"  # UTC, as naive peers expect


def test_json_values_are_not_copied() -> None:
    value = {"a": [1, 2.5, {"b": None}], "c": "d"}
    assert to_primitive(value) is value


@pytest.mark.parametrize(("value", "path", "type_name"), [
    ({"instance": {"created_at": object()}}, "args.instance.created_at", "object"),
    ({"items": [1, 2, len]}, "args.items[2]", "builtin_function_or_method"),
    ({"gen": (i for i in ())}, "args.gen", "generator"),
    ({"cls": int}, "args.cls", "type"),
])
def test_unconvertible_names_path_and_type(value: object, path: str, type_name: str) -> None:
    with pytest.raises(polymsg.SerializationError) as info:
        to_primitive(value, "args")
    assert f"cannot send {path}:" in str(info.value)
    assert type_name in str(info.value)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(number: float) -> None:
    with pytest.raises(polymsg.SerializationError, match=r"args\.x\[1\]"):
        to_primitive({"x": [0, number]}, "args")


def test_a_structure_containing_itself_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(polymsg.SerializationError, match="nested more than"):
        to_primitive(loop)


def test_convert_instances_uses_the_objects_attributes() -> None:
    class Flavor:
        def __init__(self) -> None:
            self.name = "m1.small"
            self.created = WHEN

    with pytest.raises(polymsg.SerializationError):
        to_primitive(Flavor())
    assert to_primitive(Flavor(), convert_instances=True) == {
        "name": "m1.small", "created": "2026-01-01T12:00:00.000000"}


def test_loads_reads_non_finite_tokens_of_python_json() -> None:
    decoded = loads(json.dumps({"a": float("nan"), "b": float("inf")}))
    assert decoded["b"] == float("inf") and decoded["a"] != decoded["a"]
    with pytest.raises(polymsg.SerializationError, match="invalid JSON"):
        loads(b"{not json")


def test_dumps_names_the_path_of_what_it_refuses() -> None:
    with pytest.raises(polymsg.SerializationError, match=r"value\.a\.b"):
        dumps({"a": {"b": object()}})
