"""CURVE encryption and authentication between hosts.

Server sockets (a receiver's TCP port, a caller's reply socket) use this
host's secret key and accept only clients whose public key is authorized,
checked by a ZAP handler in the socket's context. Client sockets present
this host's key pair and expect the peers' server key.
"""

from __future__ import annotations

import logging

import zmq
from zmq.utils import z85

from polymsg_zmq._options import CurveKeys
from polymsg_zmq._ratelog import RateLimited, clip

__all__ = ["ZapHandler", "keypair", "make_client", "make_server"]

LOG = logging.getLogger(__name__)
_REFUSED = RateLimited(LOG, "zmq: connections refused by CURVE")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


#: Z85 characters a key must not contain: oslo.config reads ``$`` as the start of a
#: variable (``$name`` or ``${name}``), so such a key would not read back as written.
_AWKWARD = frozenset("$")


def keypair() -> tuple[str, str]:
    """A new CURVE key pair ``(public, secret)`` in Z85, neither containing ``$``.

    About 38% of pairs hold a ``$`` somewhere; those are drawn again.
    """
    while True:
        public, secret = (key.decode("ascii") for key in zmq.curve_keypair())
        if not _AWKWARD.intersection(public + secret):
            return public, secret


def make_server(sock: zmq.Socket[bytes], keys: CurveKeys | None) -> None:
    """Turn ``sock`` into a CURVE server (before it binds)."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret.encode("ascii")
    sock.curve_publickey = keys.public.encode("ascii")
    sock.curve_server = True
    sock.zap_domain = b"polymsg"


def make_client(sock: zmq.Socket[bytes], keys: CurveKeys | None) -> None:
    """Turn ``sock`` into a CURVE client (before it connects)."""
    if keys is None:
        return
    sock.curve_serverkey = keys.server.encode("ascii")
    sock.curve_publickey = keys.public.encode("ascii")
    sock.curve_secretkey = keys.secret.encode("ascii")


class ZapHandler:
    """Answers ZAP requests of one context: CURVE clients with an authorized key pass.

    Poll :attr:`socket` for ``POLLIN`` and call :meth:`handle`.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys: CurveKeys) -> None:
        self._authorized = {z85.decode(key.encode("ascii")) for key in keys.authorized}
        self.socket: zmq.Socket[bytes] = context.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)

    def handle(self) -> None:
        """Answer every pending request."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 6:
                _REFUSED.log("zmq: malformed ZAP request ignored")
                self.socket.send_multipart([b"1.0", b"", b"500", b"malformed", b"", b""])
                continue
            request_id, address, mechanism = frames[1], frames[3], frames[5]
            key = frames[6] if len(frames) > 6 else b""
            allowed = mechanism == b"CURVE" and key in self._authorized
            if not allowed:
                _REFUSED.log("zmq: refused a %s connection from %s: key not authorized",
                             clip(mechanism), clip(address))
            status = (b"200", b"OK") if allowed else (b"400", b"not authorized")
            self.socket.send_multipart([b"1.0", request_id, *status, b"", b""])

    def close(self) -> None:
        """Close the handler's socket."""
        self.socket.close(linger=0)
