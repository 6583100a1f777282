"""Remote exceptions are rebuilt from an explicit table; the wire never imports anything."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import polymsg
from polymsg._remote import exception_from_failure, failure_from_exception
from polymsg.testing._remote_errors import MODULE, ConformanceError


def failure(module: str, name: str, message: str = "boom", **extra: Any) -> dict[str, Any]:
    return {"class": name, "module": module, "message": message,
            "tb": ["Traceback (most recent call last):\n", f"{name}: {message}\n"],
            "args": [message], "kwargs": {}, **extra}


# (module, class) a hostile reply may name: modules whose import runs code, classes that
# would stop the caller, and things that are not exception classes at all.
FORGED = [
    ("polymsg._bench.__main__", "main"),
    ("polymsg._bench.__main__", "MessagingTimeout"),
    ("polymsg._cli.main", "main"),
    ("polymsg._cli", "Exception"),
    ("polymsg.testing._remote_errors", "ConformanceError"),  # polymsg, but not allowed
    ("os", "error"),
    ("subprocess", "CalledProcessError"),
    ("antigravity", "Exception"),
    ("builtins", "SystemExit"),
    ("builtins", "KeyboardInterrupt"),
    ("builtins", "GeneratorExit"),
    ("builtins", "BaseException"),
    ("builtins", "BaseExceptionGroup"),
    ("builtins", "object"),
    ("builtins", "print"),
    ("builtins", "__import__"),
    ("exceptions", "SystemExit"),
    ("polymsg", "Target"),
    ("polymsg", "get_transport"),
    ("polymsg._exceptions", "__builtins__"),
    ("", ""),
]


@pytest.mark.parametrize("module, name", FORGED, ids=[f"{m}.{n}" for m, n in FORGED])
def test_forged_names_import_nothing_and_give_remote_error(module: str, name: str) -> None:
    before = set(sys.modules)
    stdout = sys.stdout
    exc = exception_from_failure(failure(module, name, "forged"), allowed_modules=())
    assert type(exc) is polymsg.RemoteError
    assert exc.exc_type == name and exc.value == "forged"
    assert set(sys.modules) == before, "a reply made the caller import a module"
    assert sys.stdout is stdout


@pytest.mark.parametrize("module", ["polymsg._bench.__main__", "polymsg._cli.main"])
def test_forged_polymsg_modules_stay_unimported_in_a_fresh_process(module: str) -> None:
    # In a fresh interpreter nothing has imported these yet: naming one must not either.
    import subprocess
    code = (
        "import sys, polymsg\n"
        "from polymsg._remote import exception_from_failure\n"
        f"exc = exception_from_failure({{'class': 'main', 'module': {module!r}, "
        "'message': 'x'}, ())\n"
        f"assert type(exc) is polymsg.RemoteError, exc\n"
        f"assert {module!r} not in sys.modules\n"
        "assert not [m for m in sys.modules if m.startswith(('polymsg._bench', 'polymsg._cli'))]\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "clean\n"


@pytest.mark.parametrize("module", ["builtins", "exceptions"])
@pytest.mark.parametrize("cls", [ValueError, KeyError, LookupError, OSError, RuntimeError])
def test_builtin_exceptions_are_rebuilt(module: str, cls: type[Exception]) -> None:
    sent = {**failure_from_exception(cls("it broke")), "module": module}
    exc = exception_from_failure(sent, ())
    assert isinstance(exc, cls)
    assert str(exc) == str(cls("it broke"))
    assert "it broke" in exc.remote_traceback  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", ["polymsg", "polymsg._exceptions"])
@pytest.mark.parametrize("cls", [polymsg.MessagingTimeout, polymsg.InvalidTarget,
                                 polymsg.NoSuchMethod, polymsg.MessagingError])
def test_polymsg_exceptions_are_rebuilt(module: str, cls: type[Exception]) -> None:
    exc = exception_from_failure(failure(module, cls.__name__, "nope"), ())
    assert type(exc) is cls and str(exc) == "nope"


def test_round_trip_of_a_polymsg_exception() -> None:
    sent = failure_from_exception(polymsg.UnsupportedVersion("2.0 is too new"))
    exc = exception_from_failure(sent, ())
    assert type(exc) is polymsg.UnsupportedVersion and str(exc) == "2.0 is too new"


def test_remote_error_from_a_nested_call_is_rebuilt_as_remote_error() -> None:
    sent = failure_from_exception(polymsg.RemoteError("Oops", "inner", "tb"))
    exc = exception_from_failure(sent, ())
    assert type(exc) is polymsg.RemoteError and exc.exc_type == "Oops"


def test_allowed_module_already_imported_is_rebuilt() -> None:
    exc = exception_from_failure(failure(MODULE, "ConformanceError", "app"), [MODULE])
    assert type(exc) is ConformanceError and str(exc) == "app"


def test_allowed_module_is_matched_exactly_not_by_prefix() -> None:
    before = set(sys.modules)
    for module in ("polymsg.testing", f"{MODULE}.sub", "polymsg"):
        exc = exception_from_failure(failure(module, "ConformanceError"), [MODULE])
        assert type(exc) is polymsg.RemoteError
    assert set(sys.modules) == before


def test_allowed_module_only_gives_exception_classes() -> None:
    for name in ("MODULE", "__name__", "__builtins__", "__class__", "a.b", "Exception.x"):
        exc = exception_from_failure(failure(MODULE, name), [MODULE])
        assert type(exc) is polymsg.RemoteError, name


def test_listed_module_that_cannot_be_imported_gives_remote_error(
        caplog: pytest.LogCaptureFixture) -> None:
    listed = ["polymsg_no_such_module_for_test"]
    for _ in range(3):
        exc = exception_from_failure(failure(listed[0], "Error"), listed)
        assert type(exc) is polymsg.RemoteError
    # Replies naming it again and again do not flood the log.
    assert len([r for r in caplog.records if listed[0] in r.getMessage()]) <= 1


@pytest.mark.parametrize("extra", [
    {"args": {"not": "a list"}},
    {"args": "abc"},
    {"kwargs": ["not", "a", "dict"]},
    {"kwargs": {"unexpected": 1}},
    {"args": [1, 2, 3, 4, 5, 6, 7, 8], "kwargs": {"x": 1}},
    {"tb": "one string, not a list"},
    {"tb": [1, None, {"x": 1}]},
])
def test_hostile_args_never_escape(extra: dict[str, Any]) -> None:
    exc = exception_from_failure(failure("builtins", "UnicodeDecodeError", "bad", **extra), ())
    assert isinstance(exc, (UnicodeDecodeError, polymsg.RemoteError))
    assert "bad" in str(exc)


@pytest.mark.parametrize("field, value", [("class", ["x"]), ("module", None),
                                          ("message", {"a": 1}), ("class", 12)])
def test_mistyped_fields_give_remote_error(field: str, value: Any) -> None:
    raw = failure("os", "error")
    raw[field] = value
    assert isinstance(exception_from_failure(raw, ()), polymsg.RemoteError)
