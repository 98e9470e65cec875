"""Every executor gives the same store; Ray failures are reported, not lost."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.executors import execute
from bench.grid import load_grid
from bench.store import ResultsStore, read_store, without_provenance
from privkernel.errors import BenchError


def run(tiny_grid, folder, **kwargs):
    store = ResultsStore(folder / "results")
    store.check_writable()
    summary = execute(load_grid(str(tiny_grid)).cells, lambda r: store.write_cell(r.rows, r.samples),
                      cache_dir=str(folder / "cache"), progress=False, **kwargs)
    assert summary.failures == [] and summary.done == 2
    return read_store(folder / "results")


@pytest.mark.slow  # starts a process pool and a local Ray: about a minute on two cores
def test_in_process_process_pool_and_ray_give_the_same_store(tiny_grid, tmp_path):
    pytest.importorskip("ray")
    local = run(tiny_grid, tmp_path / "local")
    pooled = run(tiny_grid, tmp_path / "pool", workers=2)
    on_ray = run(tiny_grid, tmp_path / "ray", workers=2, executor="ray")
    # the workers may run torch with fewer threads, hence other kernels: equal up to float rounding
    pooled, on_ray, local = map(without_provenance, (pooled, on_ray, local))
    pd.testing.assert_frame_equal(pooled, local, rtol=1e-4)
    pd.testing.assert_frame_equal(on_ray, local, rtol=1e-4)


def test_unreachable_ray_address_is_a_clear_error(tiny_grid, tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(BenchError, match="cannot reach the Ray cluster at '127.0.0.1:1'"):
        execute(load_grid(str(tiny_grid)).cells, lambda r: None, cache_dir=str(tmp_path), progress=False,
                executor="ray", ray_address="127.0.0.1:1")
