"""--exchange on the CLI commands that send or listen."""

from __future__ import annotations

import queue
import threading
import uuid

import pytest
from click.testing import CliRunner, Result

import polymsg
from polymsg import cli
from polymsg._cli.ops import EchoEndpoint


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=True)


@pytest.mark.parametrize("command", ["call", "cast", "notify", "listen", "serve-echo"])
def test_every_sending_or_listening_command_takes_exchange(command: str) -> None:
    assert "--exchange" in run(command, "--help").output


def test_notify_and_listen_on_an_exchange() -> None:
    url = f"memory://cli-exchange-{uuid.uuid4().hex[:8]}"
    assert run("notify", url, "notifications", "info", "other.event", '{"n": 0}',
               "--exchange", "elsewhere").exit_code == 0
    assert run("notify", url, "notifications", "info", "compute.instance.create.end",
               '{"n": 1}', "--exchange", "compute").exit_code == 0
    result = run("listen", url, "notifications", "--exchange", "compute", "--count", "1",
                 "--json")
    assert result.exit_code == 0, result.output
    assert "compute.instance.create.end" in result.output
    assert "other.event" not in result.output


# One CliRunner at a time: it swaps the process's sys.stdout, so two running
# at once in two threads capture each other's output. The other end of each
# exchange test is therefore the library.

def test_call_on_an_exchange() -> None:
    url = f"memory://cli-exchange-{uuid.uuid4().hex[:8]}"
    with polymsg.get_transport(url) as transport:
        target = polymsg.Target(topic="echo", server="s1", exchange="compute")
        endpoint = EchoEndpoint("s1", queue.Queue())
        with polymsg.get_rpc_server(transport, target, [endpoint]):
            result = run("call", url, "echo", "ping", "--exchange", "compute", "--timeout", "30")
            missed = run("call", url, "echo", "ping", "--timeout", "2")
    assert result.exit_code == 0, result.output
    assert "pong from s1" in result.output
    assert missed.exit_code == 1, missed.output  # nothing serves the default exchange
    assert "timed out" in missed.output


def test_serve_echo_on_an_exchange() -> None:
    url = f"memory://cli-exchange-{uuid.uuid4().hex[:8]}"
    served: list[Result] = []
    with polymsg.get_transport(url) as transport:
        server = threading.Thread(target=lambda: served.append(
            run("serve-echo", url, "echo", "s1", "--exchange", "compute", "--max-requests", "1")))
        server.start()
        try:
            client = polymsg.RPCClient(
                transport, polymsg.Target(topic="echo", exchange="compute"), timeout=30)
            assert client.call({}, "ping") == "pong from s1"
        finally:
            server.join(60)
    assert served and served[0].exit_code == 0, served
    assert "ping" in served[0].output
