"""One AMQP connection that reopens itself: failover across hosts, backoff, demand.

A :class:`Link` lives on the adapter's I/O thread (:class:`~polymsg._amqp_port.Loop`).
It connects when one of its users wants it (:meth:`Link.want`), asks
:class:`~polymsg._amqp_connection.Reconnect` which host to try and how long
to wait, and tells its users about every opened connection, every lost one
and every failed attempt (classified permanent or transient by the adapter's
:meth:`~polymsg._amqp_port.Adapter.failure_of`), so they re-declare what they
had (consumers), count failed rounds against the ``retry`` of what they wait
to send (publishers), or give up at once on a permanent failure. A
connection that dies right after opening counts as a failed round, with its
backoff. The link stops trying when no user wants it any more; a user that
still does (a running server) keeps it trying, with backoff, for as long as
it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from polymsg._amqp_connection import ConnectionSpec, Failure, Reconnect
from polymsg._amqp_port import Adapter, Connection, Loop

__all__ = ["Link", "LinkUser"]

LOG = logging.getLogger(__name__)

IDLE, CONNECTING, OPEN, WAITING, CLOSED = "idle", "connecting", "open", "waiting", "closed"


class LinkUser(Protocol):
    """What a :class:`Link` tells the objects using its connection (I/O thread)."""

    def link_opened(self, connection: Connection) -> None:
        """A connection is open: (re)open channels, re-declare, resend."""

    def link_lost(self, error: BaseException | None) -> None:
        """The open connection is gone: forget its channels and unconfirmed work."""

    def attempt_failed(self, failure: Failure, new_round: bool) -> None:
        """An attempt to connect failed (or a connection died right after opening):
        give up on a permanent failure, count ``new_round`` against ``retry``."""

    def wants_link(self) -> bool:
        """True while the user needs a connection (work waiting, a consumer running)."""


class Link:
    """One connection of a transport, opened on demand and reopened when lost."""

    def __init__(self, adapter: Adapter, loop: Loop, spec: ConnectionSpec, name: str) -> None:
        self.adapter = adapter
        self.loop = loop
        self.name = name
        self.state = IDLE
        self.connection: Connection | None = None
        self._spec = spec
        self._reconnect = Reconnect(spec, role=name.rpartition(" ")[2])
        self._endpoint = spec.endpoints[0]
        self._users: list[LinkUser] = []
        self._failures = 0
        self._timer: Any = None
        self._close_waiters: list[Callable[[], None]] = []
        loop.after_batch.append(self.flush)

    @property
    def hosts(self) -> str:
        """The hosts of the URL, ``host:port, ...`` (for errors)."""
        return self._spec.hosts_label

    @property
    def is_open(self) -> bool:
        """True when the connection is open (users may open channels)."""
        return self.state == OPEN

    def add_user(self, user: LinkUser) -> None:
        """Register ``user`` for connection events; it is told at once if open."""
        if user not in self._users:
            self._users.append(user)
            if self.state == OPEN and self.connection is not None:
                user.link_opened(self.connection)

    def remove_user(self, user: LinkUser) -> None:
        """Stop telling ``user`` about connection events."""
        if user in self._users:
            self._users.remove(user)

    def flush(self) -> None:
        """Send now what the last batch of work wrote (:meth:`Connection.flush`)."""
        if self.connection is not None:
            self.connection.flush()

    def want(self) -> None:
        """Connect now unless connected, connecting or waiting to retry."""
        if self.state == IDLE:
            self._connect()

    def close(self, on_closed: Callable[[], None]) -> None:
        """Close the connection for good; ``on_closed`` runs once it is closed."""
        if self._timer is not None:
            self.loop.cancel(self._timer)
            self._timer = None
        connection, state = self.connection, self.state
        self.state = CLOSED
        if connection is not None and state in (OPEN, CONNECTING) and not connection.is_closed:
            self._close_waiters.append(on_closed)
            connection.close()
        else:
            on_closed()

    # -- connecting -------------------------------------------------------------
    def _connect(self) -> None:
        self._timer = None
        if self.state == CLOSED:
            return
        if not any(user.wants_link() for user in self._users):
            self.state = IDLE
            return
        endpoint = self._endpoint = self._reconnect.next_endpoint()
        self.state = CONNECTING
        LOG.debug("%s: connecting to %s", self.name, endpoint.label)
        try:
            connection = self.adapter.connect(self.loop, self._spec, endpoint, self.name, self)
        except Exception as exc:  # bad parameters, no socket: counts as a failed attempt
            self.connection_failed(exc)
            return
        if self.state == CONNECTING:  # an adapter may have opened or failed it already
            self.connection = connection

    # -- what the connection tells the link (ConnectionEvents) -------------------
    def connection_opened(self, connection: Connection) -> None:
        if self.state == CLOSED:
            connection.close()
            return
        if self._failures:
            LOG.warning("%s: connected to %s after %d failed attempt(s)", self.name,
                        self._endpoint.label, self._failures)
        else:
            LOG.debug("%s: connected to %s", self.name, self._endpoint.label)
        self.connection = connection
        self.state, self._failures = OPEN, 0
        self._reconnect.opened()
        for user in list(self._users):
            user.link_opened(connection)

    def connection_failed(self, error: BaseException | None) -> None:
        if self.state == CLOSED:
            self._finish_close()
            return
        self.connection = None
        self._failures += 1
        failure = self.adapter.failure_of(error, self._endpoint.label)
        rounds = self._reconnect.failed_rounds
        delay = self._reconnect.failed(failure)
        self._retry_later(failure, delay, self._reconnect.failed_rounds > rounds)

    def _retry_later(self, failure: Failure, delay: float, new_round: bool) -> None:
        for user in list(self._users):
            user.attempt_failed(failure, new_round)
        if not any(user.wants_link() for user in self._users):
            LOG.warning("%s: cannot connect to %s: %s", self.name, failure.host, failure.reason)
            self.state = IDLE
            return
        LOG.warning("%s: cannot connect to %s: %s; next attempt in %.1fs", self.name,
                    failure.host, failure.reason, delay)
        self.state = WAITING
        self._timer = self.loop.call_later(delay, self._connect)

    def connection_closed(self, error: BaseException | None) -> None:
        self.connection = None
        if self.state == CLOSED:
            self._finish_close()
            return
        failure = self.adapter.failure_of(error, self._endpoint.label)
        LOG.warning("%s: connection lost (%s): %s", self.name, failure.host, failure.reason)
        self.state = IDLE
        delay = self._reconnect.lost(failure)
        for user in list(self._users):
            user.link_lost(error)
        if delay:  # it died right after opening, or the broker refuses: back off
            self._failures += 1
            self._retry_later(failure, delay, new_round=True)
        else:
            self.want()

    def _finish_close(self) -> None:
        self.connection = None
        callbacks, self._close_waiters = self._close_waiters, []
        for callback in callbacks:
            callback()

    def connection_blocked(self, reason: str | None) -> None:
        LOG.warning("%s: the broker blocked publishing (%s); waiting for it to resume",
                    self.name, reason or "resource alarm")

    def connection_unblocked(self) -> None:
        LOG.warning("%s: the broker resumed publishing", self.name)
