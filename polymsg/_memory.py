"""``memory://`` — the in-process driver and polymsg's reference semantics.

Each ``memory://NAME`` is one bus, shared by every transport of the process
that names it and isolated from every other name. A bus behaves like a small
AMQP broker, so code tested on it behaves the same on RabbitMQ:

* queues hold messages until a consumer takes them (store and forward); the
  sender declares the queue it sends to; consumers of one queue compete,
  round robin, each holding at most ``prefetch`` unacknowledged messages;
* RPC uses a shared topic queue, a per-server queue and a per-listener
  fanout queue, all scoped by exchange; notifications are routed by
  ``<topic>.<priority>`` to the default queue and to one queue per pool;
* ``message_ttl`` drops a message not taken in time; ``queue_ttl`` removes a
  queue (with its messages) after that long without a consumer;
* every message is JSON-encoded when sent and decoded when delivered, so it
  accepts nothing a network driver would reject and shares no objects.

Callbacks run on the thread that made the delivery possible (the sender's,
or the worker's that acknowledged); the driver starts no thread of its own.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from polymsg._json import dumps, loads
from polymsg._target import check_context
from polymsg.driver import (
    Driver,
    DriverOptions,
    HealthStat,
    IncomingMessage,
    Listener,
    MessageUndeliverable,
    OnMessage,
    Reply,
    SendOptions,
    Target,
    TransportURL,
)

__all__ = ["MemoryDriver"]

LOG = logging.getLogger(__name__)

_PREFETCH = 64
# Flow control: a sender waits (up to _FLOW_WAIT s per message) while a queue
# that has consumers holds _HIGH_WATER messages, so a fast sender cannot grow
# the process without bound. Queues without consumers store and forward freely.
_HIGH_WATER = 1000
_FLOW_WAIT = 1.0
QueueKey = tuple[str, ...]
_Stored = tuple[bytes, "float | None", str]  # body, expiry (monotonic), message id


class _Consumer:
    __slots__ = ("active", "callback", "delivering", "unacked")

    def __init__(self, callback: OnMessage) -> None:
        self.callback = callback
        self.unacked = 0
        self.active = True
        self.delivering = threading.Lock()  # held while a callback runs


class _Queue:
    __slots__ = ("blocked", "consumers", "expires", "idle_since", "key", "messages", "next")

    def __init__(self, key: QueueKey, expires: float | None) -> None:
        self.key = key
        self.expires = expires
        self.messages: deque[_Stored] = deque()
        self.consumers: list[_Consumer] = []
        self.next = 0
        self.blocked = 0  # senders waiting for room
        self.idle_since = time.monotonic()

    def expired(self, now: float) -> bool:
        return (self.expires is not None and not self.consumers
                and now - self.idle_since >= self.expires)


class _Bus:
    """One named in-process broker. All state changes happen under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.drained = threading.Condition(self.lock)
        self.queues: dict[QueueKey, _Queue] = {}
        self.bindings: dict[tuple[str, str], set[QueueKey]] = {}
        self.reply_routes: dict[str, MemoryDriver] = {}

    # -- declarations (lock held) --------------------------------------
    def declare(self, key: QueueKey, expires: float | None) -> _Queue:
        queue = self.queues.get(key)
        if queue is not None and queue.expired(time.monotonic()):
            LOG.info("queue %s expired after %ss without a consumer; %d message(s) dropped",
                     "/".join(key), queue.expires, len(queue.messages))
            self._delete(queue)
            queue = None
        if queue is None:
            queue = self.queues[key] = _Queue(key, expires)
        elif expires is not None and queue.expires != expires:
            LOG.warning("queue %s already exists with queue_ttl=%s; keeping it, not %s",
                        "/".join(key), queue.expires, expires)
        return queue

    def bind(self, exchange: str, routing_key: str, key: QueueKey) -> None:
        self.bindings.setdefault((exchange, routing_key), set()).add(key)

    def _delete(self, queue: _Queue) -> None:
        self.queues.pop(queue.key, None)
        for bound in self.bindings.values():
            bound.discard(queue.key)

    # -- message flow ----------------------------------------------------
    def put(self, key: QueueKey, queue_ttl: float | None, body: bytes, ttl: float | None,
            msg_id: str, declare: bool = True) -> bool:
        """Store a message in queue ``key`` (declared first when ``declare``);
        False when the queue does not exist (or has expired) and nothing was stored."""
        expires_at = time.monotonic() + ttl if ttl is not None else None
        queue: _Queue | None
        with self.lock:
            if declare:
                queue = self.declare(key, queue_ttl)
            else:
                queue = self.queues.get(key)
                if queue is not None and queue.expired(time.monotonic()):
                    self._delete(queue)
                    queue = None
            if queue is None:
                return False
            if queue.consumers and len(queue.messages) >= _HIGH_WATER:
                self._wait_for_room(queue)
            queue.messages.append((body, expires_at, msg_id))
            ready = self._pick(queue)
        self._deliver(queue, ready)
        return True

    def _wait_for_room(self, queue: _Queue) -> None:
        """Block the sender until the queue drains (lock held; bounded wait, so an
        endpoint casting to its own busy topic slows down but never deadlocks)."""
        deadline = time.monotonic() + _FLOW_WAIT
        queue.blocked += 1
        try:
            while queue.consumers and len(queue.messages) >= _HIGH_WATER:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.drained.wait(remaining):
                    return
        finally:
            queue.blocked -= 1

    def _pick(self, queue: _Queue) -> list[tuple[_Consumer, _Stored]]:
        """Pair waiting messages with consumers that have room (lock held)."""
        ready = []
        consumers = queue.consumers
        now = None
        while queue.messages and consumers:
            for _ in range(len(consumers)):
                queue.next = (queue.next + 1) % len(consumers)
                consumer = consumers[queue.next]
                if consumer.unacked < _PREFETCH:
                    break
            else:
                break
            item = queue.messages.popleft()
            _, expires_at, msg_id = item
            if expires_at is not None:
                now = now or time.monotonic()
                if now >= expires_at:
                    LOG.info("message %s expired in queue %s before a consumer took it",
                             msg_id, "/".join(queue.key))
                    continue
            consumer.unacked += 1
            ready.append((consumer, item))
        if ready and queue.blocked and len(queue.messages) < _HIGH_WATER:
            self.drained.notify_all()
        return ready

    def _deliver(self, queue: _Queue, ready: list[tuple[_Consumer, _Stored]]) -> None:
        for consumer, item in ready:
            with consumer.delivering:
                if consumer.active:
                    consumer.callback(_Incoming(self, queue, consumer, item))
                    continue
            self._give_back(queue, consumer, item)

    def _give_back(self, queue: _Queue, consumer: _Consumer, item: _Stored) -> None:
        with self.lock:
            consumer.unacked -= 1
            queue.messages.appendleft(item)
            ready = self._pick(queue)
        self._deliver(queue, ready)

    def settle(self, queue: _Queue, consumer: _Consumer, requeue: _Stored | None) -> None:
        with self.lock:
            consumer.unacked -= 1
            if requeue is not None:
                queue.messages.append((requeue[0], None, requeue[2]))
            ready = self._pick(queue)
        self._deliver(queue, ready)

    def subscribe(self, queue: _Queue, callback: OnMessage) -> _Consumer:
        consumer = _Consumer(callback)
        with self.lock:
            queue.consumers.append(consumer)
            ready = self._pick(queue)
        self._deliver(queue, ready)
        return consumer

    def unsubscribe(self, queue: _Queue, consumer: _Consumer, auto_delete: bool) -> None:
        with self.lock:
            consumer.active = False
            if consumer in queue.consumers:
                queue.consumers.remove(consumer)
            if not queue.consumers:
                queue.idle_since = time.monotonic()
                if auto_delete:
                    self._delete(queue)
        with consumer.delivering:  # wait out a callback in progress
            pass


