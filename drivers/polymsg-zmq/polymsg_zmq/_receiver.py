"""The receiver: one per host, forwarding messages from the TCP port to local consumers.

It binds a ROUTER on ``tcp://<bind_address>:<receiver_port>`` for other
hosts (and local senders), a control ROUTER and a fanout PUB in the IPC
directory, and one ROUTER per exchange/topic in use (see
:mod:`polymsg_zmq._wire`). A lock file in the IPC directory makes it the
only receiver of that directory; the lock dies with the process, so a
killed receiver can be restarted at once.

It registers the topics of its local consumers with the matchmaker, holds
messages no local consumer can take yet (up to their TTL hints), and, with a
dynamic matchmaker, routes messages a sender could not place to the host
that starts serving their topic.

Everything runs on one thread; :meth:`Receiver.stop` joins it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from typing import IO, Any

import zmq

from polymsg import InvalidTarget, MessageDeliveryFailure, MessagingError
from polymsg.driver import SerializationError, dumps, loads
from polymsg_zmq._atleastonce import Answers
from polymsg_zmq._curve import ZapHandler, make_server
from polymsg_zmq._ipclock import RUNNING, ReceiverRunning, take_ipc_lock
from polymsg_zmq._local import registry
from polymsg_zmq._matchmaker import HOST_KEY, Matchmaker, make_matchmaker
from polymsg_zmq._options import Settings, is_loopback
from polymsg_zmq._peers import Peers
from polymsg_zmq._ratelog import RateLimited, clip
from polymsg_zmq._registrar import Registrations
from polymsg_zmq._topics import Consumer, Held, HeldBudget, TopicState, consumer_groups
from polymsg_zmq._wire import (
    MAGIC,
    InvalidFrame,
    decode_deadline,
    decode_header,
    encode_deadline,
    encode_header,
    fanout_prefix,
    ipc_endpoint,
    ipc_path,
    message_ids,
    prepare_dir,
)

__all__ = ["Receiver", "ReceiverRunning"]

LOG = logging.getLogger("polymsg_zmq.receiver")

_TICK = 0.05
_PROBE_TICK = 0.005
_ROUTE_EVERY = 0.25
#: Topics whose unrouted messages are looked up per routing round (every _ROUTE_EVERY).
_ROUTE_TOPICS = 256
_CLOSE_IDLE_TOPIC = 60.0
_BATCH = 256
_BUDGET = 0.02
#: Routing headers longer than this are refused; up to _CACHED_HEADER bytes they are
#: cached (at most _MAX_CACHED of them), so the cache stays under a megabyte.
_MAX_HEADER = 64 * 1024
_CACHED_HEADER = 1024
_MAX_CACHED = 1024


class Receiver:
    """A host's receiver. :meth:`start` binds everything (raising when it cannot) and
    runs the loop on a thread; :meth:`stop` ends it and releases the sockets."""

    def __init__(self, settings: Settings, matchmaker: Matchmaker | None = None) -> None:
        self.settings = settings
        self._own_matchmaker = matchmaker is None
        self.matchmaker = matchmaker or make_matchmaker(settings)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._topics: dict[tuple[str, str], TopicState] = {}
        self._by_socket: dict[zmq.Socket[bytes], TopicState] = {}
        self._thread: threading.Thread | None = None
        self._lock_file: IO[str] | None = None
        self._stopping = threading.Event()
        self._headers: dict[bytes, tuple[dict[str, Any], bytes]] = {}
        self._garbage = RateLimited(LOG, "zmq receiver: malformed messages on the TCP port")
        self._dropped = RateLimited(LOG, "zmq receiver: dropped messages")
        #: Every byte held for consumers, across topics (max_held_bytes).
        self.budget = HeldBudget(settings.max_held_bytes, lambda: self._topics.values())
        self._local = registry(settings.ipc_dir)
        self._next_sweep = 0.0
        self._route_turn = 0
        self._probes: dict[tuple[int, bytes], tuple[TopicState, bytes, float]] = {}
        #: In-process consumers whose workers lag (see _consumer.MAX_BACKLOG): messages
        #: for them are held, and flushed as soon as they catch up.
        self._congested: set[bytes] = set()
        self.bound_port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the IPC directory's lock, bind the sockets and start the loop thread.

        Raises :class:`ReceiverRunning` if another receiver holds the lock and
        :class:`polymsg.MessageDeliveryFailure` if a socket cannot be bound.
        """
        self._take_lock()
        try:
            self._bind()
        except BaseException:
            self._close_sockets()
            self._release_lock()
            raise
        self._thread = threading.Thread(target=self._run, name="polymsg-zmq-receiver",
                                        daemon=True)
        self._thread.start()
        LOG.info("zmq receiver for %s listening on tcp port %s, IPC directory %s",
                 self.settings.address, self.bound_port, self.settings.ipc_dir)
        if self.settings.curve is None and not is_loopback(self.settings.bind_address):
            LOG.warning("zmq receiver for %s accepts connections on %s without CURVE: any "
                        "host that reaches that address can send to this host's services "
                        "and forge replies; set curve_public_key and curve_secret_key "
                        "(polymsg zmq-keygen)", self.settings.address,
                        self.settings.bind_address)

    def _take_lock(self) -> None:
        self._lock_file = take_ipc_lock(self.settings.ipc_dir)
        RUNNING[self.settings.ipc_dir] = self

    def _release_lock(self) -> None:
        if RUNNING.get(self.settings.ipc_dir) is self:
            del RUNNING[self.settings.ipc_dir]
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _bind(self) -> None:
        settings, ctx = self.settings, self._context
        self._wake_in = ctx.socket(zmq.PAIR)
        wake = f"inproc://wake-{uuid.uuid4().hex}"
        self._wake_in.bind(wake)
        self._wake_out = ctx.socket(zmq.PAIR)
        self._wake_out.connect(wake)
        self._zap = ZapHandler(ctx, settings.curve) if settings.curve else None
        self._tcp = self._socket(zmq.ROUTER)
        self._tcp.maxmsgsize = settings.max_message_size
        self._tcp.rcvhwm = 100000
        self._tcp.heartbeat_ivl = 2000
        self._tcp.heartbeat_timeout = 6000
        make_server(self._tcp, settings.curve)
        endpoint = f"tcp://{settings.bind_interface()}:{settings.port}"
        try:
            self._tcp.bind(endpoint)
        except zmq.ZMQError as exc:
            raise MessageDeliveryFailure(f"zmq receiver: cannot bind {endpoint}: {exc}") from exc
        last = str(self._tcp.get_string(zmq.LAST_ENDPOINT))
        self.bound_port = int(last.rsplit(":", 1)[1])
        self._control = self._socket(zmq.ROUTER)
        self._control.bind(ipc_endpoint(os.path.join(settings.ipc_dir, "control")))
        self._pub = self._socket(zmq.PUB)
        self._pub.sndhwm = 100000
        self._pub.bind(ipc_endpoint(os.path.join(settings.ipc_dir, "fanout")))
        self._peers = Peers(ctx, settings)
        self.answers = Answers(settings, self._peers, self.matchmaker)
        self._registrations = Registrations(self.matchmaker, settings.matchmaker_ttl)
        self._registrations.add({HOST_KEY})  # replies may come to this host

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._context.socket(kind)
        sock.linger = 0
        return sock

    def held(self) -> tuple[int, int, int]:
        """Messages and bytes held for consumers, and topics routed (health; read from
        any thread, so a moment old at worst)."""
        return self.budget.messages, self.budget.used, len(self._topics)

    def stop(self) -> None:
        """End the loop, unregister from the matchmaker and close everything. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            with contextlib.suppress(zmq.ZMQError):  # the loop also checks the event
                self._wake_out.send(b"", zmq.NOBLOCK)
            thread.join()
        self._close_sockets()
        self._release_lock()

    def _close_sockets(self) -> None:
        if self._context.closed:
            return
        registrations = getattr(self, "_registrations", None)
        if registrations is not None:
            registrations.close()
        if self._own_matchmaker:
            self.matchmaker.close()
        peers = getattr(self, "_peers", None)
        if peers is not None:
            peers.close()
        if getattr(self, "_zap", None) is not None:
            self._zap.close()  # type: ignore[union-attr]
        self._context.destroy(linger=0)
        if self._lock_file is not None:  # the files are ours only while we hold the lock
            paths = [os.path.join(self.settings.ipc_dir, name) for name in ("control", "fanout")]
            for path in [*paths, *(state.path for state in self._topics.values()
                                   if state.sock is not None)]:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            for state in self._topics.values():
                state.discard()
            self._topics.clear()

    # -- loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        handlers: dict[zmq.Socket[bytes], Any] = {
            self._tcp: self._on_tcp, self._control: self._on_control,
            self._wake_in: self._on_wake,
        }
        if self._zap is not None:
            zap = self._zap
            handlers[zap.socket] = lambda sock: zap.handle()
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        self._poller = poller
        self._handlers = handlers
        next_route = time.monotonic()
        while not self._stopping.is_set():
            if self._congested:
                self._decongest()
            timeout = _PROBE_TICK if self._probes or self._congested else _TICK
            try:
                events = poller.poll(int(timeout * 1000))
            except zmq.ZMQError as exc:  # the context is going away
                LOG.debug("zmq receiver: poll failed: %s", exc)
                break
            for sock, _ in events:
                try:
                    handlers[sock](sock)
                except Exception:
                    LOG.exception("zmq receiver: error handling a message; it was dropped")
            now = time.monotonic()
            if self._probes or now >= self._next_sweep:
                self._tick(now)
            if now >= next_route:
                next_route = now + _ROUTE_EVERY
                self._housekeeping(now)

    def _decongest(self) -> None:
        """Flush what is held for in-process consumers whose workers caught up."""
        done = [ident for ident in self._congested
                if not ((listener := self._local.get(ident)) and listener.congested(resume=True))]
        if done:
            self._congested.difference_update(done)
            now = time.monotonic()
            for state in list(self._topics.values()):
                state.flush(now)

    def _on_wake(self, sock: zmq.Socket[bytes]) -> None:
        sock.recv(zmq.NOBLOCK)

    def _on_tcp(self, sock: zmq.Socket[bytes]) -> None:
        # A time budget, so a flood on the port never starves heartbeats and control.
        budget = time.monotonic() + _BUDGET
        headers = self._headers
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or not frames[1].startswith(MAGIC):
                self._drop_garbage("not a polymsg-zmq message")
                continue
            known = headers.get(frames[1])
            if known is None:
                if len(frames[1]) > _MAX_HEADER:
                    self._drop_garbage(f"a routing header of {len(frames[1]):,} bytes")
                    continue
                raw = frames[1][len(MAGIC):]
                try:
                    known = (decode_header(raw), raw)
                except InvalidFrame as exc:
                    self._drop_garbage(str(exc))
                    continue
                if len(frames[1]) <= _CACHED_HEADER:
                    if len(headers) >= _MAX_CACHED:
                        headers.clear()
                    headers[frames[1]] = known
            now = time.monotonic()
            self.route(known[0], known[1], frames[2], now)
            if now > budget:
                return

    @property
    def malformed(self) -> int:
        """Messages dropped on the TCP port because they were malformed."""
        return self._garbage.count

    def _drop_garbage(self, why: str) -> None:
        self._garbage.log("zmq receiver: dropped a malformed message on the TCP port (%s)",
                          clip(why))

    def route(self, header: dict[str, Any], raw_header: bytes, bodies: bytes,
              now: float, only_pool: str | None = None) -> None:
        """Deliver or hold one incoming message (a header and its bodies)."""
        ttl = header.get("ttl")
        deadline = now + float(ttl) if ttl is not None else None
        exchange, topic = header["x"], header["t"]
        if header["k"] == "fan":
            state = self._topics.get((exchange, topic))
            if state is None or not state.present("*"):
                self._dropped.log("zmq receiver: fanout message(s) %s on topic %s: no "
                                  "server listens on this host", message_ids("rpc", bodies),
                                  clip(topic))
            self._pub.send_multipart([fanout_prefix(exchange, topic), b"M",
                                      encode_deadline(deadline),
                                      raw_header, bodies])
            return
        if header.get("a") is not None and not self._serves(header):
            self.answers.refuse(header, bodies, _where(header))
            return
        try:
            state = self._topic(exchange, topic)
        except (InvalidTarget, MessageDeliveryFailure) as exc:
            self._dropped.log("zmq receiver: dropped message(s) %s on topic %s: %s",
                              message_ids(header["k"], bodies), clip(topic), exc)
            return
        state.accept(header, raw_header, bodies, deadline, now, only_pool)
        if header.get("a") is not None:
            self.answers.taken(header, bodies)
        if header.get("u") and self.matchmaker.dynamic:
            self._route_unrouted(state, now)

    def _serves(self, header: dict[str, Any]) -> bool:
        """A local consumer is registered for an RPC message's topic (or server)."""
        state = self._topics.get((header["x"], header["t"]))
        server = header.get("s")
        return state is not None and state.present(f"s:{server}" if server else "*")

    def _route_unrouted(self, state: TopicState, now: float) -> None:
        """Forward, in order, the messages no sender could place whose topic now has a
        host; the rest stay held, in order."""
        if now < state.next_route:  # it found no host a moment ago: ask again later
            return
        items = state.take_unrouted()
        if not items:
            return
        lookups: dict[tuple[Any, ...], list[tuple[str, list[str] | None]]] = {}
        back: list[Held] = []
        for item in items:
            if back or not self._forward(state, item, now, lookups):
                back.append(item)
        state.restore(back)
        state.next_route = now + _ROUTE_EVERY if back else 0.0

    def _topic(self, exchange: str, topic: str, local: bool = False) -> TopicState:
        """The state of ``exchange``/``topic``, made on first use (no socket yet).

        At most ``max_topics`` exist for messages from the network: past that,
        topics nobody uses are forgotten first, and a message for yet another
        topic is refused (:class:`MessageDeliveryFailure`). A local consumer
        (``local``) always gets its topic: services on this host can start.
        """
        state = self._topics.get((exchange, topic))
        if state is not None:
            return state
        path = ipc_path(self.settings.ipc_dir, exchange, topic)
        if not local and len(self._topics) >= self.settings.max_topics:
            for unused in [s for s in self._topics.values() if s.idle(float("inf"), 0.0)]:
                self._close_topic(unused)
            if not local and len(self._topics) >= self.settings.max_topics:
                raise MessageDeliveryFailure(
                    f"the receiver serves max_topics ({self.settings.max_topics}) topics")
        state = TopicState(exchange, topic, path, self.settings.max_held_messages,
                           self.budget, self._local, self._dropped, self._congested)
        self._topics[(exchange, topic)] = state
        return state

    def _open_topic(self, exchange: str, topic: str) -> TopicState:
        """The state of a topic a local consumer asked for, its IPC socket bound."""
        state = self._topic(exchange, topic, local=True)
        if state.sock is not None:
            return state
        try:
            prepare_dir(os.path.dirname(state.path))
        except OSError as exc:
            raise MessageDeliveryFailure(f"cannot create {os.path.dirname(state.path)}: "
                                         f"{exc}") from exc
        sock = self._socket(zmq.ROUTER)
        sock.router_mandatory = True
        sock.router_handover = True
        sock.sndhwm = 20000
        try:
            sock.bind(ipc_endpoint(state.path))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise MessageDeliveryFailure(f"cannot bind {state.path}: {exc}") from exc
        state.sock = sock
        self._by_socket[sock] = state
        self._handlers[sock] = self._on_consumer
        self._poller.register(sock, zmq.POLLIN)
        return state

    def _close_topic(self, state: TopicState) -> None:
        del self._topics[(state.exchange, state.topic)]
        state.discard()
        sock, state.sock = state.sock, None
        if sock is None:
            return
        del self._by_socket[sock]
        del self._handlers[sock]
        self._poller.unregister(sock)
        sock.close(linger=0)
        with contextlib.suppress(OSError):
            os.unlink(state.path)

    # -- control and consumers -------------------------------------------------------------

    def _on_control(self, sock: zmq.Socket[bytes]) -> None:
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            ident, command = frames[0], frames[1]
            if command == b"PING":
                sock.send_multipart([ident, b"PONG", dumps({"address": self.settings.address})])
            elif command == b"OPEN" and len(frames) == 3:
                sock.send_multipart([ident, *self._open(frames[2])])

    def _open(self, data: bytes) -> list[bytes]:
        try:
            names = loads(data)
            for exchange, topic in names:
                self._open_topic(exchange, topic)
        except (SerializationError, ValueError, TypeError, InvalidTarget,
                MessageDeliveryFailure) as exc:
            return [b"ERR", str(exc).encode()]
        return [b"OK"]

    def _on_consumer(self, sock: zmq.Socket[bytes]) -> None:
        state = self._by_socket[sock]
        now = time.monotonic()
        for _ in range(_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            ident, command = frames[0], frames[1]
            if command == b"REG" and len(frames) == 3:
                self._register_consumer(state, ident, frames[2], now)
            elif command == b"UNREG":
                self._remove_consumer(state, ident, now)
                sock.send_multipart([ident, b"UOK"])
            elif command == b"RET" and len(frames) == 6:
                self._returned(state, frames[2:], now)
            elif command == b"FOK":
                self._probes.pop((id(state), ident), None)

    def _register_consumer(self, state: TopicState, ident: bytes, data: bytes,
                           now: float) -> None:
        sock = state.sock
        assert sock is not None  # the registration came through it
        consumer = state.consumers.get(ident)
        try:
            info = loads(data)
            if not isinstance(info, dict):
                raise ValueError("not an object")
            groups, keys, qttl = consumer_groups(state.exchange, state.topic, info)
        except (SerializationError, ValueError) as exc:
            LOG.warning("zmq receiver: bad registration on topic %s: %s", state.topic, exc)
            sock.send_multipart([ident, b"ERR", str(exc).encode()])
            return
        if consumer is None:
            consumer = Consumer(ident, groups, keys, now)
            state.add(consumer, qttl)
            self._registrations.add(keys)
            LOG.debug("zmq receiver: consumer joined %s (%s)", state.topic, groups)
        consumer.last_seen = now
        interval = info.get("hb")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool):
            consumer.interval = max(0.05, float(interval))
        if info.get("probe"):
            self._probes[(id(state), ident)] = (state, ident, now + self.settings.receiver_timeout)
            self._probe(state, ident)
        sock.send_multipart([ident, b"ROK"])
        state.flush(now)

    def _remove_consumer(self, state: TopicState, ident: bytes, now: float) -> None:
        self._probes.pop((id(state), ident), None)
        consumer = state.remove(ident, now)
        if consumer is not None:
            self._registrations.remove(consumer.keys)

    def _returned(self, state: TopicState, frames: list[bytes], now: float) -> None:
        group_raw, deadline_raw, raw_header, bodies = frames
        try:
            pool = loads(group_raw) if group_raw else None
            deadline = decode_deadline(deadline_raw)
            header = decode_header(raw_header)
        except (SerializationError, InvalidFrame) as exc:
            LOG.warning("zmq receiver: bad message given back on %s: %s", state.topic, exc)
            return
        state.accept(header, raw_header, bodies, deadline, now,
                     pool if isinstance(pool, str) else None)

    def _probe(self, state: TopicState, ident: bytes) -> None:
        """Publish a probe the new consumer waits for: its fanout subscription works."""
        self._pub.send_multipart([fanout_prefix(state.exchange, state.topic), b"P", ident])

    # -- periodic work ---------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        for key, (state, ident, until) in list(self._probes.items()):
            if now > until:
                del self._probes[key]
            else:
                self._probe(state, ident)
        if now < self._next_sweep:
            return
        self._next_sweep = now + _TICK
        for state in list(self._topics.values()):
            for consumer in list(state.consumers.values()):
                if now - consumer.last_seen > 3 * consumer.interval + 1.0:
                    LOG.info("zmq receiver: consumer of %s stopped heartbeating", state.topic)
                    self._remove_consumer(state, consumer.ident, now)
            state.expire(now)
            state.flush(now)

    def _housekeeping(self, now: float) -> None:
        self._garbage.summary()
        self._dropped.summary()
        if self.matchmaker.dynamic:  # a share of the topics each round (matchmaker load)
            states = list(self._topics.values())
            start = self._route_turn % len(states) if states else 0
            for state in (states[start:] + states[:start])[:_ROUTE_TOPICS]:
                self._route_unrouted(state, now)
            self._route_turn = start + _ROUTE_TOPICS
        for state in list(self._topics.values()):
            if state.idle(now, _CLOSE_IDLE_TOPIC):
                self._close_topic(state)

    def _routes(self, state: TopicState, header: dict[str, Any],
                cache: dict[tuple[Any, ...], list[tuple[str, list[str] | None]]]
                ) -> list[tuple[str, list[str] | None]]:
        key = (header["k"], header.get("s"), header.get("p"))
        if key not in cache:
            try:
                if header["k"] == "rpc":
                    hosts = self.matchmaker.rpc_hosts(state.exchange, state.topic,
                                                      header.get("s"))
                    routes: list[tuple[str, list[str] | None]] = [(h, None) for h in hosts]
                else:
                    routes = self.matchmaker.note_hosts(state.exchange, state.topic,
                                                        header["p"])
            except MessagingError as exc:
                LOG.debug("zmq receiver: no route yet for %s: %s", state.topic, exc)
                routes = []
            cache[key] = [r for r in routes if r[0] != self.settings.address]
        return cache[key]

    def _forward(self, state: TopicState, item: Held, now: float,
                 cache: dict[tuple[Any, ...], list[tuple[str, list[str] | None]]]) -> bool:
        """Send an unrouted message to the host(s) now serving its topic; False when
        there is none yet or it cannot take the message now."""
        routes = self._routes(state, item.header, cache)
        if not routes:
            return False
        header = dict(item.header, u=False)
        if item.deadline is not None:
            header["ttl"] = max(0.0, item.deadline - now)
        if header["k"] == "rpc":
            routes = routes[:1]
        for host, pools in routes:
            if header["k"] == "note":
                header["pools"] = pools
            frames = [MAGIC + encode_header(header), item.bodies]
            if not self._peers.get(self.settings.endpoint(host), watch=True).try_send(frames):
                LOG.info("zmq receiver: host %s cannot take %s yet; holding", host,
                         item.ids())
                return False
        return True


def _where(header: dict[str, Any]) -> str:
    server = header.get("s")
    return (f"topic {clip(header['t'])!r}" + (f" server {clip(server)!r}" if server else "")
            + f" on exchange {clip(header['x'])!r}")
