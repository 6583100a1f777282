"""A receiver's answers to at-least-once messages (routing header ``a``).

On zmq "nobody serves it" is what the sender's matchmaker and the receiving
host know when the message arrives: the sender fails an at-least-once send
at once when the matchmaker lists no host for the topic (or server); the
receiver of the host it was sent to refuses it when no local consumer is
registered for it right then (the topic, or ``topic.server``), instead of
holding it for one to come. The caller's reply socket then gets ``{"u":
reason}`` for each message of the batch, and an at-least-once cast the
receiver took gets a confirmation ``{"r": null, "f": null}``. The bodies
are decoded only for these messages; an id or address that is not a
string is dropped (and logged, rate-limited), and answers go only where
replies may go (:meth:`Outbox.allowed`).
"""

from __future__ import annotations

import logging

from polymsg.driver import dumps, loads
from polymsg_zmq._matchmaker import Matchmaker
from polymsg_zmq._options import Settings
from polymsg_zmq._outbox import Outbox
from polymsg_zmq._peers import Peers
from polymsg_zmq._ratelog import RateLimited
from polymsg_zmq._wire import AT_LEAST_ONCE_CAST, Header, InvalidFrame, unpack

__all__ = ["Answers"]

LOG = logging.getLogger("polymsg_zmq.receiver")

_CONFIRMED = dumps({"r": None, "f": None})


class Answers:
    """Refusals and confirmations a receiver sends for at-least-once messages."""

    def __init__(self, settings: Settings, peers: Peers, matchmaker: Matchmaker) -> None:
        self._outbox = Outbox(settings, peers, matchmaker)
        self._garbage = RateLimited(LOG, "zmq receiver: malformed at-least-once messages")
        self.refused = 0

    def refuse(self, header: Header, bodies: bytes, where: str) -> None:
        """Nothing here serves the message(s): tell each sender, keep nothing."""
        reason = dumps({"u": f"no server of {where} on host {self._outbox.host} "
                             "(at_least_once: not held for one to come)"})
        self.refused += 1
        self._answer(bodies, reason)

    def taken(self, header: Header, bodies: bytes) -> None:
        """The message(s) went to (or wait for) a local consumer: confirm casts."""
        if header.get("a") == AT_LEAST_ONCE_CAST:
            self._answer(bodies, _CONFIRMED)

    def _answer(self, bodies: bytes, payload: bytes) -> None:
        try:
            items = unpack(bodies)
        except InvalidFrame as exc:
            self._garbage.log("zmq receiver: dropped an at-least-once batch: %s", exc)
            return
        for body in items:
            try:
                data = loads(body)
                msg_id, endpoint = data["i"], data["a"]
                if not isinstance(msg_id, str) or not isinstance(endpoint, str):
                    raise ValueError("id and reply address must be strings")
            except Exception as exc:
                self._garbage.log("zmq receiver: no answer to an at-least-once message: %s",
                                  type(exc).__name__)
                continue
            self._outbox.send_reply(endpoint, msg_id, payload)
