"""The failure matrix: every broker failure ends, in an error, within its budget, on both drivers.

Each case runs every operation (call, cast, notify, starting a server) on
``rabbit+kombu`` and ``rabbit+pika`` against the real broker and asserts the
error class and how long it took. Permanent failures (a refused login, a
missing virtual host, a refused declaration) must raise
``MessageDeliveryFailure`` at once, whatever the ``retry`` budget; transient
ones (nothing listening, a name that does not resolve, a broker stopped or
paused) within the call's timeout or the cast's ``retry``. Brokers that stop
or pause are a TCP proxy in front of the shared broker (``proxy.py``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqptest import FAST_RETRY, Matrix, ctl, make_url
from proxy import Proxy, free_port

import polymsg

#: What a permanent refusal may take ("at once": one connection attempt).
AT_ONCE = 4.0
#: A call's timeout in these tests, and the slack allowed past a budget.
TIMEOUT = 3.0
MARGIN = 2.5
FAILED = (polymsg.MessageDeliveryFailure, polymsg.MessagingTimeout)

OPERATIONS = ("call", "cast", "notify", "start")


class Endpoint:
    """Echoes, and sleeps for the cases where the broker goes away mid-call."""

    def __init__(self) -> None:
        self.called = threading.Event()

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def sleep(self, ctxt: Any, seconds: float) -> float:
        self.called.set()
        time.sleep(seconds)
        return seconds


def _operation(operation: str, transport: polymsg.Transport, topic: str, *,
               retry: int | None) -> None:
    target = polymsg.Target(topic=topic)
    if operation == "call":
        polymsg.RPCClient(transport, target, timeout=TIMEOUT, retry=retry).call(
            {}, "echo", value=1)
    elif operation == "cast":
        polymsg.RPCClient(transport, target, retry=retry).cast({}, "echo", value=1)
    elif operation == "notify":
        polymsg.Notifier(transport, "amqp-tests", topics=[topic], retry=retry).info(
            {}, "amqp.test", {"n": 1})
    else:
        server = polymsg.get_rpc_server(
            transport, polymsg.Target(topic=topic, server="s1"), [Endpoint()])
        try:
            server.start()
        finally:
            server.stop()
            server.wait()


def _attempt(operation: str, url: str, topic: str, *,
             retry: int | None) -> tuple[BaseException | None, float]:
    """Run ``operation`` on a new transport: what it raised and how long it took
    (the transport's cleanup is not counted)."""
    with polymsg.get_transport(url) as transport:
        return _timed(lambda: _operation(operation, transport, topic, retry=retry))


def _timed(fn: Callable[[], None]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # the test inspects what came
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# -- permanent: at once, whatever the budget --------------------------------------------

@pytest.fixture(scope="module")
def restricted_user(vhost: str) -> Iterator[tuple[str, str]]:
    """A user who may write and read in the session's vhost but declare nothing."""
    name, password = f"noconf-{uuid.uuid4().hex[:6]}", "restricted-pass-4711"
    ctl("add_user", name, password)
    try:
        ctl("set_permissions", "-p", vhost, name, "^$", ".*", ".*")
        yield name, password
    finally:
        ctl("delete_user", name)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_wrong_password_raises_at_once(scheme: str, vhost: str, topic: str, operation: str,
                                       matrix: Matrix) -> None:
    url = make_url(scheme, vhost, FAST_RETRY, password="wrong-secret-4711")
    error, elapsed = _attempt(operation, url, topic, retry=None)
    matrix.record(f"wrong password ({operation})", scheme, error or "no error", elapsed)
    assert isinstance(error, polymsg.MessageDeliveryFailure), repr(error)
    assert elapsed < AT_ONCE
    assert "ACCESS_REFUSED" in str(error) and "127.0.0.1" in str(error)
    assert "wrong-secret" not in str(error)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_missing_vhost_raises_at_once(scheme: str, topic: str, operation: str,
                                      matrix: Matrix) -> None:
    url = make_url(scheme, "no-such-vhost", FAST_RETRY)
    error, elapsed = _attempt(operation, url, topic, retry=None)
    matrix.record(f"missing vhost ({operation})", scheme, error or "no error", elapsed)
    assert isinstance(error, polymsg.MessageDeliveryFailure), repr(error)
    assert elapsed < AT_ONCE
    assert "no-such-vhost" in str(error)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_refused_declaration_raises_at_once(scheme: str, vhost: str, topic: str,
                                            operation: str, matrix: Matrix,
                                            restricted_user: tuple[str, str]) -> None:
    user, password = restricted_user
    url = make_url(scheme, vhost, FAST_RETRY, user=user, password=password)
    error, elapsed = _attempt(operation, url, topic, retry=None)
    matrix.record(f"declaration refused ({operation})", scheme, error or "no error", elapsed)
    assert isinstance(error, polymsg.MessageDeliveryFailure), repr(error)
    assert elapsed < AT_ONCE
    assert "ACCESS_REFUSED" in str(error)
    assert password not in str(error)


# -- transient: retried within the budget, then the same error -------------------------------

@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("case", ["closed port", "unknown host"])
def test_unreachable_broker_ends_within_the_budget(scheme: str, vhost: str, topic: str,
                                                   operation: str, case: str,
                                                   matrix: Matrix) -> None:
    query = f"{FAST_RETRY}&listen_retry=1"
    if case == "closed port":
        url = make_url(scheme, vhost, query, port=free_port())
    else:
        url = make_url(scheme, vhost, query, host="no-such-host.invalid")
    error, elapsed = _attempt(operation, url, topic, retry=1)
    matrix.record(f"{case} ({operation})", scheme, error or "no error", elapsed)
    assert isinstance(error, FAILED), repr(error)
    assert elapsed < TIMEOUT + MARGIN
    if isinstance(error, polymsg.MessageDeliveryFailure):
        assert "cannot connect" in str(error)


@pytest.mark.parametrize("operation", ["call", "start"])
def test_broker_paused_before_connecting(scheme: str, vhost: str, topic: str, operation: str,
                                         matrix: Matrix) -> None:
    # The proxy accepts TCP and forwards nothing: a SIGSTOPped broker as a
    # client sees it. A call's timeout (3 s) is shorter than connect_timeout (5 s).
    host = polymsg.TransportURL.parse(make_url(scheme, vhost)).hosts[0]
    proxy = Proxy((host.hostname or "127.0.0.1", host.port or 5672)).start()
    proxy.hold()
    try:
        # A server has no timeout of its own: connect_timeout bounds its attempt.
        connect = "&connect_timeout=2" if operation == "start" else ""
        url = make_url(scheme, vhost, f"{FAST_RETRY}&listen_retry=0{connect}",
                       port=proxy.port)
        error, elapsed = _attempt(operation, url, topic, retry=0)
    finally:
        proxy.stop()
    matrix.record(f"broker paused before connecting ({operation})", scheme,
                  error or "no error", elapsed)
    assert isinstance(error, FAILED), repr(error)
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.parametrize("case", ["broker stopped", "broker paused"])
def test_broker_lost_during_a_call(scheme: str, vhost: str, topic: str, case: str,
                                   matrix: Matrix) -> None:
    host = polymsg.TransportURL.parse(make_url(scheme, vhost)).hosts[0]
    proxy = Proxy((host.hostname or "127.0.0.1", host.port or 5672)).start()
    endpoint = Endpoint()
    try:
        with polymsg.get_transport(make_url(scheme, vhost, FAST_RETRY)) as server_side, \
                polymsg.get_transport(make_url(scheme, vhost, FAST_RETRY,
                                               port=proxy.port)) as client_side:
            server = polymsg.get_rpc_server(
                server_side, polymsg.Target(topic=topic, server="s1"), [endpoint])
            with server:
                client = polymsg.RPCClient(client_side, polymsg.Target(topic=topic),
                                           timeout=TIMEOUT)
                assert client.call({}, "echo", value="up") == "up"
                stop = proxy.stop if case == "broker stopped" else proxy.hold

                def call() -> None:
                    client.call({}, "sleep", seconds=1.0)

                def lose_broker() -> None:
                    if endpoint.called.wait(TIMEOUT):
                        stop()

                threading.Thread(target=lose_broker, daemon=True).start()
                error, elapsed = _timed(call)
    finally:
        proxy.stop()
    matrix.record(f"{case} during a call", scheme, error or "no error", elapsed)
    assert isinstance(error, FAILED), repr(error)
    assert elapsed < TIMEOUT + MARGIN


def test_a_connection_dying_right_after_opening_backs_off(scheme: str, vhost: str,
                                                          topic: str, matrix: Matrix) -> None:
    # Every connection is cut 0.3 s after it opens. Without backoff a server
    # reconnects as fast as the broker accepts (hundreds a second).
    host = polymsg.TransportURL.parse(make_url(scheme, vhost)).hosts[0]
    proxy = Proxy((host.hostname or "127.0.0.1", host.port or 5672), cut_after=0.3).start()
    watch = 4.0
    try:
        url = make_url(scheme, vhost, "rabbit_retry_interval=0.2&rabbit_retry_backoff=0.3",
                       port=proxy.port)
        with polymsg.get_transport(url) as transport:
            server = polymsg.get_rpc_server(
                transport, polymsg.Target(topic=topic, server="s1"), [Endpoint()])
            error, _ = _timed(server.start)
            started = time.monotonic()
            before = proxy.accepted
            deadline = started + watch
            while time.monotonic() < deadline:
                time.sleep(0.1)  # the test is about time passing
            accepted = proxy.accepted - before
            if error is None:
                server.stop()
                server.wait()
    finally:
        proxy.stop()
    matrix.record("connection dies 0.3 s after opening (server, 4 s)", scheme,
                  f"{accepted} connections", watch)
    assert accepted <= 16, f"{accepted} connections in {watch} s: no backoff"
