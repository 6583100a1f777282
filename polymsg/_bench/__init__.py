"""The benchmark harness behind ``polymsg bench``.

It measures polymsg on every installed driver next to oslo.messaging, raw
pika, raw pyzmq and a bare thread ping-pong, in one run on one broker,
prints tables with ratios and the DESIGN.md goals, and writes the results
as JSON. Servers run in child processes (:mod:`._child`); ``memory://``
runs in this process, as its users do.
"""

from polymsg._bench._report import render
from polymsg._bench._run import SUBJECTS, Options, Progress, expand_only, run, write_results

__all__ = ["SUBJECTS", "Options", "Progress", "expand_only", "render", "run", "write_results"]
