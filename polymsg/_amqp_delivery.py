"""What happens to an outgoing message after the broker answered: one table for both drivers.

A cast or notification published on a confirm channel ends in one of the
:class:`Outcome` values. :class:`Attempts` counts them per message and says
whether to send it again or give up, with the error to give up with:

==================  ==============================================  =====================
outcome             meaning                                         sent again
==================  ==============================================  =====================
``CONFIRMED``       the broker took it                              (done)
``NACKED``          the broker refused it (``basic.nack``)          up to 2 more times
``RETURNED``        no queue took it (``mandatory``; the queue was  up to 2 more times,
                    deleted or expired): declared again, resent     declaring first
``CHANNEL_CLOSED``  the broker closed the channel under it          up to 2 more times
``LOST``            the connection went before the confirm          within ``retry``
==================  ==============================================  =====================

A call's request is never sent again once written (at most once); replies
and calls are not confirmed.

Two returned messages are nobody's error and only logged, at a bounded rate
(:class:`Unrouted`): a fanout cast no server listens to, and a reply whose
caller has gone (its reply queue deleted or expired).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from polymsg._exceptions import MessageDeliveryFailure
from polymsg._ratelimit import LogLimiter

__all__ = ["LIMITS", "Attempts", "Outcome", "Unrouted"]

LOG = logging.getLogger(__name__)


class Unrouted:
    """The log of one transport's messages the broker returned that nobody waits
    for, each kind at most ``burst`` lines per ``interval`` seconds (INFO)."""

    def __init__(self, *, interval: float = 10.0, burst: int = 5) -> None:
        self._fanouts = LogLimiter(LOG, "fanout casts that reached no server",
                                   interval=interval, burst=burst, level=logging.INFO)
        self._replies = LogLimiter(LOG, "replies to callers that are gone",
                                   interval=interval, burst=burst, level=logging.INFO)

    def fanout(self, what: str, exchange: str) -> None:
        """``what`` (a fanout cast) reached no server: no queue is bound to ``exchange``."""
        self._fanouts.log("%s reached no server: no queue is bound to %r", what, exchange)

    def reply(self, msg_id: str, reply_queue: str, detail: str) -> None:
        """The reply to call ``msg_id`` came back: its caller's ``reply_queue`` is gone."""
        self._replies.log("reply to %r dropped: the caller's reply queue %r is gone (%s)",
                          msg_id, reply_queue, detail)

    def summary(self) -> None:
        """Log the counts left out (the transport is closing)."""
        self._fanouts.summary()
        self._replies.summary()


class Outcome(enum.Enum):
    """How one publish of a message ended."""

    CONFIRMED = "confirmed"
    NACKED = "nacked"
    RETURNED = "returned"
    CHANNEL_CLOSED = "channel closed"
    LOST = "lost"


#: How often a message is sent again after each outcome (``LOST`` is counted
#: against the sender's ``retry`` instead).
LIMITS: Mapping[Outcome, int] = MappingProxyType({
    Outcome.NACKED: 2,
    Outcome.RETURNED: 2,
    Outcome.CHANNEL_CLOSED: 2,
})

_WHY = {
    Outcome.NACKED: "the broker refused it (basic.nack)",
    Outcome.RETURNED: "the broker could not route it to a queue",
    Outcome.CHANNEL_CLOSED: "the broker closed the channel",
    Outcome.LOST: "the connection to the broker was lost",
}


@dataclass
class Attempts:
    """The outcomes of one message so far, against :data:`LIMITS` and ``retry``."""

    retry: int | None = None
    counts: dict[Outcome, int] = field(default_factory=dict)

    def again(self, outcome: Outcome) -> bool:
        """Count ``outcome``; True when the message is to be sent again."""
        if outcome is Outcome.CONFIRMED:
            return False
        count = self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome is Outcome.LOST:
            return self.retry is None or count <= self.retry
        return count <= LIMITS[outcome]

    def count(self, outcome: Outcome) -> int:
        """How often ``outcome`` happened."""
        return self.counts.get(outcome, 0)

    def error(self, what: str, outcome: Outcome, detail: str = "") -> MessageDeliveryFailure:
        """The error of giving up on ``what`` after ``outcome``."""
        times = self.count(outcome)
        text = f"{what} failed: {_WHY[outcome]}"
        if detail:
            text += f" ({detail})"
        if outcome is Outcome.LOST and self.retry is not None:
            text += f"; {self.retry} {'retry' if self.retry == 1 else 'retries'} did not help"
        elif times > 1:
            text += f", {times} times"
        return MessageDeliveryFailure(text)
