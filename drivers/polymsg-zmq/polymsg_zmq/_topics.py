"""The receiver's state for one exchange and topic: its IPC socket, consumers, held messages.

Consumers belong to *groups*: every RPC server is in ``*`` (any server of
the topic) and in ``s:<server>``; a notification listener is in
``n:<priority>:<pool>`` for each priority it takes (pool ``""`` when none).
A message targets one group and goes to one of its consumers, round robin;
a notification for every pool becomes one copy per group. A message no
consumer can take is held, in arrival order, until one comes, its
``message_ttl`` passes, or its group has had no consumer for ``queue_ttl``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import zmq

from polymsg_zmq._consumer import IN_PROCESS
from polymsg_zmq._wire import (
    Header,
    InvalidFrame,
    encode_deadline,
    message_ids,
    split_packed,
)

__all__ = ["Consumer", "Held", "TopicState"]

LOG = logging.getLogger("polymsg_zmq.receiver")

ANY_POOL = "?"


class Held:
    """Messages (one header, a packed batch) waiting for a consumer of ``group``."""

    __slots__ = ("arrival", "bodies", "deadline", "group", "header", "qttl", "raw_header",
                 "unrouted")

    def __init__(self, header: Header, raw_header: bytes, bodies: bytes,
                 deadline: float | None, group: str, arrival: float) -> None:
        self.header = header
        self.raw_header = raw_header
        self.bodies = bodies
        self.deadline = deadline
        self.group = group
        self.arrival = arrival
        qttl = header.get("q")
        self.qttl: float | None = float(qttl) if qttl else None
        self.unrouted = bool(header.get("u"))

    def frames(self) -> list[bytes]:
        """``[b"M", deadline, header, body...]`` for a consumer."""
        return [b"M", encode_deadline(self.deadline), self.raw_header, self.bodies]

    def ids(self) -> list[str]:
        """Message ids, for log lines."""
        return message_ids(str(self.header.get("k")), self.bodies)


class Consumer:
    """A registered local consumer (a server's or a listener's DEALER socket)."""

    __slots__ = ("groups", "ident", "interval", "keys", "last_seen")

    def __init__(self, ident: bytes, groups: list[str], keys: set[tuple[str, ...]],
                 now: float) -> None:
        self.ident = ident
        self.groups = groups
        self.keys = keys
        self.last_seen = now
        self.interval = 1.0  # the consumer's heartbeat interval


def consumer_groups(exchange: str, topic: str, info: dict[str, Any]
                    ) -> tuple[list[str], set[tuple[str, ...]], float | None]:
    """Groups, matchmaker keys and queue TTL hint of a ``REG`` request; ValueError if bad."""
    kind = info.get("kind")
    if kind == "rpc":
        server = info.get("server")
        if not isinstance(server, str) or not server:
            raise ValueError("an RPC consumer needs a server name")
        groups = ["*", f"s:{server}"]
        keys: set[tuple[str, ...]] = {("rpc", exchange, topic, ""),
                                      ("rpc", exchange, topic, server)}
    elif kind == "note":
        pool = info.get("pool") or ""
        priorities = info.get("priorities")
        if not isinstance(pool, str) or not isinstance(priorities, list) or not priorities \
                or not all(isinstance(p, str) and p for p in priorities):
            raise ValueError("a notification consumer needs priorities and a pool")
        groups = [f"n:{p}:{pool}" for p in priorities]
        keys = {("note", exchange, topic, p, pool) for p in priorities}
    else:
        raise ValueError(f"unknown consumer kind {kind!r}")
    qttl = info.get("qttl")
    if qttl is not None and (isinstance(qttl, bool) or not isinstance(qttl, (int, float))):
        raise ValueError("qttl must be a number")
    return groups, keys, (float(qttl) if qttl else None)


class TopicState:
    """One exchange/topic on this host. Used only by the receiver's thread."""

    def __init__(self, exchange: str, topic: str, sock: zmq.Socket[bytes], path: str,
                 max_held: int, congested: set[bytes] | None = None) -> None:
        self.exchange = exchange
        self.topic = topic
        self.sock = sock
        self.path = path
        self.max_held = max_held
        self.consumers: dict[bytes, Consumer] = {}
        self.groups: dict[str, list[bytes]] = {}
        self.turn: dict[str, int] = {}
        self.held: deque[Held] = deque()
        self.held_count: dict[str, int] = {}
        self.last_present: dict[str, float] = {}
        self.qttl_hint: dict[str, float] = {}
        self.touched = time.monotonic()
        #: In-process consumers (of any topic) taking nothing until their workers catch
        #: up; the receiver owns the set and flushes when one leaves it.
        self.congested: set[bytes] = congested if congested is not None else set()

    # -- consumers -------------------------------------------------------------------------

    def add(self, consumer: Consumer, qttl: float | None) -> None:
        """Register ``consumer`` (a new one) in its groups."""
        self.consumers[consumer.ident] = consumer
        for group in consumer.groups:
            self.groups.setdefault(group, []).append(consumer.ident)
            if qttl is not None:
                self.qttl_hint[group] = qttl

    def remove(self, ident: bytes, now: float) -> Consumer | None:
        """Forget a consumer; returns it (or None when unknown)."""
        consumer = self.consumers.pop(ident, None)
        if consumer is None:
            return None
        for group in consumer.groups:
            members = self.groups.get(group, [])
            if ident in members:
                members.remove(ident)
            if not members:
                self.groups.pop(group, None)
            self.last_present[group] = now
        return consumer

    def present(self, group: str) -> bool:
        """True when ``group`` has a consumer (``n:<p>:?`` — any pool of priority p)."""
        if group.endswith(":" + ANY_POOL) and group.startswith("n:"):
            return any(True for _ in self._pools_of(group))
        return group in self.groups

    def _all_congested(self, group: str) -> bool:
        """True when every consumer of ``group`` is congested (flushing is pointless)."""
        members = self.groups.get(group)
        return members is not None and all(m in self.congested for m in members)

    def _pools_of(self, any_group: str) -> Iterator[str]:
        prefix = any_group[:-len(ANY_POOL)]
        return (g for g in self.groups if g.startswith(prefix))

    # -- delivery --------------------------------------------------------------------------

    def accept(self, header: Header, raw_header: bytes, bodies: bytes,
               deadline: float | None, now: float, only_pool: str | None = None) -> None:
        """Deliver an incoming message, or hold what cannot be delivered yet.

        Messages of a group that already has held ones queue behind them, so a
        group's consumers see them in arrival order.
        """
        self.touched = now
        for group in self._targets(header, only_pool):
            for part in self._split(group, bodies):
                item = Held(header, raw_header, part, deadline, group, now)
                if self.held_count.get(group):
                    self._hold(item)
                    if self.present(group) and not self._all_congested(group):
                        self.flush(now)
                elif not self._deliver(item, now):
                    self._hold(item)

    def _split(self, group: str, bodies: bytes) -> list[bytes]:
        """A batch for a group of several consumers, cut in one slice per consumer."""
        consumers = len(self.groups.get(group, ()))
        if consumers < 2:
            return [bodies]
        try:
            return split_packed(bodies, consumers)
        except InvalidFrame:
            return [bodies]  # the consumer logs and drops it

    def _targets(self, header: Header, only_pool: str | None) -> list[str]:
        if header["k"] == "rpc":
            server = header.get("s")
            return [f"s:{server}" if server else "*"]
        priority = header["p"]
        if only_pool is not None:
            return [f"n:{priority}:{only_pool}"]
        pools = header.get("pools")
        if pools is not None:
            return [f"n:{priority}:{pool}" for pool in pools]
        present = list(self._pools_of(f"n:{priority}:{ANY_POOL}"))
        return present or [f"n:{priority}:{ANY_POOL}"]

    def _deliver(self, item: Held, now: float) -> bool:
        if item.deadline is not None and now >= item.deadline:
            LOG.warning("zmq receiver: dropped expired message(s) %s on topic %s "
                        "(message_ttl passed)", item.ids(), self.topic)
            return True
        group = item.group
        if group.endswith(":" + ANY_POOL) and group.startswith("n:"):
            pools = list(self._pools_of(group))
            if not pools:
                return False
            for pool_group in pools:  # one copy per pool present now
                copy = Held(item.header, item.raw_header, item.bodies, item.deadline,
                            pool_group, item.arrival)
                if not self._deliver(copy, now):
                    self._hold(copy)
            return True
        members = self.groups.get(group)
        if not members:
            return False
        frames = item.frames()
        for _ in range(len(members)):
            turn = self.turn.get(group, 0) % len(members)
            self.turn[group] = turn + 1
            ident = members[turn]
            local = IN_PROCESS.get(ident)
            if local is not None:
                if ident in self.congested:
                    continue
                if local.deliver_direct(frames):
                    if local.congested():
                        self.congested.add(ident)
                    return True
                continue
            try:
                self.sock.send_multipart([ident, *frames], zmq.NOBLOCK)
                return True
            except zmq.Again:
                continue  # that consumer's queue is full: try the next
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                LOG.info("zmq receiver: consumer of topic %s is gone", self.topic)
                self.remove(ident, now)
                members = self.groups.get(group)
                if not members:
                    return False
        return False

    def _hold(self, item: Held) -> None:
        if len(self.held) >= self.max_held:
            dropped = self.held.popleft()
            self._count(dropped.group, -1)
            LOG.warning("zmq receiver: topic %s holds %d messages without a consumer; "
                        "dropped the oldest %s", self.topic, self.max_held, dropped.ids())
        self.held.append(item)
        self._count(item.group, 1)

    def _count(self, group: str, delta: int) -> None:
        count = self.held_count.get(group, 0) + delta
        if count > 0:
            self.held_count[group] = count
        else:
            self.held_count.pop(group, None)

    def flush(self, now: float) -> None:
        """Deliver held messages whose group has a consumer now, in arrival order."""
        if not self.held:
            return
        held, self.held, self.held_count = self.held, deque(), {}
        blocked: set[str] = set()
        for item in held:
            if item.group in blocked or not self.present(item.group) \
                    or not self._deliver(item, now):
                blocked.add(item.group)
                self.held.append(item)
                self._count(item.group, 1)

    def take_unrouted(self) -> list[Held]:
        """Remove and return held messages a sender could not route whose group has no
        consumer here (the receiver looks for a host for them)."""
        taken = [i for i in self.held if i.unrouted and not self.present(i.group)]
        if taken:
            ids = {id(i) for i in taken}
            self.held = deque(i for i in self.held if id(i) not in ids)
            self.held_count = {}
            for item in self.held:
                self._count(item.group, 1)
        return taken

    def restore(self, items: list[Held]) -> None:
        """Put messages taken by :meth:`take_unrouted` back, ahead of the others."""
        for item in reversed(items):
            self.held.appendleft(item)
            self._count(item.group, 1)

    def expire(self, now: float) -> None:
        """Drop held messages past their message_ttl, or whose queue's queue_ttl passed."""
        for group in self.groups:
            self.last_present[group] = now
        if not self.held:
            return
        held, self.held, self.held_count = self.held, deque(), {}
        for item in held:
            reason = self._expired(item, now)
            if reason:
                LOG.warning("zmq receiver: dropped message(s) %s on topic %s: %s",
                            item.ids(), self.topic, reason)
            else:
                self.held.append(item)
                self._count(item.group, 1)

    def _expired(self, item: Held, now: float) -> str | None:
        if item.deadline is not None and now >= item.deadline:
            return "message_ttl passed with no consumer"
        qttl = item.qttl or self.qttl_hint.get(item.group)
        if qttl is None or self.present(item.group):
            return None
        idle_since = max(item.arrival, self.last_present.get(item.group, 0.0))
        if now - idle_since >= qttl:
            return f"no consumer for queue_ttl ({qttl:g}s)"
        return None

    def idle(self, now: float, after: float) -> bool:
        """True when nothing uses this topic and it can be closed."""
        return not self.consumers and not self.held and now - self.touched >= after
