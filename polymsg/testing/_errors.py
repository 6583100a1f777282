"""Conformance: timeouts, server-side exceptions and bad input."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness
from polymsg.testing._remote_errors import MODULE, ConformanceError
from polymsg.testing._support import expect_timeout

__all__ = ["ErrorTests"]

#: Arguments that cannot be sent even after polymsg's conversions (datetimes,
#: sets... are converted: see the ``ConversionTests``), with what makes them so.
NOT_JSON: list[tuple[str, Any]] = [
    ("object", object()),
    ("bytes not UTF-8", b"\xff\xfe"),
    ("function", len),
    ("NaN", float("nan")),
    ("object key", {object(): "one"}),
    ("nested object", {"ok": [1, {"bad": object()}]}),
]


def _methods(harness: Harness) -> list[str]:
    return [inv.method for inv in harness.calls.events]


class ErrorTests(DriverFixtures):
    """MessagingTimeout, remote exceptions, NoSuchMethod, SerializationError."""

    def test_call_without_server_times_out_on_time(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        client = harness.client(timeout=self.short_timeout)
        expect_timeout(client, self.short_timeout, self.timeout_margin)

    def test_slow_call_times_out_while_others_succeed(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        slow = harness.spawn(expect_timeout, client.prepare(timeout=self.short_timeout),
                             self.short_timeout, self.timeout_margin, "block", value="slow")
        harness.calls.wait_for(lambda e: "block" in [inv.method for inv in e], self.wait_timeout,
                               "the slow call to start")

        def quick(thread: int) -> list[int]:
            return [client.call({}, "echo", value=thread * 100 + n) for n in range(5)]

        quick_calls = [harness.spawn(quick, thread) for thread in range(4)]
        for thread, future in enumerate(quick_calls):
            assert future.result(self.wait_timeout) == [thread * 100 + n for n in range(5)]
        slow.result(self.wait_timeout + self.timeout_margin)
        harness.release.set()
        assert client.call({}, "echo", value="after") == "after"

    @pytest.mark.parametrize("kind, cls, message", [
        ("ValueError", ValueError, "bad value"),
        ("KeyError", KeyError, "missing-key"),
        ("InvalidTarget", polymsg.InvalidTarget, "a polymsg error"),
    ])
    def test_builtin_and_polymsg_exceptions_keep_their_class(
            self, harness: Harness, kind: str, cls: type[Exception], message: str) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        with pytest.raises(cls) as caught:
            harness.client().call({}, "fail", kind=kind, message=message)
        assert type(caught.value) is cls
        assert str(caught.value) == str(cls(message))
        remote_tb = getattr(caught.value, "remote_traceback", None)
        assert isinstance(remote_tb, str) and "fail" in remote_tb and kind in remote_tb

    def test_allowed_module_exception_keeps_its_class(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        allowing = harness.new_transport(allowed_remote_exmods=[MODULE])
        with pytest.raises(ConformanceError) as caught:
            harness.client(transport=allowing).call(
                {}, "fail", kind="ConformanceError", message="application says no")
        assert type(caught.value) is ConformanceError
        assert str(caught.value) == "application says no"
        assert "ConformanceError" in getattr(caught.value, "remote_traceback", "")

    def test_disallowed_exception_becomes_remote_error(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        allowing = harness.new_transport(allowed_remote_exmods=[MODULE])
        with pytest.raises(polymsg.RemoteError) as caught:
            harness.client(transport=allowing).call(
                {}, "fail", kind="UnlistedError", message="from elsewhere")
        error = caught.value
        assert error.exc_type == "UnlistedError"
        assert error.value == "from elsewhere"
        assert isinstance(error.traceback, str) and "UnlistedError" in error.traceback

    def test_expected_exception_reaches_client_without_error_log(
            self, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
        self.require(harness.transport, "rpc")
        server = harness.rpc_server()
        caplog.set_level(logging.DEBUG)
        with pytest.raises(KeyError) as caught:
            harness.client().call({}, "fail_expected", message="expected")
        assert str(caught.value) == str(KeyError("expected"))
        with pytest.raises(ValueError):
            harness.client().call({}, "fail", kind="ValueError", message="unexpected")
        harness.stop(server)  # every log line of both calls is written once wait() returns
        loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert not any(isinstance(_raised(record), KeyError) for record in loud), \
            "an expected exception was logged with its traceback"
        assert any(isinstance(_raised(record), ValueError) for record in loud
                   if record.levelno >= logging.ERROR), \
            "an unexpected endpoint exception was not logged with its traceback"

    @pytest.mark.parametrize("method", ["no_such_method", "_private", "__init__", "__class__"])
    def test_unknown_or_private_method_raises_no_such_method(
            self, harness: Harness, method: str) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        with pytest.raises(polymsg.NoSuchMethod) as caught:
            harness.client().call({}, method)
        assert isinstance(caught.value, AttributeError)
        assert "_private" not in _methods(harness)
        assert harness.client().call({}, "echo", value="still serving") == "still serving"

    def test_cast_to_unknown_method_does_not_stop_server(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        client.cast({}, "no_such_method", value=1)
        client.cast({}, "_private")
        client.cast({}, "note", value="marker")
        harness.calls.wait_for_count(1, self.wait_timeout)
        assert client.call({}, "echo", value="ok") == "ok"
        assert _methods(harness) == ["note", "echo"]

    @pytest.mark.parametrize("what, value", NOT_JSON, ids=[what for what, _ in NOT_JSON])
    def test_unserializable_argument_fails_before_sending(
            self, harness: Harness, what: str, value: Any) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        with pytest.raises(polymsg.SerializationError) as caught_call:
            client.call({}, "echo", value=value)
        with pytest.raises(polymsg.SerializationError):
            client.cast({}, "note", value=value)
        assert isinstance(caught_call.value, TypeError)
        assert client.call({}, "echo", value="marker") == "marker"
        assert [inv.kwargs.get("value") for inv in harness.calls.events] == ["marker"]

    def test_unserializable_ctxt_fails_before_sending(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        with pytest.raises(polymsg.SerializationError):
            client.call({"user": object()}, "echo", value=1)
        with pytest.raises(polymsg.SerializationError):
            client.cast({"when": float("inf")}, "note", value=1)
        assert client.call({}, "echo", value="marker") == "marker"
        assert _methods(harness) == ["echo"]

    def test_unserializable_result_fails_call_and_server_keeps_serving(
            self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server()
        client = harness.client()
        with pytest.raises(Exception) as caught:
            client.call({}, "bad_result")
        assert not isinstance(caught.value, polymsg.MessagingTimeout), \
            "the caller waited for a reply that could not be sent"
        assert isinstance(caught.value, polymsg.MessagingError | TypeError)
        assert client.call({}, "echo", value="next") == "next"

    def test_retry_zero_to_unreachable_peer_fails_delivery(self, harness: Harness) -> None:
        url = self.get_unreachable_url()
        if url is None:
            pytest.skip("driver test class gives no get_unreachable_url()")
        self.require(harness.transport, "rpc")
        unreachable = polymsg.get_transport(url, conf=self.make_conf())
        try:
            client = polymsg.RPCClient(unreachable, polymsg.Target(topic=harness.topic),
                                       retry=0, timeout=self.wait_timeout)
            started = time.monotonic()
            with pytest.raises(polymsg.MessageDeliveryFailure):
                client.cast({}, "note", value=1)
            with pytest.raises(polymsg.MessageDeliveryFailure):
                client.call({}, "echo", value=1)
            elapsed = time.monotonic() - started
            assert elapsed < self.wait_timeout, f"retry=0 took {elapsed:.1f}s to give up"
        finally:
            unreachable.cleanup()



def _raised(record: logging.LogRecord) -> BaseException | None:
    """The exception whose traceback ``record`` logs, if any."""
    return record.exc_info[1] if record.exc_info else None
