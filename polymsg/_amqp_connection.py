"""How both RabbitMQ drivers connect, retry and give up: one policy, no broker client.

A driver turns its transport URL and options into a :class:`ConnectionSpec`
(hosts, credentials, virtual host, TLS, heartbeat), asks a :class:`Reconnect`
which host to try next and how long to wait, and reports every failure as
a :class:`Failure` built by :func:`classify`. The rules, the same for
``rabbit+kombu`` and ``rabbit+pika``:

Permanent failures
    The broker refused the login (ACCESS_REFUSED), the virtual host is
    missing or not permitted (NOT_ALLOWED), the TLS handshake failed, or the
    broker closed the connection with an error code (a declaration or
    command it refuses). Retrying cannot help: whoever waits for the
    connection gets :class:`~polymsg.MessageDeliveryFailure` at once,
    naming the host and the broker's reason.

Transient failures
    Connection refused, a name that does not resolve, a timeout (broker
    down, overloaded or paused), a connection the broker closed while
    shutting down (CONNECTION_FORCED), and a connection that dies within
    :data:`QUICK_DEATH` seconds of opening. Attempts are retried: one round
    tries every host once, in the URL's order from the host that worked
    last (``round-robin``) or shuffled (``shuffle``); after the n-th failed
    round the next round waits ``rabbit_retry_interval + rabbit_retry_backoff
    * (n - 1)`` seconds, at most ``rabbit_interval_max``, minus up to a fifth
    at random (jitter, so clients of a restarted broker do not return in
    step). A sender gives up after ``retry`` failed rounds (``None``: never)
    or at its deadline (a call's timeout), whichever comes first, with the
    same :class:`~polymsg.MessageDeliveryFailure`.

Passwords never appear in errors or logs: hosts are named ``host:port``.
"""

from __future__ import annotations

import enum
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from polymsg._exceptions import InvalidTransportURL, MessageDeliveryFailure
from polymsg._health_amqp import enlist
from polymsg._url import TransportHost, TransportURL

if TYPE_CHECKING:
    from polymsg.driver import DriverOptions

__all__ = [
    "QUICK_DEATH",
    "ConnectionSpec",
    "Endpoint",
    "Failure",
    "Kind",
    "Reconnect",
    "TLSSpec",
    "classify",
    "connection_error",
    "give_up_reason",
]

#: A connection lost within this many seconds of opening counts as a failed
#: attempt (a broker that accepts the login, then refuses what follows, must
#: not be reconnected to in a tight loop).
QUICK_DEATH = 2.0
#: Fraction of a backoff wait taken off at random.
JITTER = 0.2

#: AMQP reply codes: connection closes that retrying cannot fix.
ACCESS_REFUSED = 403
NOT_FOUND = 404
PRECONDITION_FAILED = 406
NOT_ALLOWED = 530
CONNECTION_FORCED = 320
#: Reply codes that say the broker is going away or overloaded (retry).
_TRANSIENT_CODES = frozenset({CONNECTION_FORCED, 506, 541})


class Kind(enum.Enum):
    """Whether retrying a failed connection can help."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class Failure:
    """One failed connection attempt or lost connection, classified.

    ``host`` is ``host:port`` (never credentials); ``reason`` the broker's
    or the system's words.
    """

    kind: Kind
    host: str
    reason: str
    cause: BaseException | None = field(default=None, compare=False)

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help."""
        return self.kind is Kind.PERMANENT

    def __str__(self) -> str:
        return f"{self.host}: {self.reason}"


