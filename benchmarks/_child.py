"""Helper processes of the benchmark, and the parent's handle on one.

A child runs one *role* (an RPC server, a raw consumer, a ping-pong loop…)
in a fresh interpreter, ``python -m benchmarks._child_main ROLE ARGS_JSON``,
with the repository root on its ``PYTHONPATH``.
It talks to the parent in JSON lines: it writes events on stdout (``ready``
first, then whatever its role reports) and reads commands on stdin; end of
stdin means "stop". Its stderr goes to a file the parent shows when the
child fails, so driver log lines never garble the progress display.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["Child", "ChildFailed", "commands", "cpu_seconds", "emit", "on_stdin_closed",
           "rss_bytes"]

#: Seconds a child may take to import its libraries and say ``ready``.
START_TIMEOUT = 60.0
#: The directory holding the ``benchmarks`` package (the repository root).
_ROOT = str(Path(__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    return env


class ChildFailed(RuntimeError):
    """A helper process died, said something unexpected or did not answer in time."""


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``, read from ``/proc/PID/status``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ChildFailed(f"/proc/{pid}/status has no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; the fields after it may not.
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15, counted from 1 with the name as field 2.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A running helper process; use as a context manager so it always ends."""

    def __init__(self, role: str, **args: Any) -> None:
        self.role = role
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed by close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child_main", role, json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1, env=_child_env())
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"bench-child-{role}", daemon=True).start()
        try:
            #: The child's ``ready`` event (roles put what the parent needs in it).
            self.ready = self.expect("ready", START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def _read(self) -> None:
        stdout = self._proc.stdout
        if stdout is None:  # never: Popen(stdout=PIPE)
            return
        for line in stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                self._events.put({"event": "garbage", "line": line})
        self._events.put(None)

    def send(self, command: str, **args: Any) -> None:
        """Write one command line to the child."""
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            raise ChildFailed(f"{self.role} child: stdin already closed")
        try:
            stdin.write(json.dumps({"command": command, **args}) + "\n")
            stdin.flush()
        except OSError as exc:
            raise ChildFailed(f"{self.role} child is gone: {exc}{self.stderr_tail()}") from exc

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The child's next event, which must be ``event`` and come within ``timeout`` s."""
        try:
            got = self._events.get(timeout=timeout)
        except queue.Empty:
            raise ChildFailed(f"{self.role} child: no {event!r} within {timeout:g} s"
                              f"{self.stderr_tail()}") from None
        if got is None:
            self._proc.wait(timeout=5)
            raise ChildFailed(f"{self.role} child exited ({self._proc.returncode}) before "
                              f"{event!r}{self.stderr_tail()}")
        if got.get("event") == "error":
            raise ChildFailed(f"{self.role} child: {got.get('message')}")
        if got.get("event") != event:
            raise ChildFailed(f"{self.role} child: expected {event!r}, got {got!r}")
        return got

    def rss(self) -> int:
        """The child's resident set size in bytes."""
        return rss_bytes(self._proc.pid)

    def cpu(self) -> float:
        """CPU seconds the child has used."""
        return cpu_seconds(self._proc.pid)

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the child wrote on stderr, prefixed for an error message."""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        text = self._stderr.read().decode(errors="replace").strip()
        return f"\n--- {self.role} child stderr (end) ---\n{text}" if text else ""

    def close(self, timeout: float = 30.0) -> None:
        """Close stdin (the child stops cleanly), then kill it if it lingers."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._stderr.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- the child side ------------------------------------------------------------------------

_OUT: IO[str] = sys.stdout
_OUT_LOCK = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one event line for the parent (thread-safe)."""
    line = json.dumps({"event": event, **fields})
    with _OUT_LOCK:
        _OUT.write(line + "\n")
        _OUT.flush()


def commands() -> Iterator[dict[str, Any]]:
    """The parent's commands, until it closes stdin."""
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


def on_stdin_closed(callback: Callable[[], None]) -> None:
    """Call ``callback`` on a daemon thread once the parent closes our stdin."""
    def watch() -> None:
        for _ in commands():
            pass
        callback()

    threading.Thread(target=watch, name="bench-stdin", daemon=True).start()


def _roles() -> dict[str, Callable[..., None]]:
    from benchmarks import _raw, _servers

    return {
        "serve": _servers.serve,
        "memory-rss": _servers.memory_rss,
        "pingpong": _raw.pingpong_child,
        "pika-rpc-server": _raw.pika_rpc_server,
        "pika-consumer": _raw.pika_consumer,
        "zmq-router": _raw.zmq_router,
        "zmq-pull": _raw.zmq_pull,
    }


def main(argv: list[str]) -> int:
    """Run the role named by ``argv[0]`` with the JSON arguments in ``argv[1]``."""
    global _OUT
    # Libraries may print; keep the parent's channel for events only.
    _OUT, sys.stdout = sys.stdout, sys.stderr
    role, args = argv[0], json.loads(argv[1])
    try:
        _roles()[role](**args)
    except Exception as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    return 0

