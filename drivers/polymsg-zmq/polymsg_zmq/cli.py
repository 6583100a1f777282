"""``polymsg zmq-receiver`` (and ``python -m polymsg_zmq``): run a host's receiver as a daemon.

The receiver is configured like a ``zmq://`` transport: ``--url`` takes the
same URL the host's services use (host, port and query options) and
``--config-file`` oslo.config files with a ``[polymsg_zmq]`` section. It
runs until SIGTERM or SIGINT, then unregisters from the matchmaker, closes its
sockets and exits 0. A ``[polymsg_observability]`` section in the
configuration makes it report its health (messages and bytes held...) like a
service's transport, served to Prometheus with ``prometheus_port``.
``polymsg zmq-keygen`` prints a CURVE key pair.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from urllib.parse import urlencode

import click
from oslo_config import cfg

import polymsg
from polymsg import MessagingError, TransportURL
from polymsg_zmq._curve import keypair
from polymsg_zmq._options import Settings, overlay, settings_from
from polymsg_zmq._receiver import Receiver

__all__ = ["main", "zmq_keygen", "zmq_receiver"]

LOG = logging.getLogger("polymsg_zmq.receiver")


def load_settings(url: str | None, config_files: tuple[str, ...]) -> Settings:
    """The receiver's settings from ``config_files`` overlaid with ``url``."""
    return _load(url, config_files)[0]


def _load(url: str | None, config_files: tuple[str, ...]) -> tuple[Settings, cfg.ConfigOpts]:
    conf = cfg.ConfigOpts()
    conf(args=[], project="polymsg", default_config_files=list(config_files))
    parsed = TransportURL.parse(url) if url else None
    if parsed is not None and parsed.transport != "zmq":
        raise click.BadParameter(f"expected a zmq:// URL, got {parsed.transport}://",
                                 param_hint="--url")
    settings = settings_from(overlay(conf, parsed), parsed)
    if settings.curve is not None:
        _warn_if_others_can_read(config_files)
    return settings, conf


def _warn_if_others_can_read(config_files: tuple[str, ...]) -> None:
    """A configuration file that may hold the CURVE secret key should be private."""
    for path in config_files:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o077:
            LOG.warning("zmq receiver: %s may hold the CURVE secret key and other users can "
                        "read it (mode %o); chmod 600 it", path, mode & 0o777)


def _reporter(url: str | None, settings: Settings,
              conf: cfg.ConfigOpts) -> polymsg.Transport | None:
    """With a ``[polymsg_observability]`` section in the configuration, an idle zmq
    transport of this host: it reports the receiver's health (and starts the
    Prometheus endpoint when ``prometheus_port`` is set there)."""
    if "polymsg_observability" not in conf.list_all_sections():
        return None
    return polymsg.get_transport(url or f"zmq://{settings.address}/", conf=conf)


def _serve(settings: Settings, reporting: Callable[[], polymsg.Transport | None]) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        LOG.info("zmq receiver: %s received, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    receiver = Receiver(settings)
    reporter = None
    try:
        receiver.start()
        reporter = reporting()
        while not stop.wait(3600):
            pass
    finally:
        if reporter is not None:
            reporter.cleanup()
        receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    LOG.info("zmq receiver for %s stopped", settings.address)


@click.command("zmq-receiver")
@click.option("--url", metavar="URL", envvar="POLYMSG_ZMQ_URL",
              help="The host's zmq:// URL, e.g. zmq://node-1:9501/?ipc_dir=/run/polymsg "
                   "(env POLYMSG_ZMQ_URL).")
@click.option("--config-file", "config_files", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="oslo.config file with a [polymsg_zmq] section (repeatable).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Level of the receiver's log lines (on stderr).")
def zmq_receiver(url: str | None, config_files: tuple[str, ...], log_level: str) -> None:
    """Run this host's polymsg ZeroMQ receiver until SIGTERM or SIGINT.

    It takes messages for this host on the receiver port and hands them to
    local servers and listeners through the IPC directory; services on the
    host find it there (and start none of their own).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    logging.getLogger("polymsg_zmq").setLevel(log_level.upper())
    try:
        settings, conf = _load(url, config_files)
    except (MessagingError, cfg.Error) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        _serve(settings, lambda: _reporter(url, settings, conf))
    except MessagingError as exc:
        click.echo(f"polymsg zmq-receiver: error: {exc}", err=True)
        sys.exit(1)


@click.command("zmq-keygen")
def zmq_keygen() -> None:
    """Print a new CURVE key pair as [polymsg_zmq] configuration lines, then as URL
    query keys (percent-encoded).

    The keys never contain ``$`` (which oslo.config would read as a variable),
    so the lines can be pasted into a configuration file as they are. Keep the
    secret key in a file only its owner can read.
    """
    public, secret = keypair()
    click.echo(f"curve_public_key = {public}")
    click.echo(f"curve_secret_key = {secret}")
    query = urlencode({"curve_public_key": public, "curve_secret_key": secret})
    click.echo(f"# as URL query keys: ?{query}")


def main() -> None:
    """``python -m polymsg_zmq``: the receiver without the polymsg command line."""
    zmq_receiver(prog_name="python -m polymsg_zmq")
