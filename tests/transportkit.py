"""A URL for each transport the cross-transport tests run on (a module name
no other tests use): memory, both RabbitMQ drivers (with
``POLYMSG_TEST_RABBIT_URL``, see ``scripts/services.sh env``) and zmq; and
:func:`ticking`, which shows how long an asyncio test's loop was held."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

RABBIT = os.environ.get("POLYMSG_TEST_RABBIT_URL")
KINDS = ("memory", "kombu", "pika", "zmq")


async def ticking(gaps: list[float]) -> None:
    """Tick every 20 ms until cancelled, adding to ``gaps`` the time each tick
    waited: a gap far longer than 20 ms is a loop held by something else."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(0.02)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def transport_url(kind: str, prefix: str) -> Iterator[str]:
    """A fresh URL of transport ``kind``; skips the test when it is not available.
    A zmq URL has its own IPC directory, removed afterwards."""
    if kind == "memory":
        yield f"memory://{prefix}-{uuid.uuid4().hex[:8]}"
    elif kind in ("kombu", "pika"):
        if not RABBIT:
            pytest.skip("POLYMSG_TEST_RABBIT_URL is not set")
        yield RABBIT.replace("rabbit://", f"rabbit+{kind}://", 1)
    else:
        if importlib.util.find_spec("polymsg_zmq") is None:
            pytest.skip("polymsg-zmq is not installed")
        root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        try:
            yield f"zmq://127.0.0.1:{free_port()}/?ipc_dir={root}/ipc"
        finally:
            shutil.rmtree(root, ignore_errors=True)
