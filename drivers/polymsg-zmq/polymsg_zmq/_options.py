"""Configuration of the zmq driver and of the receiver: options and resolved settings.

Every option lives in the ``[polymsg_zmq]`` group and can be overridden per
transport by a URL query key of the same name. The URL's host and port, when
given (``zmq://node-1:9501/``), are this host's name and receiver port.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg

from polymsg import InvalidTransportURL, MessageDeliveryFailure, TransportURL

__all__ = ["GROUP", "OPTS", "CurveKeys", "Settings", "default_ipc_dir", "is_loopback",
           "join_address", "list_opts", "overlay", "settings_from", "split_address"]

GROUP = "polymsg_zmq"

OPTS: list[cfg.Opt] = [
    cfg.HostAddressOpt("host", default=None,
                       sample_default="<bind_address, 127.0.0.1, or the host name>",
                       help="The name other hosts reach this host's receiver by. With the "
                            "receiver port it is this host's address in the matchmaker. "
                            "Default: bind_address when it names one interface, the "
                            "machine's host name when it is '*', else 127.0.0.1."),
    cfg.PortOpt("receiver_port", default=9501,
                help="TCP port of this host's receiver."),
    cfg.StrOpt("bind_address", default=None,
               sample_default="<the address of host, or 127.0.0.1>",
               help="Interface (IP address) the receiver and reply sockets bind to ('*': "
                    "all). Default: loopback, unless host names another address (then "
                    "that address)."),
    cfg.StrOpt("ipc_dir", default=None,
               sample_default="<XDG_RUNTIME_DIR>/polymsg-zmq or <tmp>/polymsg-zmq-<uid>",
               help="Directory of the receiver's IPC sockets (created with mode 0700). "
                    "Every host (receiver) needs its own."),
    cfg.BoolOpt("start_receiver", default=True,
                help="Start a receiver inside the process on first use when none is "
                     "running for this host."),
    cfg.StrOpt("matchmaker", default="local", choices=["local", "ring", "redis"],
               help="Which hosts serve a topic: 'local' (this host only), 'ring' (a static "
                    "JSON file) or 'redis' (hosts register with a TTL)."),
    cfg.StrOpt("ring_file", default=None,
               help="The ring matchmaker's JSON file: {\"topic\": [\"host[:port]\", ...]}; "
                    "the key \"*\" serves topics not listed."),
    cfg.StrOpt("redis_url", default=None, secret=True,
               help="The redis matchmaker's server, e.g. redis://127.0.0.1:6379/0."),
    cfg.StrOpt("redis_prefix", default="polymsg-zmq",
               help="Prefix of the redis matchmaker's keys (deployments sharing a Redis "
                    "server use different prefixes)."),
    cfg.FloatOpt("matchmaker_ttl", default=30.0, min=0.5,
                 help="Seconds a host's registration lives without a heartbeat (redis)."),
    cfg.FloatOpt("matchmaker_cache", default=1.0, min=0.0,
                 help="Seconds a sender caches the hosts of a topic (redis, ring)."),
    cfg.FloatOpt("retry_interval", default=1.0, min=0.01,
                 help="Seconds one attempt waits for a connection to a receiver; a "
                      "message's retry count says how many more attempts follow."),
    cfg.FloatOpt("receiver_timeout", default=5.0, min=0.1,
                 help="Seconds a server waits for the local receiver to accept its "
                      "subscription."),
    cfg.FloatOpt("heartbeat_interval", default=1.0, min=0.05,
                 help="Seconds between a server's heartbeats to the local receiver; a "
                      "restarted receiver is re-subscribed within a few of them."),
    cfg.IntOpt("max_held_messages", default=100000, min=1,
               help="Messages the receiver holds per topic while no consumer takes them; "
                    "beyond that the oldest are dropped with a warning."),
    cfg.IntOpt("max_message_size", default=64 * 1024 * 1024, min=1024,
               help="Largest message (bytes) a receiver or reply socket accepts and a "
                    "sender sends; a peer sending a larger one is disconnected."),
    cfg.IntOpt("max_held_bytes", default=128 * 1024 * 1024, min=1024 * 1024,
               help="Bytes a receiver holds in all for consumers that cannot take "
                    "messages yet; beyond that the oldest messages of the topic holding "
                    "the most are dropped with a warning. At least max_message_size."),
    cfg.IntOpt("max_topics", default=4096, min=16,
               help="Topics a receiver keeps state for (held messages, consumers); a "
                    "message for yet another topic is dropped with a warning."),
    cfg.FloatOpt("linger", default=1.0, min=0.0,
                 help="Seconds cleanup waits to flush messages already accepted."),
    cfg.StrOpt("curve_public_key", default=None,
               help="This host's CURVE public key (Z85). With curve_secret_key, turns on "
                    "CURVE encryption and authentication between hosts."),
    cfg.StrOpt("curve_secret_key", default=None, secret=True,
               help="This host's CURVE secret key (Z85)."),
    cfg.StrOpt("curve_server_key", default=None,
               help="Public key (Z85) of the other hosts' receivers; defaults to "
                    "curve_public_key (one key pair for the whole deployment)."),
    cfg.ListOpt("curve_authorized_keys", default=[],
                help="Client public keys (Z85) allowed to connect; defaults to "
                     "curve_public_key."),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[(group, [opts])]`` for ``oslo-config-generator --namespace polymsg_zmq``."""
    return [(GROUP, list(OPTS))]


