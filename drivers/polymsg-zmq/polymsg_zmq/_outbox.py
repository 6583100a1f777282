"""What incoming messages send through: replies to callers, requeues to this host's receiver.

A message object holds an :class:`Outbox` (not the driver). A reply goes
only to a reply address on a host the matchmaker knows (with CURVE, every
peer is a key holder, so any address its request named), and never blocks
the worker that sends it: it is queued on the caller's connection, whose
flusher gives up after a while and logs the call's id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from polymsg import MessagingError
from polymsg_zmq._matchmaker import Matchmaker
from polymsg_zmq._options import Settings, split_address
from polymsg_zmq._peers import Peers
from polymsg_zmq._ratelog import RateLimited, clip
from polymsg_zmq._wire import MAGIC, REPLY_MAGIC, encode_header, message_ids, pack

__all__ = ["Outbox"]

LOG = logging.getLogger("polymsg_zmq")

#: Seconds a reply address's verdict is remembered (allowed; refused), and how many.
_ALLOWED_FOR = 60.0
_REFUSED_FOR = 1.0
_VERDICTS = 1024


class Outbox:
    """Sends replies and requeued messages on behalf of incoming messages."""

    def __init__(self, settings: Settings, peers: Peers, matchmaker: Matchmaker) -> None:
        self._settings = settings
        self._peers = peers
        self._matchmaker = matchmaker
        self._own = settings.endpoint(settings.address)
        self._verdicts: dict[str, tuple[bool, float]] = {}
        self._refused = RateLimited(LOG, "zmq: replies refused")

    def send_reply(self, endpoint: str, msg_id: str, payload: bytes) -> None:
        """Queue a call's reply for the caller's reply socket; failures are logged."""
        if not self.allowed(endpoint):
            self._refused.log("zmq: dropped the reply to call %s: reply address %s is not on "
                              "a host the matchmaker knows", clip(msg_id), clip(endpoint))
            return
        try:
            self._peers.get(endpoint).post_reply([REPLY_MAGIC + msg_id.encode(), payload])
        except MessagingError as exc:
            self._refused.log("zmq: could not send the reply to call %s to %s: %s",
                              clip(msg_id), clip(endpoint), exc)

    def allowed(self, endpoint: str) -> bool:
        """True when replies may go to ``endpoint`` (``tcp://host:port``)."""
        now = time.monotonic()
        known = self._verdicts.get(endpoint)
        if known is not None and now < known[1]:
            return known[0]
        verdict = self._judge(endpoint)
        if len(self._verdicts) >= _VERDICTS:
            self._verdicts.clear()
        self._verdicts[endpoint] = (verdict, now + (_ALLOWED_FOR if verdict else _REFUSED_FOR))
        return verdict

    def _judge(self, endpoint: str) -> bool:
        if not endpoint.startswith("tcp://") or len(endpoint) > 300:
            return False
        try:
            host, port = split_address(endpoint[len("tcp://"):], 0)
        except ValueError:
            return False
        if not host or not 0 < port < 65536:
            return False
        if self._settings.curve is not None:  # only key holders could have sent the request
            return True
        try:
            return self._matchmaker.knows_host(host)
        except MessagingError as exc:
            LOG.debug("zmq: cannot check reply host %s: %s", host, exc)
            return False

    def resend(self, header: dict[str, Any], body: bytes,
               deadline: float | None = None) -> None:
        """Give a message (its encoded body) back to this host's receiver (requeue),
        with what is left of its TTL (``deadline`` is on this host's monotonic clock)."""
        ttl = None if deadline is None else max(0.0, deadline - time.monotonic())
        fields = dict(header, u=False, s=header.get("s"), ttl=ttl)
        frames = [MAGIC + encode_header(fields), pack(body)]
        try:
            peer = self._peers.get(self._own, watch=True)
            if not peer.try_send(frames):
                peer.send(frames, retry=2, interval=self._settings.retry_interval)
        except MessagingError as exc:
            LOG.warning("zmq: could not requeue message %s: %s",
                        message_ids(str(header.get("k")), frames[1]), exc)
