"""Helpers of the oslo.messaging compatibility tests: the docs example, loaded
as it is (polymsg's compat module) or with its import line changed back to
oslo.messaging, and the transport URLs of the drivers installed here."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import quote

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "oslo_api_service.py"
COMPAT_IMPORT = "from polymsg.compat import oslo_messaging as messaging"
OSLO_IMPORT = "import oslo_messaging as messaging"
RABBIT_URL = os.environ.get("POLYMSG_TEST_RABBIT_URL")
RABBITMQCTL = os.environ.get("POLYMSG_TEST_RABBITMQCTL")


def load_example(real_oslo: bool = False) -> types.ModuleType:
    """The example module; ``real_oslo``: with ``import oslo_messaging as messaging``."""
    source = EXAMPLE.read_text(encoding="utf-8")
    assert source.count(COMPAT_IMPORT) == 1
    name = f"oslo_api_service_{'oslo' if real_oslo else 'compat'}_{uuid.uuid4().hex[:6]}"
    if real_oslo:
        pytest.importorskip("oslo_messaging")
        source = source.replace(COMPAT_IMPORT, OSLO_IMPORT)
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(EXAMPLE)
    exec(compile(source, str(EXAMPLE), "exec"), module.__dict__)
    return module


def installed(dist: str) -> bool:
    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbit_url(scheme: str, vhost: str | None = None, **query: str) -> str:
    """The test broker's URL with ``scheme`` (``rabbit`` or ``rabbit+pika``), on
    ``vhost`` when given (else the URL's own)."""
    if not RABBIT_URL:
        pytest.skip("POLYMSG_TEST_RABBIT_URL is not set (scripts/services.sh env prints it)")
    url = scheme + RABBIT_URL[RABBIT_URL.index("://"):]
    if vhost is not None:
        head, _, rest = url.partition("?")
        scheme_part, _, hosts = head.partition("://")
        url = f"{scheme_part}://{hosts.split('/', 1)[0]}/{quote(vhost, safe='')}"
        url += f"?{rest}" if rest else ""
    if query:
        url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in query.items())
    return url


def skip_where_transient_queues_are_refused() -> None:
    """Skip on the RabbitMQ 4.x test node (``scripts/services.sh env rabbit4``), which
    refuses transient non-exclusive queues as RabbitMQ 4.3 does: oslo.messaging
    declares its reply and fanout queues so unless ``rabbit_transient_quorum_queue``
    is set, so on classic queues it cannot run there at all."""
    version = os.environ.get("POLYMSG_TEST_RABBIT_VERSION", "")
    if version and version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 4:
        pytest.skip(f"RabbitMQ {version} with 4.3's denials refuses oslo.messaging's transient "
                    "reply and fanout queues on classic queues; the quorum combination is "
                    "tests/rabbit4/test_rabbit4_oslo.py")


def _ctl(*args: str) -> str:
    assert RABBITMQCTL
    done = subprocess.run([*shlex.split(RABBITMQCTL), "-q", *args], capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def durable(vhost: str, kind: str) -> dict[str, bool]:
    """Name -> durable of the ``kind`` (``queues`` or ``exchanges``) of ``vhost``."""
    out = _ctl(f"list_{kind}", "-p", vhost, "--no-table-headers", "name", "durable")
    rows = (line.split("\t") for line in out.splitlines())
    return {row[0]: row[1] == "true" for row in rows if len(row) == 2}


@contextmanager
def private_vhost(prefix: str = "polymsg-oslo") -> Iterator[str]:
    """A virtual host of its own on the test broker, deleted afterwards (with every
    queue and exchange in it), so no test meets what another run declared. Skips
    without ``$POLYMSG_TEST_RABBITMQCTL`` (``scripts/services.sh env`` prints it)."""
    if not RABBIT_URL:
        pytest.skip("POLYMSG_TEST_RABBIT_URL is not set (scripts/services.sh env prints it)")
    if not RABBITMQCTL:
        pytest.skip("POLYMSG_TEST_RABBITMQCTL is not set (scripts/services.sh env prints it)")
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        _ctl("delete_vhost", name)


@contextmanager
def transport_url(kind: str) -> Iterator[str]:
    """A URL of transport ``kind`` (memory, kombu, pika, zmq); skips when its driver
    or service is missing."""
    if kind == "memory":
        yield f"memory://oslo-example-{uuid.uuid4().hex[:8]}"
    elif kind in ("kombu", "pika"):
        if not installed(f"polymsg-{kind}"):
            pytest.skip(f"polymsg-{kind} is not installed")
        yield rabbit_url("rabbit" if kind == "kombu" else "rabbit+pika")
    elif kind == "zmq":
        if not installed("polymsg-zmq"):
            pytest.skip("polymsg-zmq is not installed")
        root = tempfile.mkdtemp(prefix="pm-osl-", dir="/tmp")
        try:
            yield f"zmq://127.0.0.1:{free_port()}/?ipc_dir={root}/ipc"
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        raise ValueError(kind)