def default_ipc_dir() -> str:
    """Where the IPC sockets go when ``ipc_dir`` is not set."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "polymsg-zmq")
    return os.path.join(tempfile.gettempdir(), f"polymsg-zmq-{os.getuid()}")


@dataclass(frozen=True)
class CurveKeys:
    """CURVE key material (Z85 text); ``repr`` never shows the secret key."""

    public: str
    secret: str = field(repr=False)
    server: str
    authorized: frozenset[str]


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one host (one receiver and its clients)."""

    host: str
    port: int
    bind_address: str
    ipc_dir: str
    start_receiver: bool
    matchmaker: str
    ring_file: str | None
    redis_url: str | None = field(repr=False)
    redis_prefix: str
    matchmaker_ttl: float
    matchmaker_cache: float
    retry_interval: float
    receiver_timeout: float
    heartbeat_interval: float
    max_held_messages: int
    max_message_size: int
    max_held_bytes: int
    max_topics: int
    linger: float
    curve: CurveKeys | None

    @functools.cached_property
    def address(self) -> str:
        """This host's address in the matchmaker: ``host:port``."""
        return join_address(self.host, self.port)

    def bind_interface(self) -> str:
        """The address sockets bind to: ``bind_address``, a host name resolved.
        Raises :class:`polymsg.MessageDeliveryFailure` when it does not resolve."""
        bind = self.bind_address
        if bind in ("*", "localhost") or _is_ip(bind):
            return bind
        try:
            return socket.gethostbyname(bind)
        except OSError as exc:
            raise MessageDeliveryFailure(
                f"zmq: cannot resolve {bind!r} to an address to bind ({exc}); set "
                "bind_address") from exc

    def endpoint(self, address: str) -> str:
        """The TCP endpoint of the receiver at ``address`` (``host[:port]``)."""
        host, port = split_address(address, self.port)
        return f"tcp://{join_address(host, port)}"