_BUSES: dict[str, _Bus] = {}
_BUSES_LOCK = threading.Lock()


def _bus(name: str) -> _Bus:
    with _BUSES_LOCK:
        bus = _BUSES.get(name)
        if bus is None:
            bus = _BUSES[name] = _Bus()
        return bus


class _Incoming(IncomingMessage):
    def __init__(self, bus: _Bus, queue: _Queue, consumer: _Consumer, item: _Stored) -> None:
        envelope = loads(item[0])
        self.ctxt = envelope["ctxt"]
        self.message = envelope["message"]
        self._reply_to = envelope.get("reply_to")
        self._msg_id = envelope.get("msg_id")
        self.call_monitor_timeout = envelope.get("call_monitor_timeout")
        self._bus, self._queue, self._consumer, self._item = bus, queue, consumer, item
        self._settled = False

    def acknowledge(self) -> None:
        self._settle(None)

    def requeue(self) -> None:
        self._settle(self._item)

    def _settle(self, requeue: _Stored | None) -> None:
        if not self._settled:
            self._settled = True
            self._bus.settle(self._queue, self._consumer, requeue)

    def reply(self, result: Any = None, failure: Mapping[str, Any] | None = None) -> None:
        self._send_reply(dumps({"result": result, "failure": failure, "ending": True}))

    def heartbeat(self) -> None:
        self._send_reply(dumps({"result": None, "failure": None, "ending": False}))

    def _send_reply(self, body: bytes) -> None:
        if self._reply_to is None:
            return
        driver = self._bus.reply_routes.get(self._reply_to)
        if driver is None:
            LOG.info("reply to %s dropped: the caller's transport is gone", self._msg_id)
            return
        driver._on_reply(self._msg_id, body)


