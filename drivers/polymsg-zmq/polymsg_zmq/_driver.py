"""``zmq://`` — the brokerless ZeroMQ driver.

Each host runs one receiver (:mod:`polymsg_zmq._receiver`); a transport
started on a host with none starts one in its own process (``start_receiver``),
so ``zmq://`` works with nothing else installed. Senders ask the matchmaker
which hosts serve a topic and send to those hosts' receivers over TCP; the
receivers hand messages to local servers and listeners over IPC. A call's
reply goes straight back to the caller's reply socket, matched by message
id. Delivery semantics:

* call: executed at most once; the request expires with the call's timeout;
* cast/notify: accepted once handed to a connected receiver; a receiver that
  cannot be reached within ``retry`` attempts is a
  :class:`~polymsg.MessageDeliveryFailure`; a receiver holds messages for a
  topic with no consumer (store and forward) until ``message_ttl``, until
  ``queue_ttl`` without a consumer, or up to ``max_held_messages``, and logs
  what it drops with the message ids;
* fanout: to every server listening when the message reaches each host;
* send features: ``call_monitor`` (the ``cm`` header field; servers send
  heartbeat frames over the reply path) and ``at_least_once`` (refused at
  once when the matchmaker lists no host, or by the receiving host's
  receiver when no local server is registered; casts then wait for the
  receiver's confirmation, at most ``receiver_timeout``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

import zmq
from oslo_config import cfg

from polymsg import MessageDeliveryFailure, MessageUndeliverable, MessagingError
from polymsg.driver import (
    Driver,
    DriverOptions,
    HealthStat,
    Listener,
    OnMessage,
    Reply,
    SendOptions,
    Target,
    TransportURL,
    dumps,
)
from polymsg_zmq._consumer import Subscription, ZmqListener
from polymsg_zmq._errors import translated
from polymsg_zmq._ipclock import RUNNING
from polymsg_zmq._matchmaker import Matchmaker, make_matchmaker
from polymsg_zmq._options import GROUP, OPTS, Settings, settings_from
from polymsg_zmq._outbox import Outbox
from polymsg_zmq._peers import Peers
from polymsg_zmq._receiver import Receiver, ReceiverRunning
from polymsg_zmq._replies import ReplyWaiter
from polymsg_zmq._wire import (
    AT_LEAST_ONCE_CALL,
    AT_LEAST_ONCE_CAST,
    MAGIC,
    encode_header,
    pack,
    validate_name,
)

__all__ = ["ZmqDriver"]

LOG = logging.getLogger(__name__)

#: Seconds messages keep following unrouted ones through our receiver once a host is known.
_STICKY_GRACE = 1.0
_NOT_STICKY = -1.0



class _Accepted(Future[None]):
    """What a one-way send returns: already resolved, so ``result()`` takes no lock."""

    def result(self, timeout: float | None = None) -> None:
        """None: the transport has accepted the message."""


_DONE: Future[None] = _Accepted()
_DONE.set_result(None)


def _failed(exc: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future


def _routing_key(target: Target) -> str:
    return f"{target.topic}.{target.server}" if target.server else str(target.topic)


class ZmqDriver(Driver):
    """The ``zmq`` transport driver (see the module docstring and the README)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({
        "rpc", "fanout", "notify", "pools", "requeue", "store_and_forward",
        "queue_ttl", "message_ttl",
    })
    send_features: ClassVar[frozenset[str]] = frozenset({"call_monitor", "at_least_once"})
    options_group: ClassVar[str | None] = GROUP
    messaging_system: ClassVar[str | None] = "zeromq"

    @classmethod
    def list_opts(cls) -> Sequence[cfg.Opt]:
        """The ``[polymsg_zmq]`` options (URL query keys may override them)."""
        return OPTS

    def __init__(self, url: TransportURL, options: DriverOptions, conf: cfg.ConfigOpts) -> None:
        super().__init__(url, options, conf)
        self.settings: Settings = settings_from(options.values, url)
        self.matchmaker: Matchmaker = make_matchmaker(self.settings)
        with translated("creating a zmq context"):
            self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.peers = Peers(self.context, self.settings)
        #: What incoming messages reply and requeue through.
        self.outbox = Outbox(self.settings, self.peers, self.matchmaker)
        self._own_endpoint = self.settings.endpoint(self.settings.address)
        self._replies: ReplyWaiter | None = None
        self._receiver: Receiver | None = None
        self._checked_receiver = False
        self._lock = threading.Lock()
        self._listeners: weakref.WeakSet[ZmqListener] = weakref.WeakSet()
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:12]
        self._turn = itertools.count()
        self._headers: dict[tuple[Any, ...], bytes] = {}
        # (target, options, unrouted, header) of the last cast: clients reuse both
        self._last_cast: tuple[Any, ...] = (None, None, None, b"")
        self._endpoints: dict[str, str] = {}
        self._unrouted: dict[tuple[str | None, str | None], float | None] = {}
        self._closed = False

    # -- receiver --------------------------------------------------------------------------

    def ensure_receiver(self, quiet: bool = False) -> None:
        """Start a receiver in this process if this host has none (and that is allowed)."""
        if not self.settings.start_receiver:
            return
        with self._lock:
            if self._receiver is not None or self._closed:
                return
            receiver = Receiver(self.settings, self.matchmaker)
            try:
                receiver.start()
            except ReceiverRunning:
                return
            except MessagingError:
                if quiet:
                    LOG.warning("zmq: could not start a receiver for %s", self.settings.address,
                                exc_info=True)
                    return
                raise
            self._receiver = receiver

    def health(self) -> Sequence[HealthStat]:
        """Peer connections, the hosts the matchmaker knows, and what this host's
        receiver holds for consumers when it runs in this process (started by this
        transport, another one, or ``polymsg zmq-receiver``)."""
        stats = [HealthStat("peers", len(self.peers)),
                 HealthStat("known_hosts", self.matchmaker.known_hosts())]
        receiver = self._receiver or RUNNING.get(self.settings.ipc_dir)
        if receiver is not None:
            messages, size, topics = receiver.held()
            stats += [HealthStat("receiver.held_messages", messages),
                      HealthStat("receiver.held_bytes", size),
                      HealthStat("receiver.topics", topics)]
        return stats

    def _first_use(self) -> None:
        if not self._checked_receiver:
            self.ensure_receiver()
            self._checked_receiver = True

    # -- sending ---------------------------------------------------------------------------

    def _header(self, kind: str, target: Target, options: SendOptions, ttl: float | None,
                unrouted: bool, priority: str | None = None,
                pools: list[str] | None = None, confirm: int | None = None) -> bytes:
        key = (kind, target.exchange, target.topic, target.server, ttl, options.queue_ttl,
               unrouted, priority, tuple(pools) if pools is not None else None, confirm,
               options.call_monitor_timeout)
        header = self._headers.get(key)
        if header is None:
            exchange = validate_name(str(target.exchange), "exchange")
            topic = validate_name(str(target.topic), "topic")
            fields: dict[str, Any] = {"k": kind, "x": exchange, "t": topic,
                                      "s": target.server, "ttl": ttl, "q": options.queue_ttl,
                                      "u": unrouted}
            if kind == "note":
                fields.update(p=priority, pools=pools)
            if confirm is not None:
                fields["a"] = confirm
            if options.call_monitor_timeout is not None:
                fields["cm"] = options.call_monitor_timeout
            header = MAGIC + encode_header(fields)
            if len(self._headers) > 4096:
                self._headers.clear()
            self._headers[key] = header
        return header

    def _send(self, host: str, frames: list[bytes], options: SendOptions,
              deadline: float | None = None, post: bool = False) -> None:
        """Send to ``host``'s receiver; ``post`` lets one-way messages be batched."""
        if len(frames[1]) > self.settings.max_message_size:
            raise MessageDeliveryFailure(
                f"zmq: the message is {len(frames[1]):,} bytes, more than receivers accept "
                f"(max_message_size = {self.settings.max_message_size:,})")
        endpoint = self._endpoints.get(host)
        if endpoint is None:
            try:
                endpoint = self.settings.endpoint(host)
            except ValueError as exc:
                raise MessageDeliveryFailure(f"zmq: bad host address {host!r}: {exc}") from exc
            self._endpoints[host] = endpoint
        peer = self.peers.get(endpoint, watch=True)
        if (post and peer.post(frames)) or peer.try_send(frames):
            return
        if endpoint == self._own_endpoint:
            self.ensure_receiver(quiet=True)
        peer.send(frames, retry=options.retry, interval=self.settings.retry_interval,
                  deadline=deadline)

    def _rpc_route(self, target: Target) -> tuple[str, bool]:
        """The host to send an RPC message to, and whether it is unrouted."""
        hosts = self.matchmaker.rpc_hosts(str(target.exchange), str(target.topic),
                                          target.server)
        if hosts and (not self._unrouted or not self._sticky(target)):
            return hosts[next(self._turn) % len(hosts)] if len(hosts) > 1 else hosts[0], False
        return self._no_host(target), True

    def _sticky(self, target: Target) -> bool:
        """True while messages for ``target`` must still go through our receiver.

        Once a message found no host, later ones follow it through this host's
        receiver (which forwards them in order) until a host has been known
        for a moment, so a topic's messages reach its new server in order.
        """
        key = (target.exchange, target.topic)
        until = self._unrouted.get(key, _NOT_STICKY)
        if until is _NOT_STICKY:
            return False
        now = time.monotonic()
        if until is None:
            self._unrouted[key] = now + _STICKY_GRACE
            return True
        if now < until:
            return True
        self._unrouted.pop(key, None)
        return False

    def _no_host(self, target: Target) -> str:
        if not self.matchmaker.dynamic:
            raise MessageDeliveryFailure(
                f"zmq: no host serves topic {target.topic!r}"
                + (f" server {target.server!r}" if target.server else "")
                + f" ({self.settings.matchmaker} matchmaker)")
        # Our receiver holds it until a host registers, and forwards it then.
        self._unrouted.setdefault((target.exchange, target.topic), None)
        return self.settings.address

    def call(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[Reply]:
        """Send a request; the future gets the reply from the caller's reply socket."""
        self._first_use()
        timeout = options.timeout
        deadline = time.monotonic() + timeout if timeout is not None else None
        ttl = options.message_ttl if options.message_ttl is not None else timeout
        replies = self._reply_waiter()
        msg_id = f"{self._id_prefix}.{next(self._ids)}"
        fields = {"i": msg_id, "c": ctxt, "m": message, "r": replies.endpoint}
        if options.at_least_once:
            fields["a"] = replies.endpoint
            try:
                host, unrouted = self._served_route(target), False
            except MessageUndeliverable as exc:
                return _failed(exc)
            confirm: int | None = AT_LEAST_ONCE_CALL
        else:
            host, unrouted = self._rpc_route(target)
            confirm = None
        body = pack(dumps(fields))
        header = self._header("rpc", target, options, ttl, unrouted, confirm=confirm)
        future = replies.expect(msg_id, options.heartbeat)
        try:
            with translated("sending a call"):
                self._send(host, [header, body], options, deadline)
        except BaseException:
            future.cancel()
            raise
        return future

    def cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
             options: SendOptions) -> Future[None]:
        """Send one-way; resolved once a receiver has taken the message."""
        if not self._checked_receiver:
            self._first_use()
        if options.at_least_once and not target.fanout:
            return self._confirmed_cast(target, ctxt, message, options)
        body = pack(dumps({"i": f"{self._id_prefix}.{next(self._ids)}", "c": ctxt,
                           "m": message, "r": None}))
        if target.fanout:
            hosts = self.matchmaker.rpc_hosts(str(target.exchange), str(target.topic))
            header = self._header("fan", target, options, options.message_ttl, False)
            if not hosts:
                LOG.warning("zmq: fanout on topic %s reached no host: none serves it",
                            target.topic)
            for host in hosts:
                self._send(host, [header, body], options, post=True)
            return _DONE
        host, unrouted = self._rpc_route(target)
        last = self._last_cast
        if last[0] is target and last[1] is options and last[2] is unrouted:
            header = last[3]
        else:
            header = self._header("rpc", target, options, options.message_ttl, unrouted)
            self._last_cast = (target, options, unrouted, header)
        self._send(host, [header, body], options, post=True)
        return _DONE

    def _served_route(self, target: Target) -> str:
        """A host serving ``target`` for an at-least-once send (never our receiver's
        holding area); :class:`MessageUndeliverable` when the matchmaker knows none (a
        matchmaker that cannot answer is a :class:`MessageDeliveryFailure`, as always)."""
        hosts = self.matchmaker.rpc_hosts(str(target.exchange), str(target.topic),
                                          target.server)
        if not hosts:
            raise MessageUndeliverable(
                f"zmq: no host serves topic {target.topic!r}"
                + (f" server {target.server!r}" if target.server else "")
                + f" on exchange {target.exchange!r} ({self.settings.matchmaker} "
                "matchmaker); at_least_once does not hold it for a server to come",
                exchange=target.exchange, routing_key=_routing_key(target))
        return hosts[next(self._turn) % len(hosts)] if len(hosts) > 1 else hosts[0]

    def _confirmed_cast(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
                        options: SendOptions) -> Future[None]:
        """An at-least-once cast: sent on its own, resolved when the receiver of a host
        serving the topic confirms it took it, failed when it says nothing serves it."""
        try:
            host = self._served_route(target)
        except MessageUndeliverable as exc:
            return _failed(exc)
        replies = self._reply_waiter()
        msg_id = f"{self._id_prefix}.{next(self._ids)}"
        body = pack(dumps({"i": msg_id, "c": ctxt, "m": message, "r": None,
                           "a": replies.endpoint}))
        header = self._header("rpc", target, options, options.message_ttl, False,
                              confirm=AT_LEAST_ONCE_CAST)
        limit = self.settings.receiver_timeout
        future = replies.expect(msg_id, limit=limit)
        try:
            with translated("sending a cast"):
                self._send(host, [header, body], options, time.monotonic() + limit)
        except BaseException:
            future.cancel()
            raise
        return future  # type: ignore[return-value]  # resolves to a Reply, never read

    def notify(self, target: Target, ctxt: dict[str, Any], message: dict[str, Any],
               options: SendOptions) -> Future[None]:
        """Publish a notification to every pool listening for its topic and priority."""
        self._first_use()
        priority = str(message.get("priority", "")).lower()
        body = pack(dumps({"c": ctxt, "m": message}))
        routes = self.matchmaker.note_hosts(str(target.exchange), str(target.topic), priority)
        unrouted = not routes or self._sticky(target)
        if unrouted:
            routes = [(self._no_host(target), None)]
        for host, pools in routes:
            header = self._header("note", target, options, options.message_ttl, unrouted,
                                  priority, pools)
            self._send(host, [header, body], options, post=True)
        return _DONE

    def _reply_waiter(self) -> ReplyWaiter:
        replies = self._replies
        if replies is not None:
            return replies
        with self._lock:
            if self._closed:
                raise MessageDeliveryFailure("zmq: the transport is closed")
            if self._replies is None:
                with translated("opening the reply socket"):
                    self._replies = ReplyWaiter(self.context, self.settings)
            return self._replies

    # -- listening -------------------------------------------------------------------------

    def listen(self, target: Target, on_message: OnMessage, *,
               queue_ttl: float | None = None) -> Listener:
        """Consume the topic (shared), the topic+server and the topic's fanout."""
        exchange = validate_name(str(target.exchange), "exchange")
        topic = validate_name(str(target.topic), "topic")
        registration = {"kind": "rpc", "server": target.server, "qttl": queue_ttl}
        return self._start([Subscription(exchange, topic, registration, fanout=True)],
                           on_message, "")

    def listen_for_notifications(self, targets_and_priorities: Sequence[tuple[Target, str]],
                                 pool: str | None, on_message: OnMessage) -> Listener:
        """Consume notifications; listeners of one pool share them, each pool gets a copy."""
        by_topic: dict[tuple[str, str], list[str]] = {}
        for target, priority in targets_and_priorities:
            key = (validate_name(str(target.exchange), "exchange"),
                   validate_name(str(target.topic), "topic"))
            by_topic.setdefault(key, []).append(priority.lower())
        subs = [Subscription(exchange, topic, {"kind": "note", "pool": pool or "",
                                               "priorities": sorted(set(priorities))},
                             fanout=False)
                for (exchange, topic), priorities in by_topic.items()]
        return self._start(subs, on_message, pool or "")

    def _start(self, subs: list[Subscription], on_message: OnMessage, pool: str) -> Listener:
        if self._closed:
            raise MessageDeliveryFailure("zmq: the transport is closed")
        self._first_use()
        with translated("subscribing to the local receiver"):
            listener = ZmqListener(self, subs, on_message, pool)
            listener.start()
        with self._lock:
            self._listeners.add(listener)
        return listener

    def forget(self, listener: ZmqListener) -> None:
        """A listener stopped."""
        with self._lock:
            self._listeners.discard(listener)

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop listeners still running, the reply thread and an in-process receiver;
        close every socket and terminate the context. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listeners = list(self._listeners)
            replies, self._replies = self._replies, None
            receiver, self._receiver = self._receiver, None
        for listener in listeners:
            listener.stop()
        if replies is not None:
            replies.close()
        self.peers.close()
        if receiver is not None:
            receiver.stop()
        self.matchmaker.close()
        self.context.destroy(linger=int(self.settings.linger * 1000))

    def __repr__(self) -> str:
        return f"<ZmqDriver {self.settings.address} ipc={self.settings.ipc_dir} pid={os.getpid()}>"