def classify(exc: BaseException | None, host: str, *, reply_code: int | None = None,
             reason: str | None = None, auth_refused: bool = False) -> Failure:
    """Classify a failure of the connection to ``host``.

    Drivers pass what their library knows: the AMQP ``reply_code`` of a
    connection the broker closed (or ``None``), the broker's ``reason``
    text, and ``auth_refused`` when the library recognised a refused login
    by other means (a connection closed during the handshake).
    """
    text = reason or _describe(exc)
    if auth_refused:
        return Failure(Kind.PERMANENT, host, text, exc)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Failure(Kind.PERMANENT, host, f"TLS handshake failed: {text}", exc)
    if reply_code is not None and reply_code not in _TRANSIENT_CODES:
        return Failure(Kind.PERMANENT, host, text, exc)
    if reply_code == 541 and "deprecated" in text.lower():
        # RabbitMQ 4.x refusing a deprecated feature (transient non-exclusive
        # queues, global QoS) with INTERNAL_ERROR: retrying cannot help.
        return Failure(Kind.PERMANENT, host, text, exc)
    return Failure(Kind.TRANSIENT, host, text, exc)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is RabbitMQ running and listening on that port?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out (is the broker overloaded, paused or firewalled?)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def connection_error(failure: Failure | None, *, what: str = "", gave_up: str = "",
                     hosts: str = "") -> MessageDeliveryFailure:
    """The :class:`~polymsg.MessageDeliveryFailure` a sender gets for ``failure``.

    ``what`` names the operation (``"the call of 'ping'"``); ``gave_up`` says
    why a transient failure was not retried further (``"after 2 retries"``);
    ``hosts`` names the hosts tried when no attempt has ended yet.
    """
    prefix = f"{what} failed: " if what else ""
    if failure is None:
        where = f" at {hosts}" if hosts else ""
        tail = f" ({gave_up})" if gave_up else ""
        return MessageDeliveryFailure(
            f"{prefix}cannot connect to RabbitMQ{where}: no answer yet{tail}")
    if failure.permanent:
        text = f"{prefix}RabbitMQ at {failure.host} refused: {failure.reason}"
    else:
        text = f"{prefix}cannot connect to RabbitMQ at {failure.host}: {failure.reason}"
        if gave_up:
            text += f" ({gave_up})"
    error = MessageDeliveryFailure(text)
    error.__cause__ = failure.cause
    return error


# -- the connection spec ---------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One host of the URL, with the credentials to log in there."""

    hostname: str
    port: int
    username: str
    password: str = field(repr=False)

    @property
    def label(self) -> str:
        """``host:port``, for logs and errors."""
        return f"{self.hostname}:{self.port}"


@dataclass(frozen=True)
class TLSSpec:
    """TLS settings (``ssl_*`` options); :meth:`context` builds the client context."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify: bool = True
    verify_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client :class:`ssl.SSLContext`; a missing or unreadable file raises
        :class:`~polymsg.InvalidTransportURL` naming it."""
        if self.key_file and not self.cert_file:
            raise InvalidTransportURL("ssl_key_file is set but ssl_cert_file is not")
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif not self.verify_hostname:
                context.check_hostname = False
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidTransportURL(f"cannot set up TLS from the ssl_* options: {exc}") from exc
        return context


@dataclass(frozen=True)
class ConnectionSpec:
    """Everything needed to open a connection, whatever the client library."""

    endpoints: tuple[Endpoint, ...]
    virtual_host: str
    heartbeat: int
    connect_timeout: float
    login_method: str
    tls: TLSSpec | None
    retry_interval: float
    retry_backoff: float
    interval_max: float
    shuffle: bool

    @classmethod
    def from_url(cls, url: TransportURL, options: DriverOptions) -> ConnectionSpec:
        """The spec a transport URL and the RabbitMQ options describe.

        A URL without a user logs in as ``guest``/``guest`` (RabbitMQ's
        default account); a user without a password gets an empty one.
        """
        tls = _tls(options)
        default_port = 5671 if tls is not None else 5672
        endpoints = tuple(_endpoint(host, default_port)
                          for host in (url.hosts or (TransportHost(),)))
        return cls(
            endpoints=endpoints,
            virtual_host=url.virtual_host or "/",
            heartbeat=int(options.get("heartbeat_timeout_threshold", 60)),
            connect_timeout=float(options.get("connect_timeout", 5.0)),
            login_method=str(options.get("rabbit_login_method", "AMQPLAIN")),
            tls=tls,
            retry_interval=float(options.get("rabbit_retry_interval", 1.0)),
            retry_backoff=float(options.get("rabbit_retry_backoff", 2.0)),
            interval_max=float(options.get("rabbit_interval_max", 30.0)),
            shuffle=options.get("kombu_failover_strategy", "round-robin") == "shuffle",
        )

    @property
    def hosts_label(self) -> str:
        """Every host, ``host:port, host:port``."""
        return ", ".join(e.label for e in self.endpoints)

    def backoff(self, failed_rounds: int, *, jitter: bool = True) -> float:
        """Seconds to wait after ``failed_rounds`` failed rounds in a row (>= 1)."""
        wait = self.retry_interval + self.retry_backoff * max(0, failed_rounds - 1)
        wait = max(0.0, min(wait, self.interval_max))
        if jitter:
            wait -= wait * JITTER * random.random()
        return wait


