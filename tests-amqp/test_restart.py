"""A real broker restart (``stop_app`` / ``start_app``) in the middle of a stream of
casts, on both RabbitMQ drivers.

The shared test broker cannot be restarted without disturbing everyone else
on it, so this module starts a RabbitMQ node of its own (same installation,
its own port, directories and Erlang cookie) and restarts that one. Queues
are durable and messages persistent here (``amqp_durable_queues=true``), as
a deployment that wants messages to outlive a broker restart sets them.

The node runs the system's RabbitMQ, the same in the test command's pass against
the RabbitMQ 4.x node, so that pass skips it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqptest import FAST_RETRY, CastStream, Worker
from proxy import free_port

import polymsg

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("POLYMSG_TEST_RABBIT_VERSION")),
    reason="starts the system's RabbitMQ, tested in the pass against it")

RABBIT_BIN = Path(os.environ.get("POLYMSG_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
WAIT = 60.0


class Node:
    """A private RabbitMQ node under ``base``, listening on 127.0.0.1:``port``."""

    def __init__(self, base: Path, port: int) -> None:
        self.port = port
        self.env = dict(os.environ)
        self.env.update({
            "HOME": str(base),
            "RABBITMQ_NODENAME": f"polymsgrestart{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(port + 20000),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        (base / "log").mkdir(parents=True)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(
            f"loopback_users = none\nlisteners.tcp.default = 127.0.0.1:{port}\n")
        self.process: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str, timeout: float = WAIT) -> None:
        done = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-q", *args], env=self.env,
                              capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.decode()}")

    def start(self) -> None:
        log = open(Path(self.env["RABBITMQ_LOG_BASE"]) / "console.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        # await_startup fails at once while the node is not even registered
        # yet; it waits (up to its timeout) once the node exists.
        for _ in range(60):
            if self.process.poll() is not None:
                raise RuntimeError(f"the private RabbitMQ node exited: {self.console()}")
            try:
                self.ctl("await_startup", "--timeout", "10", timeout=30)
                return
            except RuntimeError:
                continue
        raise RuntimeError(f"the private RabbitMQ node did not start: {self.console()}")

    def console(self) -> str:
        path = Path(self.env["RABBITMQ_LOG_BASE"]) / "console.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.ctl("stop")
            self.process.wait(30)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(30)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.fail(f"no RabbitMQ installation at {RABBIT_BIN} (set POLYMSG_RABBITMQ_BIN); "
                    "scripts/services.sh start installs it")
    port = free_port()
    while port + 20000 > 65535:
        port = free_port()
    base = tmp_path_factory.mktemp("rabbit")
    node = Node(base, port)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_broker_restart_mid_stream(scheme: str, node: Node,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    url = (f"{scheme}://guest:guest@127.0.0.1:{node.port}/"
           f"?amqp_durable_queues=true&{FAST_RETRY}")
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    worker = Worker()
    with polymsg.get_transport(url) as server_transport, \
            polymsg.get_transport(url) as client_transport:
        server = polymsg.get_rpc_server(server_transport,
                                        polymsg.Target(topic=topic, server="s1"), [worker])
        client = polymsg.RPCClient(client_transport, polymsg.Target(topic=topic), timeout=WAIT)
        with server, CastStream(client) as stream:
            stream.at_least(100, WAIT)
            node.ctl("stop_app")
            node.ctl("start_app")
            # The stream goes on by itself once the broker is back, and no cast raises.
            stream.at_least(len(stream.returned.events) + 100, WAIT)
            returned = stream.stop(WAIT)
            assert client.call({}, "echo", value="after") == "after"
            worker.values.wait_for(lambda seen: set(returned) <= set(seen), WAIT,
                                   "every cast that returned to run")
    # The restart was seen (and logged) as lost connections.
    assert any(r.name.startswith("polymsg") and "lost" in r.getMessage()
               for r in caplog.records)
