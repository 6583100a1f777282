"""The shipped conformance suite on real zmq sockets: one host, then routed between hosts.

* local matchmaker: client and servers on one host whose receiver the
  transport starts in-process on first use;
* ring file: the client on host A, every server on host B (``{"*": [B]}``);
* Redis: the client on host A, servers and listeners spread over hosts B and C.

For the last two each host runs its own receiver — host B of the ring run and
host C of the Redis run as ``python -m polymsg_zmq`` daemons (servers get
their messages over IPC), the others inside the test process (handing
messages straight to listeners) — and every transport the suite makes is a
client on host A whose servers and listeners live on another host (see
``zmqtest.SplitDriver``), so each message crosses hosts over TCP. The hosts
live for the whole class; every test has its own topics.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from polymsg_zmq import ZmqDriver
from zmqtest import Hosts, ReceiverProcess, free_port, short_tmpdir, split_transport

import polymsg
from polymsg.testing import AsyncConformance, ConformanceTests, Harness


class TestZmqLocalConformance(ConformanceTests):
    """One host, the local matchmaker, the receiver started in-process."""

    capabilities = ZmqDriver.capabilities

    @pytest.fixture
    def transport_url(self) -> Iterator[str]:
        self.root = short_tmpdir()
        try:
            yield f"zmq://127.0.0.1:{free_port()}/?ipc_dir={self.root}/ipc"
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def get_unreachable_url(self) -> str | None:
        return _unreachable_url(self.root)


def _unreachable_url(root: str) -> str:
    """A host whose ring file sends everything to a port nobody listens on."""
    ring = os.path.join(root, "unreachable-ring.json")
    with open(ring, "w", encoding="utf-8") as handle:
        json.dump({"*": [f"127.0.0.1:{free_port()}"]}, handle)
    query = urlencode({"ipc_dir": os.path.join(root, "unreachable"), "matchmaker": "ring",
                       "ring_file": ring, "retry_interval": "0.3"})
    return f"zmq://127.0.0.1:{free_port()}/?{query}"


class _SplitHarness(Harness):
    """Every transport is a client on the first host listening on one of the others."""

    def __init__(self, hosts: Hosts, listen_on: list[int], **kwargs: Any) -> None:
        self._hosts = hosts
        self._turn = itertools.cycle(listen_on)
        super().__init__(hosts[0].url(), **kwargs)

    def new_transport(self, url: str | None = None, **kwargs: Any) -> polymsg.Transport:
        if url is not None:
            return super().new_transport(url, **kwargs)
        listener = self._hosts[next(self._turn)]
        transport = split_transport(self._hosts[0].url(), listener.url(), self._conf_factory(),
                                    **kwargs)
        self._transports.append(transport)
        return transport


class _MultiHost(ConformanceTests):
    capabilities = ZmqDriver.capabilities
    listen_on: list[int] = [1]
    daemons: list[int] = []

    @classmethod
    def make_hosts(cls) -> Hosts:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def zmq_hosts(cls) -> Iterator[Hosts]:
        hosts = cls.make_hosts()
        processes = []
        try:
            for index, host in enumerate(hosts.hosts):
                if index in cls.daemons:
                    processes.append(ReceiverProcess(host.url()))
                else:
                    host.start_receiver()
            for process in processes:
                process.wait_for_line("listening")
            yield hosts
        finally:
            for process in processes:
                process.stop()
            hosts.close()

    @pytest.fixture
    def transport_url(self, zmq_hosts: Hosts) -> str:
        self.root = zmq_hosts.root
        return zmq_hosts[0].url()

    def get_unreachable_url(self) -> str | None:
        return _unreachable_url(self.root)

    @pytest.fixture
    def harness(self, zmq_hosts: Hosts) -> Iterator[Harness]:
        self.root = zmq_hosts.root
        harness = _SplitHarness(zmq_hosts, self.listen_on, conf_factory=self.make_conf,
                                wait_timeout=self.wait_timeout)
        try:
            yield harness
        finally:
            harness.close()


class TestZmqRingConformance(_MultiHost):
    """Client on host A, servers on host B (a daemon receiver), routed by a ring file."""

    daemons = [1]

    @pytest.fixture
    def transport_url(self, zmq_hosts: Hosts) -> str:
        self.root = zmq_hosts.root
        return zmq_hosts[1].url()  # where the ring sends everything

    @classmethod
    def make_hosts(cls) -> Hosts:
        hosts = Hosts(["a", "b"], start_receiver="false")
        hosts.write_ring({"*": [hosts[1].address]})
        return hosts


class TestZmqRedisConformance(_MultiHost):
    """Client on host A, servers spread over hosts B and C (a daemon receiver), found
    through Redis."""

    listen_on = [1, 2]
    daemons = [2]

    @classmethod
    def make_hosts(cls) -> Hosts:
        hosts = Hosts(["a", "b", "c"], start_receiver="false")
        hosts.use_redis()
        return hosts


class TestZmqLocalAioConformance(AsyncConformance, TestZmqLocalConformance):
    """The same scenarios through polymsg.aio."""
