"""Matchmakers: which hosts serve a topic.

* ``local`` — this host only; nothing is registered anywhere.
* ``ring`` — a static JSON file ``{"topic": ["host[:port]", ...]}``. A key
  ``"topic.server"`` says where a named server runs (otherwise a host whose
  name is the server name, or the topic's only host); ``"topic.priority"``
  (or ``"topic"``) lists the hosts receiving a topic's notifications; ``"*"``
  serves every topic not listed. The file is re-read when it changes.
  Exchanges are not part of ring keys.
* ``redis`` — each receiver registers its host (``<prefix>/hosts``) and the
  topics its local consumers serve,
  with a TTL refreshed by heartbeats; a host that stops heartbeating ages out
  after ``matchmaker_ttl``. Keys are sorted sets scored by expiry time
  (``<prefix>/rpc/<exchange>/<topic>[/<server>]`` with ``host:port`` members,
  ``<prefix>/note/<exchange>/<topic>/<priority>`` with ``[host:port, pool]``
  members), so every member ages out on its own.

Addresses are ``host:port`` of a host's receiver.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from polymsg import DriverLoadFailure, InvalidTransportURL, MessageDeliveryFailure
from polymsg.driver import dumps_str, loads
from polymsg_zmq._options import Settings, join_address, split_address

__all__ = ["HOST_KEY", "LocalMatchmaker", "Matchmaker", "NoteRoute", "RedisMatchmaker", "RegKey",
           "RingMatchmaker", "make_matchmaker"]

LOG = logging.getLogger(__name__)

#: A registration: ("rpc", exchange, topic, server or "") or ("note", exchange, topic,
#: priority, pool or "").
RegKey = tuple[str, ...]
#: The registration every receiver keeps: this host is part of the deployment.
HOST_KEY: RegKey = ("host",)
#: A notification route: a host and the pools it should serve (None: every local pool).
NoteRoute = tuple[str, "list[str] | None"]


class Matchmaker(abc.ABC):
    """Answers "which hosts serve this?" for senders; receivers register their topics.

    ``dynamic`` is true when hosts come and go at run time: a sender that
    finds no host then hands the message to its own receiver, which holds it
    until a host appears (or its TTL passes). With a static matchmaker no
    host means the message cannot be delivered.
    """

    dynamic = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def rpc_hosts(self, exchange: str, topic: str, server: str | None = None) -> list[str]:
        """Addresses of the hosts serving ``topic`` (or its server ``server``)."""

    @abc.abstractmethod
    def note_hosts(self, exchange: str, topic: str, priority: str) -> list[NoteRoute]:
        """Where a notification goes: one entry per host, with the pools it serves there."""

    def knows_host(self, host: str) -> bool:
        """True when ``host`` (a name or address, no port) belongs to the deployment;
        replies go only to such hosts."""
        return host == self.settings.host

    def known_hosts(self) -> int:
        """How many hosts' receivers the matchmaker knows now, without I/O (health)."""
        return 1

    def register(self, keys: Iterable[RegKey]) -> None:  # noqa: B027 - optional
        """Announce (or refresh) that this host serves ``keys``."""

    def unregister(self, keys: Iterable[RegKey]) -> None:  # noqa: B027 - optional
        """Withdraw ``keys`` for this host."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


class LocalMatchmaker(Matchmaker):
    """Everything is served on this host."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._hosts = [settings.address]  # callers only read it

    def rpc_hosts(self, exchange: str, topic: str, server: str | None = None) -> list[str]:
        return self._hosts

    def note_hosts(self, exchange: str, topic: str, priority: str) -> list[NoteRoute]:
        return [(self.settings.address, None)]


