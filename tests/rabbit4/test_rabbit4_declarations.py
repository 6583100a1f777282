"""What each driver declares on a RabbitMQ 4 node, per option set; conflicts on the type."""

from __future__ import annotations

import time
import uuid

import pika
import pytest

import polymsg

from .conftest import DRIVERS, OPTION_SETS, RABBIT_URL, broker_url, list_queues

WAIT = 20.0


class Echo:
    def echo(self, ctxt: object, value: object) -> object:
        return value


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_every_queue_is_durable_and_not_exclusive(driver: str, options: str,
                                                  vhost: str) -> None:
    topic = f"decl-{uuid.uuid4().hex[:10]}"
    with polymsg.get_transport(broker_url(driver, vhost, OPTION_SETS[options])) as transport:
        server = polymsg.get_rpc_server(transport, polymsg.Target(topic=topic, server="s1"),
                                        [Echo()])
        with server:
            client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=WAIT)
            assert client.call({}, "echo", value=1) == 1
            polymsg.Notifier(transport, "p", topics=(topic,)).info({}, "e", 1)
            queues = list_queues(vhost)
    ours = {name: q for name, q in queues.items() if name.startswith(topic)
            or (name.startswith("reply_") and q["type"])}
    assert {topic, f"{topic}.s1", f"{topic}.info"} <= set(ours)
    # (quorum queues and streams show no exclusive flag at all: they cannot be exclusive)
    assert all(q["durable"] == "true" and q["exclusive"] in ("false", "") for q in ours.values())
    want = "classic" if options == "classic" else "quorum"
    assert queues[topic]["type"] == want
    fanout = [q for name, q in ours.items() if name.startswith(f"{topic}_fanout")]
    assert len(fanout) == 1
    assert fanout[0]["type"] == ("stream" if "stream" in options else want)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_queue_of_another_type_is_a_clear_error(driver: str, vhost: str) -> None:
    assert RABBIT_URL
    topic = f"conflict-{uuid.uuid4().hex[:10]}"
    host = polymsg.TransportURL.parse(RABBIT_URL).hosts[0]
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        host.hostname, host.port, vhost, pika.PlainCredentials("guest", "guest")))
    try:
        connection.channel().queue_declare(topic, durable=True)  # a classic queue
    finally:
        connection.close()
    url = broker_url(driver, vhost, OPTION_SETS["quorum"] + "&rabbit_retry_interval=0.1")
    with polymsg.get_transport(url) as transport:
        client = polymsg.RPCClient(transport, polymsg.Target(topic=topic), timeout=5.0)
        started = time.monotonic()
        with pytest.raises(polymsg.MessageDeliveryFailure) as caught:
            client.cast({}, "echo", value=1)
            transport.cleanup()
        took = time.monotonic() - started
    text = str(caught.value)
    assert repr(topic) in text and "rabbit_quorum_queue=false" in text, text
    assert took < 10.0
