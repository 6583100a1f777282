"""Helpers of polymsg-kombu's tests (a module name no other driver's tests use)."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

import polymsg

RABBIT_URL = os.environ.get("POLYMSG_TEST_RABBIT_URL")
RABBITMQCTL = os.environ.get("POLYMSG_TEST_RABBITMQCTL")


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` with ``args``; its output. Needs ``$POLYMSG_TEST_RABBITMQCTL``."""
    if not RABBITMQCTL:
        pytest.skip("POLYMSG_TEST_RABBITMQCTL is not set (scripts/services.sh env prints it)")
    done = subprocess.run([*shlex.split(RABBITMQCTL), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def with_vhost(url: str, vhost: str | None, scheme: str = "rabbit+kombu") -> str:
    """``url`` with another scheme and virtual host (``None`` keeps the URL's)."""
    parsed = polymsg.TransportURL.parse(url)
    hosts = ",".join(h._render(hide_password=False) for h in parsed.hosts)
    path = vhost if vhost is not None else (parsed.virtual_host or "")
    return f"{scheme}://{hosts}/{path}"
