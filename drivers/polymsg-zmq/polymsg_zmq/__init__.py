"""polymsg-zmq: the brokerless ZeroMQ driver for polymsg (``zmq://``).

Install it next to polymsg and use a ``zmq://`` transport URL; see the
distribution's README for the URL forms, the receiver and the matchmakers.
Driver authors' entry points: :class:`ZmqDriver` (registered as ``zmq`` on
``polymsg.drivers``), :func:`list_opts` (``oslo.config.opts``) and
:class:`Receiver` (what ``polymsg zmq-receiver`` runs).
"""

from polymsg_zmq._driver import ZmqDriver
from polymsg_zmq._options import list_opts
from polymsg_zmq._receiver import Receiver, ReceiverRunning

__version__ = "0.1.0"

__all__ = ["Receiver", "ReceiverRunning", "ZmqDriver", "list_opts"]
