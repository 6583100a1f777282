"""Helpers for polymsg-zmq's tests: simulated hosts on one machine.

A simulated host is a receiver port, an IPC directory and a host name
(``127.0.0.1``): tests give each its own, so routing between them goes over
real TCP and IPC sockets.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from oslo_config import cfg
from polymsg_zmq import Receiver, ZmqDriver
from polymsg_zmq._options import Settings, overlay, settings_from

import polymsg
from polymsg.driver import Driver, Listener, OnMessage, Reply, SendOptions, Target


def free_port() -> int:
    """A TCP port nothing listens on right now.

    Picked below Linux's ephemeral range (32768-60999), so that no other
    process's outgoing connection or port-0 bind takes it before the test's
    receiver binds it.
    """
    for _ in range(100):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free TCP port between 20000 and 32000")


def short_tmpdir() -> str:
    """A fresh directory with a short path (IPC socket paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix="pmz-", dir="/tmp")


def redis_url() -> str:
    """The test Redis server; fails (in CI) or skips (elsewhere) when it is not configured."""
    url = os.environ.get("POLYMSG_TEST_REDIS_URL")
    if not url:
        message = ("POLYMSG_TEST_REDIS_URL is not set: start Redis with scripts/services.sh "
                   "start and export what `scripts/services.sh env` prints")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@dataclass
class Host:
    """A simulated host: its URL and, when the test runs one, its receiver."""

    name: str
    port: int
    ipc_dir: str
    query: dict[str, str] = field(default_factory=dict)
    receiver: Receiver | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, **query: str) -> str:
        params = {"ipc_dir": self.ipc_dir, **self.query, **query}
        return f"zmq://127.0.0.1:{self.port}/?{urlencode(params)}"

    def settings(self, **query: str) -> Settings:
        parsed = polymsg.TransportURL.parse(self.url(**query))
        return settings_from(overlay(cfg.ConfigOpts(), parsed), parsed)

    def start_receiver(self) -> Receiver:
        """Start this host's receiver in the test process (on a new port should another
        process have taken this one since it was picked)."""
        assert self.receiver is None
        for _ in range(5):
            receiver = Receiver(self.settings())
            try:
                receiver.start()
            except polymsg.MessageDeliveryFailure as exc:
                if "cannot bind" not in str(exc):
                    raise
                self.port = free_port()
                continue
            self.receiver = receiver
            return receiver
        raise AssertionError(f"no free port for host {self.name}")

    def stop_receiver(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None


class Hosts:
    """Several simulated hosts sharing one matchmaker configuration."""

    def __init__(self, names: Sequence[str], **query: str) -> None:
        self.root = short_tmpdir()
        self.hosts = [Host(name, free_port(), os.path.join(self.root, name), dict(query))
                      for name in names]

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def write_ring(self, ring: dict[str, list[str]]) -> str:
        path = os.path.join(self.root, "ring.json")
        with open(path, "w", encoding="utf-8") as handle:
            import json
            json.dump(ring, handle)
        for host in self.hosts:
            host.query.update(matchmaker="ring", ring_file=path)
        return path

    def use_redis(self, ttl: float = 5.0) -> str:
        prefix = f"pmz-test-{uuid.uuid4().hex[:10]}"
        for host in self.hosts:
            host.query.update(matchmaker="redis", redis_url=redis_url(), redis_prefix=prefix,
                              matchmaker_ttl=str(ttl), matchmaker_cache="0.2")
        return prefix

    def start_receivers(self) -> None:
        for host in self.hosts:
            host.start_receiver()

    def close(self) -> None:
        for host in self.hosts:
            host.stop_receiver()
        shutil.rmtree(self.root, ignore_errors=True)


class SplitDriver(Driver):
    """Sends through one transport and listens through another: a client on one
    host talking to servers on another, inside one test process."""

    capabilities = ZmqDriver.capabilities
    send_features = ZmqDriver.send_features

    def __init__(self, sender: polymsg.Transport, listener: polymsg.Transport) -> None:
        super().__init__(sender.url, sender._driver.options, sender.conf)
        self.sender = sender
        self.listener = listener

    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        return self.sender._driver.call(target, ctxt, message, options)

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        return self.sender._driver.cast(target, ctxt, message, options)

    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        return self.sender._driver.notify(target, ctxt, message, options)

    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        return self.listener._driver.listen(target, on_message, queue_ttl=queue_ttl)

    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        return self.listener._driver.listen_for_notifications(targets_and_priorities, pool,
                                                              on_message)

    def cleanup(self) -> None:
        self.sender.cleanup()
        self.listener.cleanup()


def split_transport(sender_url: str, listener_url: str, conf: cfg.ConfigOpts | None,
                    **kwargs: Any) -> polymsg.Transport:
    """A transport sending from ``sender_url``'s host and listening on ``listener_url``'s."""
    sender = polymsg.get_transport(sender_url, conf=conf, **kwargs)
    listener = polymsg.get_transport(listener_url, conf=conf)
    driver = SplitDriver(sender, listener)
    return polymsg.Transport(driver, sender.conf, sender.url, sender.allowed_remote_exmods)


class ReceiverProcess:
    """``python -m polymsg_zmq`` for a host, in a child process (a real daemon)."""

    def __init__(self, url: str, *args: str) -> None:
        import queue
        import subprocess
        import sys
        import threading

        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "polymsg_zmq", "--url", url, "--log-level", "DEBUG", *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        assert self.process.stderr is not None
        stderr = self.process.stderr

        def pump() -> None:
            for line in stderr:
                self.output.append(line)
                self.lines.put(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def wait_for_line(self, text: str, timeout: float = 10.0) -> str:
        """The first line (from now on) containing ``text``; fails after ``timeout``."""
        import queue
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} line from the receiver; it said: "
                                     f"{''.join(self.output)}") from None
            if text in line:
                return line

    def stop(self, sig: int | None = None, timeout: float = 10.0) -> int:
        """Send ``sig`` (SIGTERM by default) and return the exit status."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
        code = self.process.wait(timeout)
        self._pump.join(timeout)
        return code


def wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (its last value)."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    never = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        never.wait(0.01)
    return True


def open_fds() -> int:
    """File descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


class RawSender:
    """A stranger on the network: a bare DEALER connected to a receiver's TCP port."""

    def __init__(self, port: int) -> None:
        import zmq

        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.linger = 2000
        self.sock.sndhwm = 0
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close()
        self.context.term()