class _MemoryListener(Listener):
    def __init__(self, bus: _Bus, subscriptions: list[tuple[_Queue, _Consumer, bool]]) -> None:
        self._bus = bus
        self._subscriptions = subscriptions

    def stop(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for queue, consumer, auto_delete in subscriptions:
            self._bus.unsubscribe(queue, consumer, auto_delete)


class MemoryDriver(Driver):
    """The in-process driver (see the module docstring)."""

    capabilities = frozenset({
        "rpc", "fanout", "notify", "pools", "requeue", "store_and_forward",
        "queue_ttl", "message_ttl",
    })
    send_features = frozenset({"call_monitor", "at_least_once"})
    messaging_system = "memory"
    # a send never waits for I/O; only flow control holds it (up to _FLOW_WAIT)
    blocking_sends = frozenset[str]()

    def __init__(self, url: TransportURL, options: DriverOptions, conf: Any) -> None:
        super().__init__(url, options, conf)
        name = url.hosts[0].hostname if url.hosts else None
        self._bus = _bus(name or "")
        self._reply_to = uuid.uuid4().hex
        self._waiters: dict[str, tuple[Future[Reply], SendOptions]] = {}
        self._ids = itertools.count()
        self._bus.reply_routes[self._reply_to] = self

    def health(self) -> Sequence[HealthStat]:
        """The bus's queues, the messages waiting in them and those handed out
        unacknowledged (every transport on the same ``memory://NAME`` shares them)."""
        bus = self._bus
        with bus.lock:
            queues = list(bus.queues.values())
            waiting = sum(len(queue.messages) for queue in queues)
            unacked = sum(c.unacked for queue in queues for c in queue.consumers)
        return [HealthStat("queues", len(queues)), HealthStat("queue.messages", waiting),
                HealthStat("queue.unacknowledged", unacked)]

    # -- sending ---------------------------------------------------------
    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        msg_id = f"{self._reply_to}.{next(self._ids)}"
        body = dumps({"ctxt": check_context(ctxt), "message": message,
                      "reply_to": self._reply_to, "msg_id": msg_id,
                      "call_monitor_timeout": options.call_monitor_timeout})
        future: Future[Reply] = Future()
        self._waiters[msg_id] = (future, options)
        future.add_done_callback(lambda _f: self._waiters.pop(msg_id, None))
        stored = self._bus.put(_rpc_key(target), options.queue_ttl, body, options.message_ttl,
                               msg_id, declare=not options.at_least_once)
        if not stored:
            future.set_exception(_undeliverable(target))
        return future

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        msg_id = f"{self._reply_to}.{next(self._ids)}"
        body = dumps({"ctxt": check_context(ctxt), "message": message, "msg_id": msg_id})
        if target.fanout:
            stored = self._fanout(target, body, options.message_ttl, msg_id)
        else:
            stored = self._bus.put(_rpc_key(target), options.queue_ttl, body,
                                   options.message_ttl, msg_id,
                                   declare=not options.at_least_once)
        if options.at_least_once and not stored:
            failed: Future[None] = Future()
            failed.set_exception(_undeliverable(target))
            return failed
        return _done()

    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        body = dumps({"ctxt": check_context(ctxt), "message": message})
        assert target.exchange is not None and target.topic is not None
        routing_key = f"{target.topic}.{str(message['priority']).lower()}"
        bus = self._bus
        with bus.lock:
            default = ("notify", target.exchange, routing_key, "")
            bus.declare(default, options.queue_ttl)
            bus.bind(target.exchange, routing_key, default)
            keys = list(bus.bindings[(target.exchange, routing_key)])
        for key in keys:
            bus.put(key, None, body, options.message_ttl, message.get("message_id", "?"),
                    declare=False)
        return _done()

    def _fanout(self, target: Target, body: bytes, ttl: float | None, msg_id: str) -> bool:
        bus = self._bus
        assert target.exchange is not None and target.topic is not None
        with bus.lock:
            keys = list(bus.bindings.get((target.exchange, f"{target.topic}_fanout"), ()))
        if not keys:
            LOG.info("fanout cast %s to topic %r reached no server", msg_id, target.topic)
        stored = [bus.put(key, None, body, ttl, msg_id, declare=False) for key in keys]
        return any(stored)

    def _on_reply(self, msg_id: str, body: bytes) -> None:
        data = loads(body)
        if not data.get("ending", True):
            waiter = self._waiters.get(msg_id)
            if waiter is not None and waiter[1].heartbeat is not None:
                waiter[1].heartbeat()
            return
        waiter = self._waiters.pop(msg_id, None)
        if waiter is None:
            LOG.info("late reply to %s dropped: the caller stopped waiting", msg_id)
            return
        waiter[0].set_result(Reply(result=data["result"], failure=data["failure"]))

    # -- listening -------------------------------------------------------
    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        assert target.exchange is not None and target.topic is not None
        bus = self._bus
        fanout_key: QueueKey = ("fanout", target.exchange, target.topic, uuid.uuid4().hex)
        with bus.lock:
            queues = [
                (bus.declare(("rpc", target.exchange, target.topic), queue_ttl), False),
                (bus.declare(("rpc", target.exchange, target.topic, target.server or ""),
                             queue_ttl), False),
                (bus.declare(fanout_key, None), True),
            ]
            bus.bind(target.exchange, f"{target.topic}_fanout", fanout_key)
        return self._subscribe(queues, on_message)

    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        bus = self._bus
        queues: dict[QueueKey, _Queue] = {}
        with bus.lock:
            for target, priority in targets_and_priorities:
                assert target.exchange is not None
                routing_key = f"{target.topic}.{priority}"
                key = ("notify", target.exchange, routing_key, pool or "")
                queues[key] = bus.declare(key, None)
                bus.bind(target.exchange, routing_key, key)
        return self._subscribe([(q, False) for q in queues.values()], on_message)

    def _subscribe(self, queues: list[tuple[_Queue, bool]], on_message: OnMessage) -> Listener:
        subscriptions = [(queue, self._bus.subscribe(queue, on_message), auto_delete)
                         for queue, auto_delete in queues]
        return _MemoryListener(self._bus, subscriptions)

    def cleanup(self) -> None:
        self._bus.reply_routes.pop(self._reply_to, None)
        for future, _options in list(self._waiters.values()):
            future.cancel()


def _rpc_key(target: Target) -> QueueKey:
    assert target.exchange is not None and target.topic is not None
    if target.server:
        return ("rpc", target.exchange, target.topic, target.server)
    return ("rpc", target.exchange, target.topic)


def _undeliverable(target: Target) -> MessageUndeliverable:
    where = f"topic {target.topic!r}" + (f", server {target.server!r}" if target.server else "")
    return MessageUndeliverable(
        f"no queue took the message for {where} on exchange {target.exchange!r} "
        "(nothing listens there; at_least_once does not store it)",
        exchange=target.exchange,
        routing_key=f"{target.topic}.{target.server}" if target.server else target.topic)


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future
