"""Fixtures of the RabbitMQ 4 tests: a virtual host of their own on the test broker.

They run where ``scripts/services.sh env rabbit4`` points (the RabbitMQ 4.x
node with 4.3's denials; ``scripts/test.sh`` runs them there), which sets
``$POLYMSG_TEST_RABBIT_VERSION`` besides ``$POLYMSG_TEST_RABBIT_URL`` and
``$POLYMSG_TEST_RABBITMQCTL``. Without that version they are not collected
at all, so the core test run (on the system's broker) leaves them out.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import polymsg

RABBIT_URL = os.environ.get("POLYMSG_TEST_RABBIT_URL")
RABBITMQCTL = os.environ.get("POLYMSG_TEST_RABBITMQCTL")

#: Option sets every RabbitMQ 4 test runs under (URL query strings).
OPTION_SETS = {
    "classic": "",
    "quorum": "rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true",
    "quorum+stream": "rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true"
                     "&rabbit_stream_fanout=true&rabbit_qos_prefetch_count=64",
}
DRIVERS = ("rabbit+kombu", "rabbit+pika")
FAST_RETRY = "rabbit_retry_interval=0.2&rabbit_retry_backoff=0.3&rabbit_interval_max=1"


def ctl(*args: str) -> str:
    """``rabbitmqctl`` against the test broker."""
    assert RABBITMQCTL
    done = subprocess.run([*shlex.split(RABBITMQCTL), "-q", *args], capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def broker_url(scheme: str, vhost: str, query: str = "") -> str:
    """A ``scheme`` URL of the test broker on ``vhost`` with ``query``."""
    assert RABBIT_URL
    base = polymsg.TransportURL.parse(RABBIT_URL)
    rendered = polymsg.TransportURL(transport=scheme, hosts=base.hosts,
                                    virtual_host=vhost).render(hide_password=False)
    return f"{rendered}?{query}" if query else rendered


#: The conformance scenarios (by their polymsg.testing module) whose outcome a
#: queue type can change for a driver: how it declares, consumes (QoS, requeue,
#: delivery count), expires and deletes queues. Under ``quorum`` they run on both
#: drivers; the other scenarios (names, serialization, versions, capabilities,
#: errors, failover: logic above the broker) on rabbit+kombu only, since both
#: drivers take their declarations from core's one plan.
QUEUE_TYPE_MODULES = frozenset({"_delivery", "_notifications", "_spread", "_rpc", "_lifecycle",
                                "_oslo_behaviours"})
#: Under ``quorum+stream`` (quorum, plus one stream per fanout topic and a
#: prefetch of 64) only what a stream fanout and the prefetch change runs.
STREAM_SCENARIOS = re.compile(r"fanout|stream|spread|pool")


def conformance_wanted(driver: str, option_set: str, module: str, name: str) -> bool:
    """Whether the conformance scenario ``name`` (of ``module``) runs on ``driver``
    under ``option_set`` in this directory (see the two constants above)."""
    if option_set == "quorum+stream":
        return bool(STREAM_SCENARIOS.search(name))
    return driver == "rabbit+kombu" or module.rsplit(".", 1)[-1] in QUEUE_TYPE_MODULES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the conformance scenarios :func:`conformance_wanted` does not want."""
    kept, dropped = [], []
    for item in items:
        driver = getattr(getattr(item, "cls", None), "driver", None)
        callspec = getattr(item, "callspec", None)
        if driver is None or callspec is None or "transport_url" not in callspec.params:
            kept.append(item)
            continue
        function = getattr(item, "function", None)
        module = getattr(function, "__module__", "")
        wanted = conformance_wanted(driver, callspec.params["transport_url"], module,
                                    getattr(item, "originalname", item.name))
        (kept if wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave this directory out unless the test broker is the RabbitMQ 4 node."""
    if os.environ.get("POLYMSG_TEST_RABBIT_VERSION"):
        return None
    return collection_path.suffix == ".py" and collection_path.name.startswith("test_")


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    if not RABBIT_URL or not RABBITMQCTL:
        pytest.skip("needs POLYMSG_TEST_RABBIT_URL and POLYMSG_TEST_RABBITMQCTL "
                    "(eval \"$(scripts/services.sh env rabbit4)\")")
    name = f"polymsg-rabbit4-{uuid.uuid4().hex[:8]}"
    ctl("add_vhost", name)
    ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield name
    finally:
        ctl("delete_vhost", name)


def list_queues(vhost: str) -> dict[str, dict[str, str]]:
    """Queues of ``vhost``: name -> durable, exclusive, type, arguments (as rabbitmqctl prints)."""
    out = ctl("list_queues", "-p", vhost, "--no-table-headers", "name", "durable",
              "exclusive", "type", "arguments")
    result = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:
            result[parts[0]] = {"durable": parts[1], "exclusive": parts[2], "type": parts[3],
                                "arguments": parts[4] if len(parts) > 4 else ""}
    return result
