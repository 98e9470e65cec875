"""pytest-benchmark group ``ensemble_training``: the per-model loop against the stacked ensemble on identical
work (one epoch of 16 models), and a plain matmul for the achieved GFLOP/s. Run with ``tox -e bench`` or
``python -m pytest -m benchmark --benchmark-only tests/benchmarks``; compare the two engines' means in the same run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from targets.architectures import mlp
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from tests.training import train

M = 16
SHAPES = {
    # (n_pool, n_features, width, batch_size): a small tabular MLP, and an MLP on 2048-bit fingerprints
    "tabular_30x64": (400, 30, 64, 32),
    "fingerprint_2048x256": (1000, 2048, 256, 64),
}


def _work(shape: str, engine: str):
    n, d, width, batch = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(n, d, generator=g) < 0.1).float() if d > 100 else torch.randn(n, d, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    keep = membership_matrix(M, n, seed=0)

    def factory():
        return mlp((d,), 2, depth=1, width=width, activation="relu", dropout=0.0)

    def setup():
        return (Ensemble.initialise(factory, M, seed=0), X, y, keep), {}

    def run(ensemble, X, y, keep):
        train(ensemble, X, y, keep, engine=engine, epochs=1, batch_size=batch, lr=1e-3, optimizer="adam",
              momentum=0.0, seed=0)

    # forward + backward of a linear layer ~ 6 FLOPs per weight per example; one epoch ~ n/2 examples per model
    flops = 6 * (d * width + width * 2) * (n // 2) * M
    return setup, run, flops


@pytest.mark.benchmark(group="ensemble_training")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("engine", ["loop", "ensemble"])
def test_one_epoch(benchmark, shape, engine):
    setup, run, flops = _work(shape, engine)
    benchmark.extra_info["gflop"] = flops / 1e9
    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="ensemble_training")
def test_plain_matmul_gflops(benchmark):
    """A dense matmul of the fingerprint MLP's size: the machine's attainable GFLOP/s for comparison."""
    a, b = torch.randn(M * 64, 2048), torch.randn(2048, 256)
    benchmark.extra_info["gflop"] = 2 * a.shape[0] * 2048 * 256 / 1e9
    benchmark(lambda: a @ b)
    assert np.isfinite(benchmark.stats.stats.mean)
