"""pytest-benchmark group ``grid``: the default grid cold (empty cache) and warm (everything cached), each as the
command a user runs, with the peak resident memory of the run in ``extra_info``. Run with ``tox -e bench``."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest


def _grid(cache, results) -> None:
    subprocess.run([sys.executable, "-m", "bench", "grid", "--quiet", "--cache-dir", str(cache),
                    "--results", str(results)], check=True, capture_output=True)


@pytest.mark.benchmark(group="grid")
@pytest.mark.parametrize("state", ["cold", "warm"])
def test_default_grid(benchmark, tmp_path, state):
    cache, results = tmp_path / "cache", tmp_path / "results"
    if state == "warm":
        _grid(cache, results)

    def setup():
        if state == "cold":
            subprocess.run(["rm", "-rf", str(cache), str(results)], check=True)
        return (), {}

    benchmark.pedantic(lambda: _grid(cache, results), setup=setup, rounds=1, iterations=1)
    # ru_maxrss of the children is the largest of any finished child: the grid run (kB on Linux)
    benchmark.extra_info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
