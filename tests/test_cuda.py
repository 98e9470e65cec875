"""The GPU path: runs where torch sees a CUDA device, skipped elsewhere; and the error without one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.store import read_store

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_exits_2(tiny_grid, workdirs, capsys):
    code = main(["grid", "--grid", str(tiny_grid), "--device", "cuda", "--cache-dir", str(workdirs["cache"]),
                 "--results", str(workdirs["results"])])
    assert code == 2 and "torch sees no CUDA GPU; use --device cpu" in capsys.readouterr().err


@requires_cuda
def test_grid_on_cuda_matches_cpu(tiny_grid, tmp_path):
    for device in ("cpu", "cuda"):
        assert main(["grid", "--grid", str(tiny_grid), "--device", device, "--quiet", "--no-report",
                     "--cache-dir", str(tmp_path / device / "cache"), "--results", str(tmp_path / device)]) == 0
    cpu, gpu = read_store(tmp_path / "cpu"), read_store(tmp_path / "cuda")
    # different kernels: metrics agree up to the rounding that training amplifies
    pd.testing.assert_series_equal(cpu["test_accuracy"], gpu["test_accuracy"], atol=0.03)
    pd.testing.assert_series_equal(cpu["auc"], gpu["auc"], atol=0.05)
