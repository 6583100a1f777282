"""Stream fanout: a server that lost its connection resumes after the last message it got."""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import polymsg

from .conftest import DRIVERS, OPTION_SETS, RABBIT_URL, broker_url

WAIT = 20.0


def _proxy_module() -> ModuleType:
    # The TCP forwarder of the shared AMQP tests (real sockets, stop/start on one port).
    path = Path(__file__).resolve().parents[2] / "tests-amqp" / "proxy.py"
    spec = importlib.util.spec_from_file_location("polymsg_test_proxy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Seen:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self.grew = threading.Condition()

    def note(self, ctxt: Any, value: Any) -> None:
        with self.grew:
            self.values.append(value)
            self.grew.notify_all()

    def wait_for(self, count: int) -> list[Any]:
        with self.grew:
            self.grew.wait_for(lambda: len(self.values) >= count, WAIT)
            return list(self.values)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_reconnecting_stream_consumer_misses_nothing(driver: str, vhost: str) -> None:
    assert RABBIT_URL
    broker = polymsg.TransportURL.parse(RABBIT_URL).hosts[0]
    proxy = _proxy_module().Proxy(("127.0.0.1", broker.port)).start()
    query = (OPTION_SETS["quorum+stream"]
             + "&rabbit_retry_interval=0.5&rabbit_retry_backoff=0&rabbit_interval_max=0.5")
    server_url = (f"{driver}://guest:guest@127.0.0.1:{proxy.port}/{vhost}?{query}")
    topic = f"stream-{uuid.uuid4().hex[:8]}"
    seen = Seen()
    try:
        with polymsg.get_transport(server_url) as server_transport, \
                polymsg.get_transport(broker_url(driver, vhost, query)) as client_transport:
            server = polymsg.get_rpc_server(
                server_transport, polymsg.Target(topic=topic, server="s1"), [seen])
            fanout = polymsg.RPCClient(client_transport,
                                       polymsg.Target(topic=topic, fanout=True))
            with server:
                fanout.cast({}, "note", value="before")
                assert seen.wait_for(1) == ["before"]
                proxy.stop()  # the server's connection is cut, reconnects fail for now
                for value in ("gap-1", "gap-2"):
                    fanout.cast({}, "note", value=value)
                client_transport.cleanup()  # confirmed: the stream holds both
                time.sleep(1.0)  # the server keeps failing to reconnect meanwhile
                proxy.start()
                assert seen.wait_for(3) == ["before", "gap-1", "gap-2"]
    finally:
        proxy.stop()
