"""pytest setup of polymsg-zmq's tests: the helpers module is importable as ``zmqtest``."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
