"""A receiver daemon killed mid-stream: every cast that returned arrives or is named.

The client sends casts as fast as it can to a server on a host whose
receiver is a daemon; the daemon is killed (SIGKILL) part way and started
again. Each cast that returned without error must then have run on the
server, or have its message id in the sender's warning about the lost
connection. The test prints what was lost (the README's figure).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from typing import Any

import pytest
from zmqtest import Hosts, ReceiverProcess, wait_until

import polymsg


class Counter:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.lock = threading.Lock()

    def note(self, ctxt: dict[str, Any], value: int) -> None:
        with self.lock:
            self.seen.add(value)


@pytest.mark.parametrize("kill_after", [20_000])
def test_casts_lost_in_a_receiver_crash_are_named_by_the_sender(
        kill_after: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="polymsg_zmq")
    hosts = Hosts(["a"], start_receiver="false", heartbeat_interval="0.2")
    url = hosts[0].url()
    daemon = ReceiverProcess(url)
    daemon.wait_for_line("listening")
    server_transport = polymsg.get_transport(url)
    client_transport = polymsg.get_transport(url)
    counter = Counter()
    server = polymsg.get_rpc_server(server_transport,
                                    polymsg.Target(topic="crash", server="s"), [counter])
    try:
        server.start()
        client = polymsg.RPCClient(client_transport, polymsg.Target(topic="crash"))
        driver: Any = client_transport._driver
        prefix = driver._id_prefix
        total = kill_after + 20_000
        returned: list[int] = []
        for value in range(total):
            if value == kill_after:
                daemon.stop(signal.SIGKILL)
                daemon = ReceiverProcess(url)
            client.cast({}, "note", value=value)  # waits while no receiver listens
            returned.append(value)
        assert wait_until(lambda: len(counter.seen) >= total - 20_000 and
                          counter.seen.issuperset(range(total - 100, total)), 60)
        wait_until(lambda: False, 1.0)  # stragglers
        missing = sorted(set(returned) - counter.seen)
        named = {int(i) for record in caplog.records
                 for i in re.findall(rf"{re.escape(prefix)}\.(\d+)", record.getMessage())
                 if "may not have been delivered" in record.getMessage()}
        print(f"\n{len(returned)} casts returned, {len(missing)} lost in the crash, "
              f"{len(named)} named as possibly lost")
        assert set(missing) <= named, f"lost without a warning: {sorted(set(missing) - named)}"
    finally:
        server.stop()
        server.wait()
        client_transport.cleanup()
        server_transport.cleanup()
        daemon.stop()
        hosts.close()
