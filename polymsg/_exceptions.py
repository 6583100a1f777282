"""polymsg's exception tree.

Every error polymsg raises derives from :class:`MessagingError`::

    MessagingError
    ├── MessagingTimeout
    ├── MessageDeliveryFailure
    │   └── MessageUndeliverable
    ├── InvalidTarget               (also ValueError)
    ├── InvalidTransportURL         (also ValueError)
    ├── DriverLoadFailure
    ├── NotSupported
    ├── SerializationError          (also TypeError)
    ├── RemoteError
    │   ├── NoSuchMethod            (also AttributeError)
    │   └── UnsupportedVersion
    └── RPCVersionCapError

Each class takes the human-readable message as its first argument, so an
instance rebuilt from the wire (``cls(message)``) reads the same as the
original. Errors of broker client libraries are translated into this tree at
the driver boundary and kept on ``__cause__``.
"""

from __future__ import annotations


class MessagingError(Exception):
    """Root of every error polymsg raises."""


class MessagingTimeout(MessagingError):
    """A call got no reply within its timeout."""


class MessageDeliveryFailure(MessagingError):
    """The transport could not accept a message (retries exhausted, broker refusal)."""


class MessageUndeliverable(MessageDeliveryFailure):
    """No queue took the message (a send with ``TransportOptions(at_least_once=True)``
    to a topic or server nobody has subscribed to). ``exchange`` and
    ``routing_key`` say where it was sent, when the transport knows."""

    def __init__(self, message: str = "", exchange: str | None = None,
                 routing_key: str | None = None) -> None:
        super().__init__(message)
        self.exchange = exchange
        self.routing_key = routing_key


class InvalidTarget(MessagingError, ValueError):
    """A target lacks what the operation needs (topic, server) or asks the impossible."""


class InvalidTransportURL(MessagingError, ValueError):
    """A transport URL could not be parsed, is missing, or carries an unknown option."""


class DriverLoadFailure(MessagingError):
    """The driver named by a transport URL is not installed or failed to load."""


class NotSupported(MessagingError):
    """The transport's driver does not declare the capability an operation needs."""


class SerializationError(MessagingError, TypeError):
    """A value is not JSON-encodable (after the serializer), or bytes are not valid JSON."""


class RemoteError(MessagingError):
    """A server-side exception whose class may not be re-created on the client.

    ``exc_type`` is the remote class name, ``value`` its message and
    ``traceback`` the remote traceback text.
    """

    def __init__(self, exc_type: str = "", value: str = "", traceback: str = "") -> None:
        self.exc_type = exc_type
        self.value = value
        self.traceback = traceback
        super().__init__(exc_type, value, traceback)

    def __str__(self) -> str:
        return f"Remote error: {self.exc_type} {self.value}\n{self.traceback}".rstrip()


class _DispatchError(RemoteError):
    """A request the server could not dispatch. Raised by the server, seen by the
    caller: also a :class:`RemoteError` (``exc_type`` is the class name), as
    oslo.messaging callers catch it."""

    def __init__(self, message: str = "", *args: object) -> None:
        Exception.__init__(self, message, *args)
        self.exc_type = type(self).__name__
        self.value = str(message)

    @property
    def traceback(self) -> str:  # the server's, once rebuilt by the caller
        return str(getattr(self, "remote_traceback", "") or "")

    @traceback.setter
    def traceback(self, text: str) -> None:
        self.remote_traceback = text

    def __str__(self) -> str:
        return self.value


class NoSuchMethod(_DispatchError, AttributeError):
    """The server's endpoints expose no method of that name (or it is private)."""


class UnsupportedVersion(_DispatchError):
    """No endpoint of the requested namespace is compatible with the requested version."""


class RPCVersionCapError(MessagingError):
    """The client asked for a version above its ``version_cap``."""
