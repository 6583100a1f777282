"""``python -m benchmarks [OPTIONS]``: the same as ``polymsg bench [OPTIONS]``.

Run from the repository root; ``python -m benchmarks --help`` lists the options.
"""

from polymsg._cli.bench import bench

if __name__ == "__main__":
    bench(prog_name="python -m benchmarks")
