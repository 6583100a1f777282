"""``python -m polymsg_zmq``: run the receiver (see :mod:`polymsg_zmq.cli`)."""

from polymsg_zmq.cli import main

main()
