"""``loopback://`` — a complete, minimal polymsg driver.

The worked example of the "Writing a driver" guide. Messages travel between
the transports of one process that name the same ``loopback://NAME``, so the
driver needs no broker, yet it does everything a network driver does: it
routes calls, casts, fanouts and notifications by exchange and topic, spreads
work over competing servers, carries replies back by message id, encodes
every message as JSON (so nothing a network driver would reject gets
through) and lets :meth:`Listener.stop` wait out a running callback.

It declares ``rpc``, ``fanout`` and ``notify`` and nothing more: the facade
answers pools, requeue, TTL hints and several hosts with
:class:`polymsg.NotSupported` before the driver sees them. Without
``store_and_forward`` a message nobody listens for is not kept: it is
dropped with a warning naming it, never silently.

Register it on the ``polymsg.drivers`` entry-point group::

    [project.entry-points."polymsg.drivers"]
    loopback = "loopback_driver:LoopbackDriver"
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

from polymsg.driver import (
    Driver,
    DriverOptions,
    IncomingMessage,
    Listener,
    OnMessage,
    Reply,
    SendOptions,
    Target,
    TransportURL,
    dumps,
    loads,
)

__all__ = ["LoopbackDriver"]

LOG = logging.getLogger(__name__)

Key = tuple[str, ...]
ReplyTo = Callable[[bytes], None]


class _Incoming(IncomingMessage):
    """A delivered message. Nothing to acknowledge: delivery is immediate."""

    def __init__(self, body: bytes, reply_to: ReplyTo | None) -> None:
        envelope = loads(body)
        self.ctxt = envelope["ctxt"]
        self.message = envelope["message"]
        self._reply_to = reply_to

    def acknowledge(self) -> None:
        pass

    def requeue(self) -> None:  # never called: the driver does not declare requeue
        pass

    def reply(self, result: Any = None, failure: Mapping[str, Any] | None = None) -> None:
        if self._reply_to is not None:
            # Encode first: an unencodable result raises SerializationError
            # before anything is sent, and the facade replies with a failure.
            self._reply_to(dumps({"result": result, "failure": failure}))


class _Subscriber:
    """One listener's callback. ``lock`` is held while it runs, so stopping
    the listener can wait for a delivery in progress."""

    def __init__(self, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.lock = threading.Lock()
        self.active = True

    def deliver(self, body: bytes, reply_to: ReplyTo | None) -> bool:
        with self.lock:
            if not self.active:
                return False
            # The facade's callback only queues the message for its workers,
            # so running it on the sender's thread never blocks the sender.
            self.on_message(_Incoming(body, reply_to))
            return True


class _Hub:
    """The routing table of one ``loopback://NAME``: key -> subscribers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: dict[Key, list[_Subscriber]] = {}
        self.turn = itertools.count()

    def subscribe(self, keys: Sequence[Key], subscriber: _Subscriber) -> None:
        with self.lock:
            for key in keys:
                self.routes.setdefault(key, []).append(subscriber)

    def unsubscribe(self, keys: Sequence[Key], subscriber: _Subscriber) -> None:
        with self.lock:
            for key in keys:
                subscribers = self.routes.get(key, [])
                if subscriber in subscribers:
                    subscribers.remove(subscriber)

    def to_one(self, key: Key, body: bytes, reply_to: ReplyTo | None = None) -> bool:
        """Deliver to one subscriber of ``key``, taking turns; False if none took it."""
        with self.lock:
            subscribers = list(self.routes.get(key, ()))
            start = next(self.turn)
        for offset in range(len(subscribers)):
            if subscribers[(start + offset) % len(subscribers)].deliver(body, reply_to):
                return True
        return False

    def to_every(self, key: Key, body: bytes) -> int:
        """Deliver to every subscriber of ``key``; how many took it."""
        with self.lock:
            subscribers = list(self.routes.get(key, ()))
        return sum(subscriber.deliver(body, None) for subscriber in subscribers)


_HUBS: dict[str, _Hub] = {}
_HUBS_LOCK = threading.Lock()


