"""Two runs sharing one cache and one store: the store is a single run's, and every cache entry is computed once
(the writer's lock of :meth:`bench.cache.Cache.writer`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pandas as pd

from bench.store import list_runs, read_store, without_provenance
from tests.conftest import TINY_GRID, write_grid

STAGES = ("features", "split", "models", "observations", "scores", "metrics")


def test_two_concurrent_runs_on_one_cache_and_store_compute_each_entry_once(tmp_path):
    grid = write_grid(tmp_path, {**TINY_GRID, "seeds": [0, 1], "attacks": ["loss", "lira"]})

    def command(folder: str) -> list[str]:
        return [sys.executable, "-m", "bench", "grid", "--grid", str(grid), "--quiet", "--no-report",
                "--cache-dir", str(tmp_path / folder / "cache"), "--results", str(tmp_path / folder / "results")]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command("single"), check=True, env=env, capture_output=True)
    runs = [subprocess.Popen(command("shared"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    for process in runs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err

    single, shared = (without_provenance(read_store(tmp_path / f / "results")) for f in ("single", "shared"))
    pd.testing.assert_frame_equal(shared, single)
    computed = Counter()
    for _, run in list_runs(tmp_path / "shared" / "results").iterrows():
        computed.update(json.loads(run["computed"]))
    cache = tmp_path / "shared" / "cache"
    entries = {stage: sum(1 for p in (cache / stage).rglob("*") if p.is_file()) for stage in STAGES}
    assert dict(computed) == entries  # no entry was computed by both runs
    assert not list(cache.rglob(".*.lock"))
