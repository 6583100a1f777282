"""polymsg for asyncio: the same API, awaited, over the same transports.

::

    from polymsg import aio

    client = aio.RPCClient(transport, polymsg.Target(topic="compute"))
    result = await client.call({}, "add", a=1, b=2)

    async with aio.get_rpc_server(transport, target, [Endpoint()]):
        ...

The transport is the one :func:`polymsg.get_transport` returns; sync and
async clients and servers may share it. Timeouts raise
:class:`polymsg.MessagingTimeout`.
"""

from polymsg.aio._client import Notifier, RPCClient
from polymsg.aio._server import (
    NotificationListener,
    RPCServer,
    get_notification_listener,
    get_rpc_server,
)

__all__ = [
    "NotificationListener",
    "Notifier",
    "RPCClient",
    "RPCServer",
    "get_notification_listener",
    "get_rpc_server",
]
