"""Entry point of the benchmark's helper processes.

``python -m benchmarks._child_main ROLE ARGS_JSON`` (see :mod:`benchmarks._child`).
"""

import sys

from benchmarks._child import main

raise SystemExit(main(sys.argv[1:]))
