"""polymsg's own options and their registration on a caller's ConfigOpts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from oslo_config import cfg

__all__ = ["DEFAULT_OPTS", "register_opts"]

LOG = logging.getLogger(__name__)

DEFAULT_OPTS: list[cfg.Opt] = [
    cfg.StrOpt("transport_url", secret=True,
               help="The transport URL, e.g. rabbit://user:pass@host:5672/vhost, "
                    "zmq:// or memory://."),
    cfg.IntOpt("rpc_response_timeout", default=60, min=0,
               help="Seconds to wait for a reply to a call."),
    cfg.StrOpt("control_exchange", default="polymsg",
               help="The exchange targets use when they name none."),
    cfg.IntOpt("executor_thread_pool_size", default=64, min=1,
               help="Worker threads of a server's or listener's threading executor."),
]


def register_opts(conf: cfg.ConfigOpts, opts: Sequence[cfg.Opt], group: str | None = None) -> None:
    """Register ``opts`` on ``conf``, tolerating an identical or foreign twin.

    A service migrating from another messaging library may already have an
    option of the same name registered (with another default); polymsg then
    reads that one rather than failing.
    """
    for opt in opts:
        try:
            conf.register_opt(opt, group=group)
        except cfg.DuplicateOptError:
            LOG.debug("option %s already registered on this ConfigOpts; reusing it", opt.dest)