class RingMatchmaker(Matchmaker):
    """A static JSON ring file, re-read when its modification time changes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.path = str(settings.ring_file)
        self._lock = threading.Lock()
        self._ring: dict[str, list[str]] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        """(Re-)read the file if it changed; a bad file is an error the first time, and
        a logged warning (keeping the last good ring) afterwards."""
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            with open(self.path, encoding="utf-8") as handle:
                ring = self._parse(json.load(handle))
        except (OSError, ValueError) as exc:
            if self._mtime is None:
                raise InvalidTransportURL(f"zmq: cannot read ring file {self.path!r}: "
                                          f"{exc}") from exc
            LOG.warning("zmq: cannot re-read ring file %s, keeping the last one: %s",
                        self.path, exc)
            return
        self._ring, self._mtime = ring, mtime

    def _parse(self, data: object) -> dict[str, list[str]]:
        if not isinstance(data, dict) or not all(
                isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)
                for hosts in data.values()):
            raise ValueError("it must hold a JSON object mapping topics to lists of host names")
        port = self.settings.port
        return {str(key): [join_address(*split_address(h, port)) for h in hosts]
                for key, hosts in data.items()}

    def _entry(self, *keys: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self.settings.matchmaker_cache:
                self._checked = now
                self._load()
            for key in keys:
                if key in self._ring:
                    return list(self._ring[key])
        return []

    def rpc_hosts(self, exchange: str, topic: str, server: str | None = None) -> list[str]:
        if server is None:
            return self._entry(topic, "*")
        named = self._entry(f"{topic}.{server}")
        if named:
            return named
        hosts = self._entry(topic, "*")
        matching = [h for h in hosts if split_address(h, 0)[0] == server]
        if matching or len(hosts) <= 1:
            return matching or hosts
        raise MessageDeliveryFailure(
            f"zmq: ring file {self.path!r} lists several hosts for topic {topic!r} and none "
            f"is named {server!r}; add a {f'{topic}.{server}'!r} entry naming its host")

    def note_hosts(self, exchange: str, topic: str, priority: str) -> list[NoteRoute]:
        return [(host, None) for host in self._entry(f"{topic}.{priority}", topic, "*")]

    def known_hosts(self) -> int:
        """The addresses named in the ring file as last read (without the lock, which a
        re-read holds during file I/O: the ring is replaced whole, never changed)."""
        ring = self._ring
        return len({address for hosts in ring.values() for address in hosts})

    def knows_host(self, host: str) -> bool:
        """Hosts named anywhere in the ring file, and this one."""
        if host == self.settings.host:
            return True
        self._entry()  # re-reads the file when due
        with self._lock:
            return any(split_address(address, 0)[0] == host
                       for hosts in self._ring.values() for address in hosts)


class RedisMatchmaker(Matchmaker):
    """Hosts register in Redis with a TTL; see the module docstring for the keys."""

    dynamic = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        try:
            import redis
        except ImportError as exc:
            raise DriverLoadFailure("zmq: matchmaker=redis needs the 'redis' package "
                                    "(pip install 'polymsg-zmq[redis]')") from exc
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._redis = redis.Redis.from_url(str(settings.redis_url), socket_timeout=2.0,
                                           socket_connect_timeout=2.0)
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def _key(self, *parts: str) -> str:
        return "/".join((self.settings.redis_prefix, *parts))

    def _members(self, key: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.settings.matchmaker_cache:
            return cached[1]
        try:
            raw = self._redis.zrangebyscore(key, time.time(), "+inf")
        except self._errors as exc:
            raise MessageDeliveryFailure(f"zmq: the redis matchmaker is unavailable: "
                                         f"{exc}") from exc
        members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
        if members:  # an empty answer is not cached: a host may register any moment
            with self._lock:
                self._cache[key] = (now, members)
        return members

    def rpc_hosts(self, exchange: str, topic: str, server: str | None = None) -> list[str]:
        parts = ("rpc", exchange, topic) + ((server,) if server is not None else ())
        return self._members(self._key(*parts))

    def note_hosts(self, exchange: str, topic: str, priority: str) -> list[NoteRoute]:
        pools: dict[str, list[str]] = {}
        for member in self._members(self._key("note", exchange, topic, priority)):
            try:
                host, pool = loads(member)
            except Exception:
                LOG.warning("zmq: ignoring a malformed matchmaker entry %r", member)
                continue
            pools.setdefault(str(pool), []).append(str(host))
        return _spread(pools)

    def known_hosts(self) -> int:
        """The receivers registered under ``<prefix>/hosts`` as last read (cached)."""
        with self._lock:
            cached = self._cache.get(self._key("hosts"))
        return len(cached[1]) if cached is not None else 0

    def knows_host(self, host: str) -> bool:
        """This host, and hosts whose receiver is registered (``<prefix>/hosts``)."""
        if host == self.settings.host:
            return True
        return any(split_address(address, 0)[0] == host
                   for address in self._members(self._key("hosts")))

    def _entries(self, keys: Iterable[RegKey]) -> list[tuple[str, str]]:
        address = self.settings.address
        entries: list[tuple[str, str]] = []
        for key in keys:
            if key == HOST_KEY:
                entries.append((self._key("hosts"), address))
            elif key[0] == "rpc":
                _, exchange, topic, server = key
                parts = ("rpc", exchange, topic) + ((server,) if server else ())
                entries.append((self._key(*parts), address))
            else:
                _, exchange, topic, priority, pool = key
                entries.append((self._key("note", exchange, topic, priority),
                                dumps_str([address, pool])))
        return entries

    def register(self, keys: Iterable[RegKey]) -> None:
        ttl = self.settings.matchmaker_ttl
        now = time.time()
        pipe: Any = self._redis.pipeline(transaction=False)
        for key, member in self._entries(keys):
            pipe.zadd(key, {member: now + ttl})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.expire(key, max(1, int(ttl * 2) + 1))
        try:
            pipe.execute()
        except self._errors as exc:
            raise MessageDeliveryFailure(f"zmq: cannot register in redis: {exc}") from exc

    def unregister(self, keys: Iterable[RegKey]) -> None:
        pipe: Any = self._redis.pipeline(transaction=False)
        for key, member in self._entries(keys):
            pipe.zrem(key, member)
        try:
            pipe.execute()
        except self._errors as exc:
            raise MessageDeliveryFailure(f"zmq: cannot unregister in redis: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(*self._errors):  # closing what is gone already
            self._redis.close()


def _spread(pools: dict[str, list[str]]) -> list[NoteRoute]:
    """One host per pool, chosen by the clock (cheap spreading), grouped by host."""
    by_host: dict[str, list[str]] = {}
    tick = time.monotonic_ns() // 1000
    for pool, hosts in pools.items():
        host = hosts[tick % len(hosts)]
        by_host.setdefault(host, []).append(pool)
    return [(host, sorted(names)) for host, names in by_host.items()]


def make_matchmaker(settings: Settings) -> Matchmaker:
    """The matchmaker ``settings`` names."""
    kinds: dict[str, type[Matchmaker]] = {
        "local": LocalMatchmaker, "ring": RingMatchmaker, "redis": RedisMatchmaker}
    return kinds[settings.matchmaker](settings)