def join_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) -> ``(host, port)``."""
    host, port = address, default_port
    if address.startswith("["):
        end = address.find("]")
        host, rest = address[1:end], address[end + 1:]
        if rest.startswith(":"):
            port = int(rest[1:])
    elif address.count(":") == 1:
        host, text = address.split(":")
        port = int(text)
    return host, port


def settings_from(values: Mapping[str, Any], url: TransportURL | None = None) -> Settings:
    """Settings from option ``values`` (config overlaid with the URL query) and the
    URL's host and port. Raises :class:`polymsg.InvalidTransportURL` on bad values."""
    host, port = values["host"], values["receiver_port"]
    if url is not None and url.hosts:
        first = url.hosts[0]
        host = first.hostname or host
        port = first.port or port
    host, bind_address = _addresses(host, values["bind_address"])
    if int(values["max_held_bytes"]) < int(values["max_message_size"]):
        raise InvalidTransportURL("zmq: max_held_bytes must be at least max_message_size")
    matchmaker = values["matchmaker"]
    if matchmaker == "ring" and not values["ring_file"]:
        raise InvalidTransportURL("zmq: matchmaker=ring needs ring_file=PATH")
    if matchmaker == "redis" and not values["redis_url"]:
        raise InvalidTransportURL("zmq: matchmaker=redis needs redis_url=redis://HOST:PORT/DB")
    return Settings(
        host=host, port=int(port), bind_address=bind_address,
        ipc_dir=os.path.abspath(values["ipc_dir"] or default_ipc_dir()),
        start_receiver=bool(values["start_receiver"]), matchmaker=matchmaker,
        ring_file=values["ring_file"], redis_url=values["redis_url"],
        redis_prefix=values["redis_prefix"], matchmaker_ttl=float(values["matchmaker_ttl"]),
        matchmaker_cache=float(values["matchmaker_cache"]),
        retry_interval=float(values["retry_interval"]),
        receiver_timeout=float(values["receiver_timeout"]),
        heartbeat_interval=float(values["heartbeat_interval"]),
        max_held_messages=int(values["max_held_messages"]),
        max_message_size=int(values["max_message_size"]),
        max_held_bytes=int(values["max_held_bytes"]), max_topics=int(values["max_topics"]),
        linger=float(values["linger"]),
        curve=_curve_keys(values),
    )


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (not for other names)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _addresses(host: str | None, bind: str | None) -> tuple[str, str]:
    """This host's advertised name and the address its sockets bind to.

    Nothing given: loopback for both. Only ``host`` given: bind to its
    address (loopback when it is loopback). Only ``bind_address``: advertise
    it, or the machine's host name when it is ``*``.
    """
    if host is not None and not host.strip():
        raise InvalidTransportURL("zmq: the host name is empty; set it in the URL "
                                  "(zmq://HOST:PORT/) or with the 'host' option")
    if bind is None:  # a host name is resolved when binding (Settings.bind_interface)
        bind = "127.0.0.1" if host is None or is_loopback(host) else host
    if host is None:
        host = socket.gethostname() if bind in ("*", "0.0.0.0", "::") else bind
    return host, bind


def _curve_keys(values: Mapping[str, Any]) -> CurveKeys | None:
    public, secret = values["curve_public_key"], values["curve_secret_key"]
    if not public and not secret:
        return None
    if not (public and secret):
        raise InvalidTransportURL("zmq: CURVE needs both curve_public_key and curve_secret_key")
    for name in ("curve_public_key", "curve_secret_key", "curve_server_key"):
        key = values[name]
        if key is not None and len(key) != 40:
            raise InvalidTransportURL(f"zmq: {name} must be a 40-character Z85 key")
    authorized: Sequence[str] = values["curve_authorized_keys"] or [public]
    return CurveKeys(public=public, secret=secret, server=values["curve_server_key"] or public,
                     authorized=frozenset(authorized))


def overlay(conf: cfg.ConfigOpts, url: TransportURL | None) -> dict[str, Any]:
    """Option values from ``conf`` (registering the options) overlaid with ``url``'s query.

    What the polymsg facade does for a transport, for the receiver command.
    """
    with contextlib.suppress(cfg.DuplicateOptError):
        conf.register_opts(OPTS, group=GROUP)
    try:
        values = {opt.dest: conf[GROUP][opt.dest] for opt in OPTS}
    except cfg.Error as exc:  # e.g. a '$' oslo.config took for a variable
        raise InvalidTransportURL(
            f"zmq: cannot read the [{GROUP}] options: {type(exc).__name__} (write a '$' "
            "in a value as '$$'; polymsg zmq-keygen makes keys without '$')") from None
    known = {opt.dest: opt for opt in OPTS}
    for key, text in (url.query.items() if url is not None else ()):
        opt = known.get(key)
        if opt is None:
            raise InvalidTransportURL(f"unknown option {key!r} in zmq transport URL "
                                      f"(known options: {', '.join(sorted(known))})")
        try:
            values[key] = opt.type(text)
        except (ValueError, TypeError) as exc:
            shown = "(secret)" if opt.secret else repr(text)
            raise InvalidTransportURL(f"invalid value {shown} for zmq option {key!r}"
                                      + ("" if opt.secret else f": {exc}")) from None
    return values
