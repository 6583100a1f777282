"""polymsg: one RPC and notification API over interchangeable transports.

Users import only this package; see ``docs/`` for the tour. Driver authors
use :mod:`polymsg.driver`, tests use :mod:`polymsg.testing` and config
tools use :mod:`polymsg.opts`.
"""

from polymsg._dispatcher import expected_exceptions
from polymsg._exceptions import (
    DriverLoadFailure,
    InvalidTarget,
    InvalidTransportURL,
    MessageDeliveryFailure,
    MessageUndeliverable,
    MessagingError,
    MessagingTimeout,
    NoSuchMethod,
    NotSupported,
    RemoteError,
    RPCVersionCapError,
    SerializationError,
    UnsupportedVersion,
)
from polymsg._listener import (
    BatchNotificationListener,
    NotificationFilter,
    NotificationListener,
    NotificationResult,
    get_batch_notification_listener,
    get_notification_listener,
)
from polymsg._notifier import LoggingNotificationHandler, Notifier
from polymsg._rpc_client import RPCClient, TransportOptions
from polymsg._rpc_server import RPCServer, get_rpc_server
from polymsg._serializer import NoOpSerializer, Serializer
from polymsg._target import Target
from polymsg._transport import Transport, get_transport
from polymsg._url import TransportHost, TransportURL

__version__ = "0.1.0"

__all__ = [
    "BatchNotificationListener",
    "DriverLoadFailure",
    "InvalidTarget",
    "InvalidTransportURL",
    "LoggingNotificationHandler",
    "MessageDeliveryFailure",
    "MessageUndeliverable",
    "MessagingError",
    "MessagingTimeout",
    "NoOpSerializer",
    "NoSuchMethod",
    "NotSupported",
    "NotificationFilter",
    "NotificationListener",
    "NotificationResult",
    "Notifier",
    "RPCClient",
    "RPCServer",
    "RPCVersionCapError",
    "RemoteError",
    "SerializationError",
    "Serializer",
    "Target",
    "Transport",
    "TransportHost",
    "TransportOptions",
    "TransportURL",
    "UnsupportedVersion",
    "expected_exceptions",
    "get_batch_notification_listener",
    "get_notification_listener",
    "get_rpc_server",
    "get_transport",
]
