"""The public surface is locked: ``__all__`` is exactly the public names."""

from __future__ import annotations

import types
from importlib.metadata import version

import pytest

import polymsg
import polymsg.driver
import polymsg.opts

# The documented top-level API (docs/api.rst); removing a name is a breaking change.
API_NAMES = {
    "get_transport", "TransportURL", "Target", "RPCClient", "get_rpc_server",
    "Notifier", "get_notification_listener", "NotificationResult", "NotificationFilter",
    "expected_exceptions", "Serializer", "NoOpSerializer",
    "MessagingError", "MessagingTimeout", "MessageDeliveryFailure", "InvalidTarget",
    "InvalidTransportURL", "DriverLoadFailure", "NotSupported", "SerializationError",
    "RemoteError", "NoSuchMethod", "UnsupportedVersion", "RPCVersionCapError",
    "get_batch_notification_listener",
}


def public_names(module: types.ModuleType) -> list[str]:
    """Names a user sees on ``module``, leaving out submodules."""
    return sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )


def test_all_is_exactly_the_public_names() -> None:
    assert polymsg.__all__ == public_names(polymsg)


def test_api_names_are_exported() -> None:
    assert set(polymsg.__all__) >= API_NAMES


@pytest.mark.parametrize("module", [polymsg, polymsg.driver, polymsg.opts],
                         ids=lambda m: m.__name__)
def test_all_is_sorted_and_resolves(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", [polymsg.driver, polymsg.opts], ids=lambda m: m.__name__)
def test_everything_defined_publicly_is_exported(module: types.ModuleType) -> None:
    defined_here = [
        name for name in public_names(module)
        if getattr(vars(module)[name], "__module__", None) == module.__name__
    ]
    assert set(defined_here) <= set(module.__all__)


def test_exported_names_say_they_are_public() -> None:
    for name in polymsg.__all__:
        value = getattr(polymsg, name)
        if isinstance(value, type) or callable(value):
            assert value.__doc__, f"polymsg.{name} has no docstring"


def test_exceptions_share_one_root() -> None:
    errors = [getattr(polymsg, n) for n in polymsg.__all__
              if isinstance(getattr(polymsg, n), type)
              and issubclass(getattr(polymsg, n), BaseException)]
    assert len(errors) == 13
    assert all(issubclass(e, polymsg.MessagingError) for e in errors)


def test_version_matches_the_distribution() -> None:
    assert polymsg.__version__ == version("polymsg")
