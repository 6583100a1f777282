"""core's Declarer: what is declared, what is remembered, what a refusal means.

Pure logic over a scripted channel (the drivers' tests run it on RabbitMQ).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

import polymsg
from polymsg import amqp

EXCHANGE = amqp.ExchangeSpec("nova", "topic")
QUEUE = amqp.QueueSpec("compute", arguments={"x-expires": 1000})
ROUTE = amqp.Route(EXCHANGE, "compute", QUEUE)


class Refused(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


class Channel:
    """Answers each step at once (``sync``) or when told, refusing what ``refuse`` says."""

    def __init__(self, refuse: dict[tuple[str, bool], Refused] | None = None, *,
                 sync: bool = True) -> None:
        self.refuse = dict(refuse or {})
        self.sync = sync
        self.steps: list[tuple[str, str, bool]] = []
        self.waiting: list[tuple[amqp.DeclareDone, BaseException | None]] = []

    @property
    def server_properties(self) -> Mapping[str, Any] | None:
        return {"version": "3.10.8"}

    def _answer(self, kind: str, name: str, passive: bool, done: amqp.DeclareDone) -> None:
        self.steps.append((kind, name, passive))
        error = self.refuse.pop((kind, passive), None)
        if self.sync:
            done(error)
        else:
            self.waiting.append((done, error))

    def declare_exchange(self, exchange: amqp.ExchangeSpec, passive: bool,
                         done: amqp.DeclareDone) -> None:
        self._answer("exchange", exchange.name, passive, done)

    def declare_queue(self, queue: amqp.QueueSpec, passive: bool,
                      done: amqp.DeclareDone) -> None:
        self._answer("queue", queue.name, passive, done)

    def bind(self, queue: str, exchange: str, routing_key: str, done: amqp.DeclareDone) -> None:
        self._answer("bind", queue, False, done)

    def delete_queue(self, name: str, done: amqp.DeclareDone) -> None:
        self._answer("delete", name, False, done)

    def refusal(self, error: BaseException) -> tuple[int | None, str]:
        return (error.code if isinstance(error, Refused) else None), str(error)

    def answer(self) -> None:
        done, error = self.waiting.pop(0)
        done(error)


def ensure(declarer: amqp.Declarer, route: amqp.Route = ROUTE, *,
           remember: bool = True) -> list[BaseException | None]:
    outcome: list[BaseException | None] = []
    declarer.ensure(route, outcome.append, remember=remember)
    return outcome


def test_a_route_is_declared_once_per_connection_and_again_when_forgotten() -> None:
    channel = Channel()
    declarer = amqp.Declarer(lambda: channel)
    assert ensure(declarer) == [None]
    assert [s[0] for s in channel.steps] == ["exchange", "queue", "bind"]
    assert declarer.known(ROUTE)
    assert ensure(declarer) == [None] and len(channel.steps) == 3
    declarer.forget_destination("nova", "compute")
    assert not declarer.known(ROUTE)
    assert ensure(declarer) == [None]
    assert [s[0] for s in channel.steps[3:]] == ["queue", "bind"]  # the exchange is known
    declarer.reset()
    assert not declarer.known(ROUTE)


def test_auto_delete_exchanges_are_declared_every_time() -> None:
    channel = Channel()
    declarer = amqp.Declarer(lambda: channel)
    fanout = amqp.Route(amqp.ExchangeSpec("t_fanout", "fanout", auto_delete=True), "")
    assert ensure(declarer, fanout) == [None] and ensure(declarer, fanout) == [None]
    assert [s[0] for s in channel.steps] == ["exchange", "exchange"]
    assert not declarer.known(fanout)


def test_a_precondition_failure_warns_and_uses_the_queue_as_it_is(
        caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel({("queue", False): Refused(406, "PRECONDITION_FAILED - inequivalent "
                                                      "arg 'x-expires'")})
    declarer = amqp.Declarer(lambda: channel)
    with caplog.at_level(logging.WARNING):
        assert ensure(declarer) == [None]
    assert ("queue", "compute", True) in channel.steps  # checked passively
    assert "'compute'" in caplog.text and "x-expires" in caplog.text


def test_a_queue_of_another_type_is_refused() -> None:
    quorum = amqp.QueueSpec("compute", durable=True, arguments={"x-queue-type": "quorum"})
    channel = Channel({("queue", False): Refused(
        406, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'compute': "
             "received the value 'quorum' of type 'longstr' but current is none")})
    declarer = amqp.Declarer(lambda: channel)
    [error] = ensure(declarer, amqp.Route(EXCHANGE, "compute", quorum))
    assert isinstance(error, polymsg.MessageDeliveryFailure)
    assert "rabbit_quorum_queue" in str(error)


def test_any_other_refusal_fails_with_the_brokers_reason() -> None:
    cause = Refused(403, "ACCESS_REFUSED - access to queue 'compute' refused")
    channel = Channel({("queue", False): cause})
    declarer = amqp.Declarer(lambda: channel)
    [error] = ensure(declarer)
    assert isinstance(error, polymsg.MessageDeliveryFailure)
    assert "declaring queue 'compute'" in str(error) and "ACCESS_REFUSED" in str(error)
    assert error.__cause__ is cause
    assert not declarer.known(ROUTE)


def test_an_asynchronous_channel_runs_jobs_in_order_and_shares_a_route() -> None:
    channel: Channel | None = None
    async_channel = Channel(sync=False)
    declarer = amqp.Declarer(lambda: channel)
    first, second = ensure(declarer), ensure(declarer)
    deleted: list[BaseException | None] = []
    declarer.delete_queue("old", deleted.append)
    assert async_channel.steps == []  # no channel yet
    channel = async_channel
    declarer.resume()
    for _ in range(3):
        async_channel.answer()
    assert first == second == [None]
    async_channel.answer()
    assert deleted == [None]
    assert async_channel.steps[-1] == ("delete", "old", False)


def test_a_connection_lost_mid_job_starts_it_over() -> None:
    channel = Channel(sync=False)
    declarer = amqp.Declarer(lambda: channel)
    outcome = ensure(declarer)
    channel.answer()  # the exchange
    declarer.reset()
    declarer.resume()
    channel.answer()  # the queue's answer from the lost connection: ignored
    for _ in range(3):
        channel.answer()
    assert outcome == [None]
    assert [s[0] for s in channel.steps] == ["exchange", "queue", "exchange", "queue", "bind"]