def _hub(name: str) -> _Hub:
    with _HUBS_LOCK:
        return _HUBS.setdefault(name, _Hub())


class _LoopbackListener(Listener):
    def __init__(self, hub: _Hub, keys: Sequence[Key], subscriber: _Subscriber) -> None:
        self._hub, self._keys, self._subscriber = hub, keys, subscriber

    def stop(self) -> None:
        self._hub.unsubscribe(self._keys, self._subscriber)
        self._subscriber.active = False
        with self._subscriber.lock:  # wait out a callback that is running
            pass


def _rpc_key(target: Target) -> Key:
    # The facade fills in ``exchange`` and guarantees a ``topic``.
    assert target.exchange is not None and target.topic is not None
    if target.server:
        return ("rpc", target.exchange, target.topic, target.server)
    return ("rpc", target.exchange, target.topic)


def _accepted() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


class LoopbackDriver(Driver):
    """In-process transport between the transports naming one ``loopback://NAME``."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"rpc", "fanout", "notify"})

    def __init__(self, url: TransportURL, options: DriverOptions, conf: Any) -> None:
        super().__init__(url, options, conf)
        name = url.hosts[0].hostname if url.hosts else None
        self._hub = _hub(name or "")
        self._waiting: dict[str, Future[Reply]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- sending -------------------------------------------------------------
    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        body = dumps({"ctxt": ctxt, "message": message})  # SerializationError before sending
        msg_id = uuid.uuid4().hex
        future: Future[Reply] = Future()
        with self._lock:
            self._waiting[msg_id] = future
        # The facade cancels the future when the call times out: forget it then.
        future.add_done_callback(lambda _: self._forget(msg_id))
        if not self._hub.to_one(_rpc_key(target), body, lambda reply: self._replied(msg_id,
                                                                                   reply)):
            # Not stored: the caller gets MessagingTimeout when its timeout passes.
            LOG.warning("call %s to topic %r: no server is listening", msg_id, target.topic)
        return future

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        body = dumps({"ctxt": ctxt, "message": message})
        assert target.exchange is not None and target.topic is not None
        if target.fanout:
            delivered = self._hub.to_every(("fanout", target.exchange, target.topic), body) > 0
        else:
            delivered = self._hub.to_one(_rpc_key(target), body)
        if not delivered:
            LOG.warning("cast of %r to topic %r dropped: no server is listening",
                        message.get("method"), target.topic)
        return _accepted()

    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        body = dumps({"ctxt": ctxt, "message": message})
        assert target.exchange is not None and target.topic is not None
        key = ("notify", target.exchange, target.topic, str(message["priority"]).lower())
        if not self._hub.to_one(key, body):
            LOG.warning("notification %s on topic %r dropped: no listener",
                        message.get("message_id"), target.topic)
        return _accepted()

    def _replied(self, msg_id: str, body: bytes) -> None:
        with self._lock:
            future = self._waiting.pop(msg_id, None)
        if future is None:
            LOG.info("reply to %s dropped: the caller stopped waiting", msg_id)
            return
        data = loads(body)
        future.set_result(Reply(result=data["result"], failure=data["failure"]))

    def _forget(self, msg_id: str) -> None:
        with self._lock:
            self._waiting.pop(msg_id, None)

    # -- listening -----------------------------------------------------------
    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        assert target.exchange is not None and target.topic is not None
        keys = [("rpc", target.exchange, target.topic),
                ("rpc", target.exchange, target.topic, target.server or ""),
                ("fanout", target.exchange, target.topic)]
        return self._subscribe(keys, on_message)

    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        keys = []
        for target, priority in targets_and_priorities:
            assert target.exchange is not None and target.topic is not None
            keys.append(("notify", target.exchange, target.topic, priority))
        return self._subscribe(keys, on_message)

    def _subscribe(self, keys: Sequence[Key], on_message: OnMessage) -> Listener:
        subscriber = _Subscriber(on_message)
        self._hub.subscribe(keys, subscriber)
        return _LoopbackListener(self._hub, keys, subscriber)

    def cleanup(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting, self._waiting = list(self._waiting.values()), {}
        for future in waiting:
            future.cancel()
