"""An asyncio service on polymsg: an RPC server, a notification listener and
clients, all on one event loop, over any transport.

Run it with a transport URL (default ``memory://``)::

    python docs/examples/async_service.py rabbit://guest:guest@localhost:5672/
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

import polymsg
from polymsg import aio


class Inventory:
    """RPC endpoint: ``async def`` methods run on the loop, plain ones in a thread."""

    target = polymsg.Target(version="1.1")

    def __init__(self, notifier: aio.Notifier) -> None:
        self.notifier = notifier
        self.stock: dict[str, int] = {}

    async def add(self, ctxt: dict[str, Any], item: str, count: int) -> int:
        self.stock[item] = self.stock.get(item, 0) + count
        await self.notifier.info(ctxt, "inventory.added", {"item": item, "count": count})
        return self.stock[item]

    @polymsg.expected_exceptions(KeyError)
    async def take(self, ctxt: dict[str, Any], item: str) -> int:
        if self.stock.get(item, 0) < 1:
            raise KeyError(item)  # expected: reaches the caller, no traceback logged
        self.stock[item] -= 1
        return self.stock[item]

    def checksum(self, ctxt: dict[str, Any], text: str) -> str:
        # CPU work or a blocking library call: a plain method keeps it off the loop.
        return hashlib.sha256(text.encode()).hexdigest()


class Audit:
    """Notification endpoint: one method per priority it wants."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def info(self, ctxt: dict[str, Any], publisher_id: str, event_type: str,
                   payload: Any, metadata: dict[str, Any]) -> None:
        await self.seen.put((event_type, payload))


async def main(url: str = "memory://", topic: str = "inventory") -> list[Any]:
    """Serve, call and listen on ``url``; returns what happened, in order."""
    results: list[Any] = []
    with polymsg.get_transport(url) as transport:
        notifier = aio.Notifier(transport, "inventory.host-1", topics=[f"{topic}-events"])
        audit = Audit()
        server = aio.get_rpc_server(transport, polymsg.Target(topic=topic, server="host-1"),
                                    [Inventory(notifier)])
        listener = aio.get_notification_listener(
            transport, [polymsg.Target(topic=f"{topic}-events")], [audit])
        async with server, listener:
            client = aio.RPCClient(transport, polymsg.Target(topic=topic, version="1.1"),
                                   timeout=10)
            # Many calls in flight from one task: no thread per call.
            counts = await asyncio.gather(*(client.call({}, "add", item="bolt", count=1)
                                            for _ in range(10)))
            results.append(max(counts))
            results.append(await client.call({}, "take", item="bolt"))
            try:
                await client.call({}, "take", item="nut")
            except KeyError as exc:  # the server's exception, re-raised here
                results.append(f"KeyError {exc}")
            results.append(await client.call({}, "checksum", text="polymsg"))
            await client.cast({}, "add", item="nut", count=5)
            events = [await asyncio.wait_for(audit.seen.get(), 10) for _ in range(11)]
            results.append(sorted({payload["item"] for _, payload in events}))
            try:
                await client.prepare(topic=f"{topic}-nobody", timeout=0.5).call({}, "add")
            except polymsg.MessagingTimeout:
                results.append("timeout")
    return results


if __name__ == "__main__":
    for line in asyncio.run(main(*sys.argv[1:2])):
        print(line)
