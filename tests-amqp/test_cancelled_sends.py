"""A cast or notification whose sender gave up before it was written is dropped at once.

Against an unreachable broker (a closed port) a send with ``retry=None``
waits for a connection for ever. Cancelling its future -- directly, or by
cancelling the ``polymsg.aio`` task awaiting it -- takes it out of the
confirm window at once, so ``cleanup()`` returns promptly instead of waiting
``confirm_flush_timeout`` (10 s) for it. With the broker up, what was written
before the future was cancelled is still delivered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest
from amqptest import make_url
from proxy import free_port

import polymsg
from polymsg import aio
from polymsg.driver import SendOptions

#: How long cleanup may take once the only pending send was cancelled (the
#: flush timeout is 10 s; generous for a loaded machine).
PROMPT = 2.5
#: How long the send is left waiting for the broker before it is abandoned.
PENDING = 0.5


def _in_flight(transport: polymsg.Transport) -> float:
    return sum(stat.value for stat in transport._driver.health()
               if stat.name == "confirm_window.in_flight")


def _timed_cleanup(transport: polymsg.Transport) -> float:
    started = time.monotonic()
    transport.cleanup()
    return time.monotonic() - started


def _driver_send(transport: polymsg.Transport, send: str,
                 topic: str) -> concurrent.futures.Future[None]:
    driver = transport._driver
    target = polymsg.Target(topic=topic, exchange="amqp-tests")
    options = SendOptions(retry=None)
    if send == "cast":
        return driver.cast(target, {}, {"method": "echo", "args": {}}, options)
    return driver.notify(target, {}, {"event_type": "amqp.test", "priority": "info",
                                      "payload": {}, "message_id": "m-1"}, options)


@pytest.mark.parametrize("send", ["cast", "notify"])
def test_a_cancelled_send_leaves_the_window_and_cleanup_returns_at_once(
        scheme: str, vhost: str, topic: str, send: str) -> None:
    transport = polymsg.get_transport(make_url(scheme, vhost, port=free_port()))
    try:
        future = _driver_send(transport, send, topic)
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=PENDING)  # retry=None: it waits for the broker
        assert _in_flight(transport) == 1
        assert future.cancel()
        assert _in_flight(transport) == 0
    finally:
        elapsed = _timed_cleanup(transport)
    assert elapsed < PROMPT


@pytest.mark.parametrize("send", ["cast", "notify"])
def test_an_abandoned_aio_send_does_not_hold_cleanup(scheme: str, vhost: str, topic: str,
                                                     send: str) -> None:
    transport = polymsg.get_transport(make_url(scheme, vhost, port=free_port()))

    async def main() -> None:
        if send == "cast":
            client = aio.RPCClient(transport, polymsg.Target(topic=topic), retry=None)
            pending = asyncio.create_task(client.cast({}, "echo"))
        else:
            notifier = aio.Notifier(transport, "amqp-tests", topics=[topic], retry=None)
            pending = asyncio.create_task(notifier.info({}, "amqp.test", {}))
        done, _ = await asyncio.wait([pending], timeout=PENDING * 2)
        assert not done
        pending.cancel()
        await asyncio.wait([pending])
        assert pending.cancelled()

    try:
        asyncio.run(main())
        deadline = time.monotonic() + PROMPT  # the cancellation reaches the driver's thread
        while _in_flight(transport) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _in_flight(transport) == 0
    finally:
        elapsed = _timed_cleanup(transport)
    assert elapsed < PROMPT


class _Sink:
    def __init__(self, expected: int) -> None:
        self.values: list[int] = []
        self.expected = expected
        self.all_in = threading.Event()
        self._lock = threading.Lock()

    def echo(self, ctxt: Any, value: int) -> None:
        with self._lock:
            self.values.append(value)
            if len(self.values) >= self.expected:
                self.all_in.set()


def test_cancelling_a_written_cast_drops_nothing(scheme: str, vhost: str, topic: str) -> None:
    """Casts already written (their futures done) are still delivered when their
    futures are cancelled afterwards, and cleanup waits for their confirms."""
    count = 50
    sink = _Sink(count)
    with polymsg.get_transport(make_url(scheme, vhost)) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                        [sink])
        server.start()
        try:
            client = polymsg.RPCClient(transport, polymsg.Target(topic=topic))
            client.cast({}, "echo", value=-1)  # connected and declared: later casts are written
            driver = transport._driver
            target = polymsg.Target(topic=topic, exchange=transport.default_exchange)
            futures = [driver.cast(target, {},
                                   {"method": "echo", "args": {"value": n}}, SendOptions())
                       for n in range(count - 1)]
            concurrent.futures.wait(futures, timeout=10)
            assert not any(future.cancel() for future in futures)  # done: not cancellable
            assert sink.all_in.wait(10)
        finally:
            server.stop()
            server.wait()
    assert sorted(sink.values) == list(range(-1, count - 1))
