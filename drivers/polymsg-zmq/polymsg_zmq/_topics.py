"""The receiver's state for one exchange and topic: its IPC socket, consumers, held messages.

Consumers belong to *groups*: every RPC server is in ``*`` (any server of
the topic) and in ``s:<server>``; a notification listener is in
``n:<priority>:<pool>`` for each priority it takes (pool ``""`` when none).
A message targets one group and goes to one of its consumers, round robin
message by message (a batch is dealt over the group's consumers); a
notification for every pool becomes one copy per group. A message no
consumer can take is held, in arrival order, until one comes, its
``message_ttl`` passes, or its group has had no consumer for ``queue_ttl``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from polymsg_zmq._local import InProcess
from polymsg_zmq._ratelog import RateLimited, clip
from polymsg_zmq._wire import (
    Header,
    InvalidFrame,
    count_packed,
    deal_packed,
    encode_deadline,
    message_ids,
)

__all__ = ["Consumer", "Held", "HeldBudget", "TopicState"]

LOG = logging.getLogger("polymsg_zmq.receiver")

ANY_POOL = "?"

#: Bytes a held message costs beyond its header and bodies (the objects around them),
#: so that a flood of tiny messages is bounded by the byte budget too.
HELD_OVERHEAD = 400


class Held:
    """Messages (one header, a packed batch) waiting for a consumer of ``group``."""

    __slots__ = ("_count", "arrival", "bodies", "deadline", "group", "header", "qttl",
                 "raw_header", "size", "unrouted")

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
        self.size = len(bodies) + len(raw_header) + HELD_OVERHEAD
        self._count = 0

    @property
    def count(self) -> int:
        """How many messages the batch holds (counted once, when first asked)."""
        if not self._count:
            self._count = count_packed(self.bodies)
        return self._count

    def with_bodies(self, bodies: bytes) -> Held:
        """The same message(s) route, for other bodies (part of this batch)."""
        return Held(self.header, self.raw_header, bodies, self.deadline, self.group,
                    self.arrival)

    def to_group(self, group: str) -> Held:
        """A copy for another group (a pool)."""
        return Held(self.header, self.raw_header, self.bodies, self.deadline, group,
                    self.arrival)

    def frames(self) -> list[bytes]:
        """``[b"M", deadline, header, body...]`` for a consumer."""
        return [b"M", encode_deadline(self.deadline), self.raw_header, self.bodies]

    def ids(self, limit: int | None = None) -> list[str]:
        """Message ids, for log lines (see :func:`message_ids` for ``limit``)."""
        return message_ids(str(self.header.get("k")), self.bodies, limit)


def _ids_of(items: Iterable[Held]) -> list[str]:
    """Every message id of ``items``, for one log line."""
    return [i for item in items for i in item.ids(0)]


class HeldBudget:
    """The bytes every topic of one receiver holds, and their limit.

    When a message would take the total past ``max_bytes``, the oldest held
    messages of the topic holding the most are dropped first (a flood on one
    topic costs that topic, not the others).
    """

    #: Drops between two searches for the largest holder (a search visits every topic).
    RESCAN = 64

    def __init__(self, max_bytes: int, topics: Callable[[], Iterable[TopicState]]) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        #: Messages held across topics (health).
        self.messages = 0
        self._topics = topics
        self._victim: TopicState | None = None
        self._drops = 0

    def make_room(self, size: int) -> bool:
        """Drop held messages until ``size`` more bytes fit; False if they never can."""
        if size > self.max_bytes:
            return False
        while self.used + size > self.max_bytes:
            victim = self._victim
            if victim is None or not victim.held or self._drops >= self.RESCAN:
                victim = max(self._topics(), key=lambda state: state.held_bytes, default=None)
                self._victim, self._drops = victim, 0
            if victim is None or not victim.held:
                return False
            self._drops += 1
            victim.drop_oldest(f"the receiver holds max_held_bytes ({self.max_bytes:,} bytes)")
        return True


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
    """One exchange/topic on this host. Used only by the receiver's thread.

    ``sock`` (the topic's IPC socket) is bound only once a local consumer
    asks for the topic: messages from the network for a topic nobody here
    serves are held without costing a socket.
    """

    def __init__(self, exchange: str, topic: str, path: str, max_held: int,
                 budget: HeldBudget, local: InProcess, dropped: RateLimited,
                 congested: set[bytes] | None = None) -> None:
        self.exchange = exchange
        self.topic = topic
        self.sock: zmq.Socket[bytes] | None = None
        self.path = path
        self.max_held = max_held
        self.budget = budget
        self.local = local
        self.dropped = dropped
        self.consumers: dict[bytes, Consumer] = {}
        self.groups: dict[str, list[bytes]] = {}
        self.turn: dict[str, int] = {}
        self.held: deque[Held] = deque()
        self.held_count: dict[str, int] = {}
        self.held_bytes = 0
        self.held_messages = 0
        self.last_present: dict[str, float] = {}
        self.qttl_hint: dict[str, float] = {}
        self.touched = time.monotonic()
        #: When the receiver may next look for a host for unrouted messages.
        self.next_route = 0.0
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
            item = Held(header, raw_header, bodies, deadline, group, now)
            if self.held_count.get(group):
                self._hold(item)
                if self.present(group) and not self._all_congested(group):
                    self.flush(now)
            else:
                for left in self._deliver(item, now):
                    self._hold(left)

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

    def _deliver(self, item: Held, now: float) -> list[Held]:
        """Hand ``item`` to its group's consumers; returns what none could take.

        A batch for a group of several consumers is dealt one message at a
        time, round robin across the group (as a broker hands out a queue's
        messages), each consumer getting its share as one batch, in order.
        """
        if item.deadline is not None and now >= item.deadline:
            self._log_drop(item, "message_ttl passed")
            return []
        group = item.group
        if group.endswith(":" + ANY_POOL) and group.startswith("n:"):
            pools = list(self._pools_of(group))
            if not pools:
                return [item]
            for pool_group in pools:  # one copy per pool present now
                copy = item.to_group(pool_group)
                for left in self._deliver(copy, now):
                    self._hold(left)
            return []
        members = self.groups.get(group)
        if not members:
            return [item]
        if len(members) < 2:
            return [] if self._send(group, item, now) else [item]
        try:
            hands = deal_packed(item.bodies, len(members))
        except InvalidFrame:
            hands = [[item.bodies]]  # the consumer logs and drops it
        start = self.turn.get(group, 0)
        for index, hand in enumerate(hands):
            self.turn[group] = start + index  # this hand's consumer first
            if not self._send(group, item.with_bodies(b"".join(hand)), now):
                rest = sorted((pos * len(hands) + h, body)
                              for h, left in enumerate(hands[index:], index)
                              for pos, body in enumerate(left))
                return [item.with_bodies(b"".join(body for _, body in rest))]
        self.turn[group] = start + sum(len(hand) for hand in hands)
        return []

    def _send(self, group: str, item: Held, now: float) -> bool:
        """Send ``item`` to one consumer of ``group``, from its turn on; False when
        none can take it now."""
        members = self.groups.get(group)
        if not members:
            return False
        frames = item.frames()
        for _ in range(len(members)):
            turn = self.turn.get(group, 0) % len(members)
            self.turn[group] = turn + 1
            ident = members[turn]
            local = self.local.get(ident)
            if local is not None:
                if ident in self.congested:
                    continue
                if local.deliver_direct(frames):
                    if local.congested():
                        self.congested.add(ident)
                    return True
                continue
            if self.sock is None:
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
        """Hold ``item`` behind the others, within the count and byte limits."""
        if len(self.held) >= self.max_held:
            self.drop_oldest(f"topic holds max_held_messages ({self.max_held})")
        if not self.budget.make_room(item.size):
            self._log_drop(item, f"larger than max_held_bytes ({self.budget.max_bytes:,})")
            return
        self._keep(item)

    def _keep(self, item: Held) -> None:
        self.held.append(item)
        self._count(item, 1)

    def drop_oldest(self, why: str) -> None:
        """Drop the oldest held message(s), logging their ids."""
        dropped = self.held.popleft()
        self._count(dropped, -1)
        self._log_drop(dropped, why)

    def _log_drop(self, item: Held, why: str) -> None:
        self.dropped.log("zmq receiver: dropped held message(s) %s on topic %s: %s",
                         item.ids(), clip(self.topic), why)

    def _log_drops(self, items: list[Held], why: str) -> None:
        self.dropped.log("zmq receiver: dropped held message(s) %s on topic %s: %s",
                         " ".join(_ids_of(items)), clip(self.topic), why)

    def _count(self, item: Held, delta: int) -> None:
        group = item.group
        count = self.held_count.get(group, 0) + delta
        if count > 0:
            self.held_count[group] = count
        else:
            self.held_count.pop(group, None)
        self.held_bytes += delta * item.size
        self.budget.used += delta * item.size
        self.held_messages += delta * item.count
        self.budget.messages += delta * item.count

    def _take_all(self) -> None:
        """Empty the held queue (its items are the caller's to keep or drop)."""
        self.budget.used -= self.held_bytes
        self.budget.messages -= self.held_messages
        self.held, self.held_count, self.held_bytes, self.held_messages = deque(), {}, 0, 0

    def flush(self, now: float) -> None:
        """Deliver held messages whose group has a consumer now, in arrival order."""
        if not self.held:
            return
        held = self.held
        self._take_all()
        blocked: set[str] = set()
        for item in held:
            if item.group in blocked or not self.present(item.group):
                blocked.add(item.group)
                self._keep(item)
                continue
            left = self._deliver(item, now)
            if left:
                blocked.add(item.group)
                for rest in left:
                    self._keep(rest)

    def take_unrouted(self) -> list[Held]:
        """Remove and return held messages a sender could not route whose group has no
        consumer here (the receiver looks for a host for them)."""
        taken = [i for i in self.held if i.unrouted and not self.present(i.group)]
        if taken:
            ids = {id(i) for i in taken}
            held = self.held
            self._take_all()
            for item in held:
                if id(item) not in ids:
                    self._keep(item)
        return taken

    def restore(self, items: list[Held]) -> None:
        """Put messages taken by :meth:`take_unrouted` back, ahead of the others."""
        for item in reversed(items):
            self.held.appendleft(item)
            self._count(item, 1)

    def expire(self, now: float) -> None:
        """Drop held messages past their message_ttl, or whose queue's queue_ttl passed."""
        for group in self.groups:
            self.last_present[group] = now
        if not self.held:
            return
        held = self.held
        self._take_all()
        expired: dict[str, list[Held]] = {}
        for item in held:
            reason = self._expired(item, now)
            if reason:
                expired.setdefault(reason, []).append(item)
            else:
                self._keep(item)
        for reason, items in expired.items():  # one line per reason, every id in it
            self._log_drops(items, reason)

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

    def discard(self) -> None:
        """Forget everything held (the topic is closed), logging what is dropped."""
        held = self.held
        self._take_all()
        if held:  # once, at the end: every id, not rate-limited
            ids = _ids_of(held)
            LOG.warning("zmq receiver: dropped %d held message(s) on topic %s: the "
                        "receiver stopped; ids %s", len(ids), clip(self.topic), " ".join(ids))
