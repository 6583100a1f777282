"""The transport URL value: ``driver://[user:pass@]host[:port][,...]/[vhost][?k=v&...]``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, unquote

from polymsg._exceptions import InvalidTransportURL

__all__ = ["TransportHost", "TransportURL", "is_secret_key", "mask_value"]

_SCHEME = re.compile(r"^[a-z][a-z0-9+._-]*$")


@dataclass(frozen=True)
class TransportHost:
    """One broker or peer address of a transport URL."""

    hostname: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def _render(self, hide_password: bool) -> str:
        text = ""
        if self.username is not None:
            text = quote(self.username, safe="")
            if self.password is not None:
                text += ":" + ("****" if hide_password else quote(self.password, safe=""))
            text += "@"
        host = self.hostname or ""
        text += f"[{host}]" if ":" in host else host
        if self.port is not None:
            text += f":{self.port}"
        return text


@dataclass(frozen=True)
class TransportURL:
    """A parsed transport URL. Immutable; ``str()`` hides passwords.

    ``transport`` is the driver name as written (``"rabbit"``), ``hosts`` a
    tuple of :class:`TransportHost` (several mean failover), ``virtual_host``
    the path without its leading slash (``None`` when empty) and ``query`` a
    read-only mapping of the query parameters.
    """

    transport: str
    hosts: tuple[TransportHost, ...] = ()
    virtual_host: str | None = None
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, text: str | TransportURL) -> TransportURL:
        """Parse ``text``; raise :class:`InvalidTransportURL` saying what is wrong."""
        if isinstance(text, TransportURL):
            return text
        if not isinstance(text, str):
            raise InvalidTransportURL(f"transport URL must be a string, not {type(text).__name__}")
        scheme, sep, rest = text.partition("://")
        if not sep:
            raise InvalidTransportURL(
                f"invalid transport URL {_redact(text)!r}: expected 'driver://...'"
            )
        scheme = scheme.lower()
        if not _SCHEME.match(scheme):
            raise InvalidTransportURL(
                f"invalid driver name {_redact(scheme)!r} in transport URL {_redact(text)!r}")
        rest, _, query_text = rest.partition("?")
        netloc, _, path = rest.partition("/")
        hosts = tuple(_parse_host(part, text) for part in netloc.split(",") if part)
        query = dict(parse_qsl(query_text, keep_blank_values=True)) if query_text else {}
        return cls(
            transport=scheme,
            hosts=hosts,
            virtual_host=unquote(path) or None,
            query=MappingProxyType(query),
        )

    def render(self, *, hide_password: bool = True) -> str:
        """The URL as text; passwords become ``****`` unless ``hide_password=False``.

        Hiding also covers query values whose key looks secret (containing
        ``secret``, ``password``, ``token``, ``key``… but not ``file`` or
        ``public``: ``curve_secret_key`` is hidden, ``ssl_key_file`` shown)
        and passwords of URLs given as query values (``redis_url``).
        """
        netloc = ",".join(h._render(hide_password) for h in self.hosts)
        text = f"{self.transport}://{netloc}/"
        if self.virtual_host:
            text += quote(self.virtual_host, safe="")
        if self.query:
            text += "?" + "&".join(
                f"{quote(k)}={mask_value(k, v) if hide_password else quote(v)}"
                for k, v in self.query.items())
        return text

    def __str__(self) -> str:
        return self.render(hide_password=True)

    def __repr__(self) -> str:
        return f"TransportURL({str(self)!r})"

    def __hash__(self) -> int:
        return hash((self.transport, self.hosts, self.virtual_host, tuple(self.query.items())))


def _parse_host(part: str, whole: str) -> TransportHost:
    userinfo, at, hostport = part.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user)
        password = unquote(pw) if colon else None
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise InvalidTransportURL(f"invalid IPv6 host in transport URL {_redact(whole)!r}")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = hostport.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            # Without an '@', "user:password" reads as "host:port": do not show a password.
            shown, text = f"{port_text!r} ", _redact(whole)
            if not (at or port_text.isdigit()):
                shown, text = "", text.replace(f":{port_text}", ":****")
            raise InvalidTransportURL(
                f"invalid port {shown}in transport URL {text!r}"
            )
        port = int(port_text)
    return TransportHost(hostname=unquote(host) or None, port=port,
                         username=username, password=password)


#: Words that make a query key secret-looking, and words that make it a path or a
#: public value instead (``ssl_key_file``, ``curve_public_key``).
_SECRET_WORDS = frozenset({"secret", "password", "passwd", "pwd", "pass", "token", "key",
                           "apikey", "credential", "credentials", "private"})
_NOT_SECRET_WORDS = frozenset({"file", "path", "dir", "public", "cert", "ca"})
_USERINFO = re.compile(r"(^|[/,;\s])([^/,;\s:@]*):(?!//)[^@\s]*@")
_QUERY_ITEM = re.compile(r"([?&;])([^=&;#\s]*)=([^&;#\s]*)")


def is_secret_key(name: str) -> bool:
    """True for a query key or option name that looks like it holds a secret."""
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    return bool(words & _SECRET_WORDS) and not words & _NOT_SECRET_WORDS


def mask_value(key: str, value: str) -> str:
    """``value`` as shown in ``str()``: ``****`` for a secret-looking key, and the
    password of any URL inside it hidden."""
    return "****" if is_secret_key(key) and value else _redact(value)


def _redact(text: str) -> str:
    """Hide passwords and secret-looking query values in a URL, even a malformed one.

    Everything between a user name's ``:`` and the next ``@`` is hidden,
    whatever it contains, so a password with ``/`` or ``,`` does not leak.
    """
    text = _USERINFO.sub(r"\1\2:****@", text)

    def query_item(match: re.Match[str]) -> str:
        sep, key, value = match.groups()
        return f"{sep}{key}={'****' if is_secret_key(unquote(key)) and value else value}"

    return _QUERY_ITEM.sub(query_item, text)
