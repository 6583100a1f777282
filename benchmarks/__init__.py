"""polymsg's benchmark harness, ``python -m benchmarks`` (repository only: not installed).

It measures polymsg on every installed driver next to oslo.messaging, raw
pika, raw pyzmq and a bare thread ping-pong, in one run on one broker,
prints tables with ratios and the goals (``benchmarks/README.md``), and
writes the results as JSON. Servers run in child processes (:mod:`._child`); ``memory://``
runs in this process, as its users do.
"""

from benchmarks._report import render
from benchmarks._run import SUBJECTS, Options, Progress, expand_only, run, write_results

__all__ = ["SUBJECTS", "Options", "Progress", "expand_only", "render", "run", "write_results"]
