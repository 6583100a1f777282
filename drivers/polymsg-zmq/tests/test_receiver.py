"""The receiver on its own: garbage on its port, its IPC directory, its command line."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from polymsg_zmq import _consumer
from polymsg_zmq._wire import MAGIC, pack, validate_name
from zmqtest import Hosts, ReceiverProcess, free_port, short_tmpdir

import polymsg


class Echo:
    def __init__(self) -> None:
        self.bad_body_seen = threading.Event()

    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return value


@pytest.fixture
def host() -> Iterator[Hosts]:
    hosts = Hosts(["a"], max_message_size="65536")
    try:
        yield hosts
    finally:
        hosts.close()


def _serve(transport: polymsg.Transport, topic: str = "work") -> polymsg.RPCServer:
    server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s"),
                                    [Echo()])
    server.start()
    return server


def test_garbage_on_the_tcp_port_is_dropped_and_the_receiver_keeps_serving(
        host: Hosts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_zmq")
    receiver = host[0].start_receiver()
    with polymsg.get_transport(host[0].url(start_receiver="false")) as transport:
        server = _serve(transport)
        client = polymsg.RPCClient(transport, polymsg.Target(topic="work"), timeout=10)
        assert client.call({}, "echo", value=1) == 1

        valid = MAGIC + b'{"k":"rpc","x":"polymsg","t":"work","s":null,"ttl":null,"q":null}'
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 1000
        dealer.connect(f"tcp://127.0.0.1:{host[0].port}")
        for frames in ([b"junk"], [b"PZ9" + valid[3:], pack(b"{}")],
                       [MAGIC + b"{not json", pack(b"{}")],
                       [MAGIC + b'{"k":"rpc","x":"polymsg","t":"../../etc"}', pack(b"{}")],
                       [MAGIC + b'{"k":"boom","x":"polymsg","t":"work"}', pack(b"{}")],
                       [valid, pack(b"not a json body")], [valid, pack(b'{"i": 1}')],
                       [valid, b"\0\0\0\xffshort"]):
            dealer.send_multipart(frames)
        oversized = context.socket(zmq.DEALER)
        oversized.linger = 0
        oversized.connect(f"tcp://127.0.0.1:{host[0].port}")
        oversized.send_multipart([valid, b"x" * 100_000])  # above max_message_size
        dealer.close()
        oversized.close()
        context.term()
        assert [client.call({}, "echo", value=n) for n in range(3)] == list(range(3))
        assert receiver.malformed == 5
        with socket.create_connection(("127.0.0.1", host[0].port)) as raw:
            raw.sendall(os.urandom(65536))  # not ZMTP, or mangled ZMTP 1.0 at best

        assert [client.call({}, "echo", value=n) for n in range(5)] == list(range(5))
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert logged.count("dropped a malformed message on the TCP port") >= 5
        assert logged.count("malformed message on topic work") == 2  # logged by the facade
        assert logged.count("dropped a malformed message from the receiver") == 1
        server.stop()
        server.wait()


def test_ipc_dir_and_its_subdirectories_are_private() -> None:
    root = short_tmpdir()
    ipc = os.path.join(root, "ipc")
    os.makedirs(ipc)
    os.chmod(ipc, 0o755)  # too open: the driver tightens it
    try:
        url = f"zmq://127.0.0.1:{free_port()}/?ipc_dir={ipc}"
        with polymsg.get_transport(url) as transport:
            server = _serve(transport)
            for path in (ipc, os.path.join(ipc, "t"), os.path.join(ipc, "t", "polymsg")):
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
            server.stop()
            server.wait()
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("field,value", [("topic", "../../etc"), ("topic", "a/b"),
                                         ("topic", ".."), ("exchange", ".."),
                                         ("exchange", "x/../../y")])
def test_names_that_could_escape_the_ipc_dir_are_rejected(
        host: Hosts, field: str, value: str) -> None:
    # The facade refuses such names for every transport, before the driver sees them
    # (the driver's own check, validate_name, guards callers of the SPI).
    before = set(os.listdir(host.root))
    with polymsg.get_transport(host[0].url()) as transport:
        with pytest.raises(polymsg.InvalidTarget, match=field):
            polymsg.Target(**{"topic": "work", field: value})
        if field == "topic":
            with pytest.raises(polymsg.InvalidTarget, match="topic"):
                polymsg.Notifier(transport, "p", topics=[value])
        with pytest.raises(polymsg.InvalidTarget, match="cannot be used"):
            validate_name(value, field)
    assert set(os.listdir(host.root)) <= before | {"a"}
    for _dirpath, dirnames, filenames in os.walk(host.root):
        assert ".." not in dirnames + filenames


def test_another_transport_takes_over_when_the_in_process_receiver_goes(
        host: Hosts) -> None:
    url = host[0].url(heartbeat_interval="0.2")
    owner = polymsg.get_transport(url)
    serving = polymsg.get_transport(url)
    try:
        client = polymsg.RPCClient(owner, polymsg.Target(topic="work"), timeout=10)
        client.cast({}, "echo", value=0)  # first use: `owner` starts the receiver
        server = _serve(serving)
        assert client.call({}, "echo", value=1) == 1
        owner.cleanup()  # the receiver goes with it
        with polymsg.get_transport(url) as newcomer:
            late = polymsg.RPCClient(newcomer, polymsg.Target(topic="work"), timeout=10)
            assert late.call({}, "echo", value=2) == 2
        server.stop()
        server.wait()
    finally:
        owner.cleanup()
        serving.cleanup()


def _polymsg_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "polymsg")
    if not os.path.exists(script):
        pytest.fail("the polymsg console script is not installed next to this python")
    return [script]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_receiver_runs_until_signalled_and_cleans_up(host: Hosts, sig: int) -> None:
    url = host[0].url(start_receiver="false")
    process = subprocess.Popen([*_polymsg_command(), "zmq-receiver", "--url", url],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert "listening on tcp port" in first, first
        with polymsg.get_transport(url) as transport:  # services use the daemon
            server = _serve(transport)
            client = polymsg.RPCClient(transport, polymsg.Target(topic="work"), timeout=10)
            assert client.call({}, "echo", value="via daemon") == "via daemon"
            server.stop()
            server.wait()
        busy = ReceiverProcess(url)  # a second receiver for the same host refuses
        assert busy.process.wait(timeout=20) == 1
        assert "already serves" in "".join(busy.output)
        process.send_signal(sig)
        rest = process.communicate(timeout=10)[1]
        assert process.returncode == 0, rest
        assert "stopped" in rest
        assert not os.path.exists(os.path.join(host[0].ipc_dir, "control"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_rejects_a_bad_url(host: Hosts) -> None:
    result = subprocess.run([*_polymsg_command(), "zmq-receiver", "--url",
                             f"zmq://127.0.0.1:{free_port()}/?no_such_option=1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "no_such_option" in result.stderr


def test_cli_reads_a_config_file(host: Hosts) -> None:
    config = os.path.join(host.root, "polymsg.conf")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"[polymsg_zmq]\nhost = 127.0.0.1\nreceiver_port = {host[0].port}\n"
                     f"ipc_dir = {host[0].ipc_dir}\n")
    process = subprocess.Popen([*_polymsg_command(), "zmq-receiver", "--config-file", config],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert f"listening on tcp port {host[0].port}, IPC directory {host[0].ipc_dir}" \
            in first, first
        with polymsg.get_transport(host[0].url(start_receiver="false")) as transport:
            server = _serve(transport)
            client = polymsg.RPCClient(transport, polymsg.Target(topic="work"), timeout=10)
            assert client.call({}, "echo", value="configured") == "configured"
            server.stop()
            server.wait()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_large_casts_in_a_burst_all_arrive_and_too_large_ones_fail(host: Hosts) -> None:
    """Batches of posted casts stay under max_message_size (64 KiB here)."""
    received: list[int] = []
    done = threading.Event()

    class Sink:
        def take(self, ctxt: dict[str, Any], index: int, blob: str) -> None:
            received.append(index)
            if len(received) == 60:
                done.set()

    with polymsg.get_transport(host[0].url()) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic="big", server="s"),
                                        [Sink()])
        server.start()
        client = polymsg.RPCClient(transport, polymsg.Target(topic="big"), timeout=10)
        blob = "x" * 20_000
        for index in range(60):
            client.cast({}, "take", index=index, blob=blob)
        assert done.wait(20), f"{len(received)} of 60 casts arrived"
        assert sorted(received) == list(range(60))
        with pytest.raises(polymsg.MessageDeliveryFailure, match="max_message_size"):
            client.cast({}, "take", index=-1, blob="x" * 70_000)
        server.stop()
        server.wait()


class Gate:
    """Blocks on the first cast until opened; records every value, in order."""

    def __init__(self, expected: int) -> None:
        self.opened = threading.Event()
        self.blocked = threading.Event()
        self.all_done = threading.Event()
        self.expected = expected
        self.seen: list[int] = []

    def work(self, ctxt: dict[str, Any], value: int) -> None:
        if not self.seen:
            self.blocked.set()
            assert self.opened.wait(60)
        self.seen.append(value)  # one worker: no lock needed
        if len(self.seen) == self.expected:
            self.all_done.set()


def _wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not predicate():
            if deadline.wait(0.01):
                return bool(predicate())
        return True
    finally:
        timer.cancel()


def test_a_consumer_whose_workers_lag_gets_no_more_until_they_catch_up(
        host: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_consumer, "MAX_BACKLOG", 64)
    most = [0]
    deliver = _consumer.ZmqListener._deliver_now

    def watched(self: _consumer.ZmqListener, frames: list[bytes]) -> None:
        deliver(self, frames)
        most[0] = max(most[0], self._backlog)

    monkeypatch.setattr(_consumer.ZmqListener, "_deliver_now", watched)
    count = 3000
    gate = Gate(count)
    with polymsg.get_transport(host[0].url()) as transport:  # its own receiver, in-process
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic="gate", server="s"),
                                        [gate], max_workers=1)
        server.start()
        try:
            client = polymsg.RPCClient(transport, polymsg.Target(topic="gate"))
            for n in range(count):
                client.cast({}, "work", value=n)
            assert gate.blocked.wait(30)
            receiver = transport._driver._receiver  # type: ignore[attr-defined]
            state = receiver._topics[("polymsg", "gate")]
            # the receiver holds what the stuck consumer would not take...
            assert _wait_until(lambda: len(state.held) > 0)
        finally:
            gate.opened.set()
        # ...and hands all of it over, in order, once the worker catches up
        assert gate.all_done.wait(60)
        assert gate.seen == list(range(count))
        assert 64 <= most[0] <= 64 + 1024  # a batch may overshoot, never the whole lot
        server.stop()
        server.wait()
