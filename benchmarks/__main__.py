"""``python -m benchmarks [OPTIONS]`` from the repository root; ``--help`` lists the options."""

from benchmarks._cli import bench

if __name__ == "__main__":
    bench(prog_name="python -m benchmarks")
