"""A TCP forwarder in front of the test broker, optionally terminating TLS.

Tests use it to make the broker unreachable and reachable again on one
address (``stop()``/``start()`` on the same port), to freeze connections for
a while (``hold()``/``release()``: bytes wait in the proxy, in both
directions, as with a paused broker), to cut every connection shortly after
it opens (``cut_after``: a broker that accepts, then drops the client), and
to put TLS in front of a RabbitMQ that listens in plain text. It runs real
sockets on threads; no part of the driver is replaced.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import subprocess
import threading
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed_certificate(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """A certificate naming only ``hostname`` (not its address), and its key, by openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


def _cut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``target``; ``tls`` terminates TLS first."""

    def __init__(self, target: tuple[str, int], port: int | None = None,
                 tls: ssl.SSLContext | None = None, cut_after: float | None = None) -> None:
        self.target = target
        self.cut_after = cut_after
        self.port = port or free_port()
        self.tls = tls
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def hold(self) -> None:
        """Keep what either side sends from here on inside the proxy until :meth:`release`."""
        self._flowing.clear()

    def release(self) -> None:
        """Forward again, starting with what was held."""
        self._flowing.set()

    def start(self) -> Proxy:
        """Listen (again) on ``port``."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def stop(self) -> None:
        """Stop listening and cut every forwarded connection."""
        self.release()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,  # type: ignore[arg-type]
                                  name="test-proxy")
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.target, timeout=5)
        except (OSError, ssl.SSLError):
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        if self.cut_after is not None:
            timer = threading.Timer(self.cut_after, _cut, (client, upstream))
            timer.daemon = True
            timer.start()
        self._pump(client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in selector.select():
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    self._flowing.wait()
                    key.data.sendall(data)
                    # TLS may hold decrypted bytes select() cannot see.
                    while isinstance(source, ssl.SSLSocket) and source.pending():
                        key.data.sendall(source.recv(65536))
        except (OSError, ssl.SSLError):
            return
        finally:
            selector.close()
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
