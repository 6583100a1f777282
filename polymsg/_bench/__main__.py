"""Entry point of the benchmark's helper processes: ``python -m polymsg._bench ROLE ARGS``."""

import sys

from polymsg._bench._child import main

raise SystemExit(main(sys.argv[1:]))
