"""Conformance: starting, stopping and cleaning up servers, listeners, transports."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

import polymsg
from polymsg.testing._fixtures import DriverFixtures, Harness, unique_name
from polymsg.testing._support import Notification, NotificationEndpoint, Recorder, RPCEndpoint

__all__ = ["LifecycleTests"]

#: How long a stop that must not finish yet is watched (an absence, not a wait).
STILL_RUNNING_CHECK = 0.3


class LifecycleTests(DriverFixtures):
    """stop()/wait(), context managers, and no threads left behind."""

    def test_stop_and_wait_let_in_flight_call_finish(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        server = harness.rpc_server()
        pending = harness.spawn(harness.client().call, {}, "block", value="finished")
        harness.calls.wait_for_count(1, self.wait_timeout)
        stopping = harness.spawn(harness.stop, server)
        with pytest.raises(concurrent.futures.TimeoutError):
            stopping.result(STILL_RUNNING_CHECK)  # wait() must not return before the call ends
        harness.release.set()
        assert pending.result(self.wait_timeout) == "finished"
        stopping.result(self.wait_timeout)

    def test_server_context_manager_starts_and_stops(self, harness: Harness) -> None:
        self.require(harness.transport, "rpc")
        harness.rpc_server("server-2")
        target = polymsg.Target(topic=harness.topic, server="server-1")
        server = polymsg.get_rpc_server(harness.transport, target, [harness.endpoint("server-1")])
        pinned = harness.client(server="server-1")
        with server:
            assert pinned.call({}, "whoami") == "server-1"
        shared = harness.client()
        assert [shared.call({}, "whoami") for _ in range(6)] == ["server-2"] * 6

    def test_listener_context_manager_starts_and_stops(self, harness: Harness) -> None:
        self.require(harness.transport, "notify")
        harness.listener([NotificationEndpoint("other", harness.notes)])
        listener = polymsg.get_notification_listener(
            harness.transport, [polymsg.Target(topic=harness.topic)],
            [NotificationEndpoint("mine", harness.notes)])
        notifier = harness.notifier()
        with listener:
            for index in range(10):
                notifier.info({}, f"conformance.during.{index}", {})
            harness.notes.wait_for_count(10, self.wait_timeout)
        for index in range(5):
            notifier.info({}, f"conformance.after.{index}", {})
        notes = harness.notes.wait_for(lambda got: len(_after(got)) >= 5, self.wait_timeout)
        assert _after(notes) == ["other"] * 5, "a listener received after leaving its with block"

    def test_transport_context_manager(self, transport_url: str) -> None:
        with polymsg.get_transport(transport_url, conf=self.make_conf()) as transport:
            assert isinstance(transport, polymsg.Transport)
            assert isinstance(transport.capabilities, frozenset)
        transport.cleanup()  # idempotent

    def test_cleanup_is_idempotent(self, harness: Harness) -> None:
        transport = harness.new_transport()
        transport.cleanup()
        transport.cleanup()

    def test_cleanup_leaves_no_threads_behind(self, transport_url: str) -> None:
        before = set(threading.enumerate())
        with polymsg.get_transport(transport_url, conf=self.make_conf()) as transport:
            self._exercise(transport)
        deadline = time.monotonic() + self.wait_timeout
        for thread in set(threading.enumerate()) - before:
            # cleanup() may have asked a thread to end; give it time to do so.
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [thread.name for thread in set(threading.enumerate()) - before
                if not self.thread_may_linger(thread)]
        assert left == [], f"threads still running after cleanup(): {left}"

    def _exercise(self, transport: polymsg.Transport) -> None:
        """Use every declared feature once, stopping what was started."""
        topic = unique_name("threads")
        recorder, release = Recorder(), threading.Event()
        release.set()
        if "rpc" in transport.capabilities:
            target = polymsg.Target(topic=topic, server="server-1")
            with polymsg.get_rpc_server(transport, target, [RPCEndpoint("s", recorder, release)]):
                client = polymsg.RPCClient(transport, polymsg.Target(topic=topic),
                                           timeout=self.wait_timeout)
                assert client.call({}, "echo", value=1) == 1
                client.cast({}, "note", value=2)
                if "fanout" in transport.capabilities:
                    client.prepare(fanout=True).cast({}, "note", value=3)
                recorder.wait_for_count(2 + ("fanout" in transport.capabilities),
                                        self.wait_timeout)
        if "notify" in transport.capabilities:
            notes = Recorder()
            listener = polymsg.get_notification_listener(
                transport, [polymsg.Target(topic=topic)], [NotificationEndpoint("l", notes)])
            with listener:
                polymsg.Notifier(transport, "threads", topics=(topic,)).info({}, "e", {})
                notes.wait_for_count(1, self.wait_timeout)



def _after(notes: list[Notification]) -> list[str]:
    """Which endpoints got the notifications sent after the ``with`` block."""
    return [note.endpoint for note in notes if note.event_type.startswith("conformance.after.")]