def _endpoint(host: TransportHost, default_port: int) -> Endpoint:
    username = host.username if host.username is not None else "guest"
    password = host.password if host.password is not None else (
        "guest" if host.username is None else "")
    return Endpoint(host.hostname or "localhost", host.port or default_port, username, password)


def _tls(options: DriverOptions) -> TLSSpec | None:
    if not options.get("ssl", False):
        return None
    spec = TLSSpec(ca_file=str(options.get("ssl_ca_file") or ""),
                   cert_file=str(options.get("ssl_cert_file") or ""),
                   key_file=str(options.get("ssl_key_file") or ""),
                   verify=bool(options.get("ssl_verify", True)),
                   verify_hostname=bool(options.get("ssl_enforce_hostname_verification", True)))
    spec.context()  # bad files are the user's error now, not a retry loop later
    return spec


# -- reconnecting ------------------------------------------------------------------------

class Reconnect:
    """Connection-attempt bookkeeping of one link (used under the owner's lock or
    on its one I/O thread).

    The owner asks :meth:`next_endpoint` what to try, and reports the result
    with :meth:`failed` (returning how long to wait before the next attempt),
    :meth:`opened` and :meth:`lost`. ``failed_rounds`` counts rounds failed
    since the last connection that lived; waiting senders compare it with
    their ``retry`` budget.

    It also keeps the link's health (``role`` names the link: "publisher",
    "consumer"...): whether it is open, how often it opened and failed. A
    Reconnect made while a RabbitMQ driver is being built reports to that
    driver's :meth:`~polymsg.driver.Driver.health`.
    """

    def __init__(self, spec: ConnectionSpec, role: str = "") -> None:
        self.spec = spec
        self.role = role
        #: Health: an attempt was made, the connection is open, opens and failures ever.
        self.attempted = False
        self.is_open = False
        self.opens = 0
        self.failures = 0
        self.failed_rounds = 0
        self.last_failure: Failure | None = None
        self._order: list[int] = []
        self._current = 0
        self._opened_at: float | None = None
        enlist(self)

    def next_endpoint(self) -> Endpoint:
        """The host to try now (a new round starts when the last one is used up)."""
        self.attempted = True
        if not self._order:
            count = len(self.spec.endpoints)
            if self.spec.shuffle:
                self._order = random.sample(range(count), count)
            else:
                self._order = [(self._current + i) % count for i in range(count)]
        self._current = self._order[0]
        return self.spec.endpoints[self._current]

    def failed(self, failure: Failure) -> float:
        """An attempt at the current host failed; seconds to wait before the next."""
        self.last_failure = failure
        self.failures += 1
        self.is_open = False
        if self._order:
            self._order.pop(0)
        if self._order:
            return 0.0  # other hosts of this round first
        self.failed_rounds += 1
        self._current = (self._current + 1) % len(self.spec.endpoints)
        return self.spec.backoff(self.failed_rounds)

    def opened(self) -> None:
        """The current host accepted the connection."""
        self._order = []
        self.opens += 1
        self.attempted = self.is_open = True
        self._opened_at = time.monotonic()

    def lost(self, failure: Failure) -> float:
        """The open connection is gone; seconds to wait before reconnecting.

        A connection that lived long enough resets the count; one that died
        right after opening counts as a failed round."""
        opened_at, self._opened_at = self._opened_at, None
        self.last_failure = failure
        self.failures += 1
        self.is_open = False
        if opened_at is not None and time.monotonic() - opened_at >= QUICK_DEATH \
                and not failure.permanent:
            self.failed_rounds = 0
            return 0.0
        self.failed_rounds += 1
        return self.spec.backoff(self.failed_rounds)


def give_up_reason(retry: int | None, deadline: float | None) -> str:
    """Why a transient failure was not retried further, for the error message."""
    if deadline is not None and time.monotonic() >= deadline:
        return "gave up at the operation's timeout"
    return f"gave up after {retry} {'retry' if retry == 1 else 'retries'}"

