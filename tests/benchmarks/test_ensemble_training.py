"""pytest-benchmark group ``ensemble_training``: the per-model loop against the stacked ensemble on identical
work (one epoch of M = 16 and 64 models, a small tabular MLP and a wide one on fingerprints), and a plain matmul of
the wide MLP's first layer for the machine's attainable GFLOP/s. Run with ``tox -e bench`` or
``python -m pytest -m benchmark --benchmark-only tests/benchmarks/test_ensemble_training.py``; compare means of one
run: ``extra_info["gflop"]`` over a mean gives the GFLOP/s achieved.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from targets.architectures import mlp
from targets.ensemble import Ensemble
from targets.membership import membership_matrix
from tests.training import train

MODELS = (16, 64)
SHAPES = {
    # (n_pool, n_features, width, batch_size): a small tabular MLP, and an MLP on 2048-bit fingerprints
    "tabular_30x64": (400, 30, 64, 32),
    "fingerprint_2048x256": (1000, 2048, 256, 64),
}
N_OUTPUTS = 2


def epoch_gflop(keep: np.ndarray, n_features: int, width: int, batch: int) -> float:
    """The matmul work of one epoch: every model's ``ceil(n_max / batch)`` steps of ``batch`` records; per record,
    2 FLOPs per weight forward, 2 for the weight gradient and 2 for the input gradient of every layer but the
    first (the records need no gradient)."""
    records = math.ceil(keep.sum(1).max() / batch) * batch * len(keep)
    first, second = n_features * width, width * N_OUTPUTS
    return records * (4 * first + 6 * second) / 1e9


def _work(shape: str, engine: str, n_models: int):
    n, d, width, batch = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(n, d, generator=g) < 0.1).float() if d > 100 else torch.randn(n, d, generator=g)
    y = torch.randint(0, N_OUTPUTS, (n,), generator=g)
    keep = membership_matrix(n_models, n, seed=0)

    def factory():
        return mlp((d,), N_OUTPUTS, depth=1, width=width, activation="relu", dropout=0.0)

    def setup():
        return (Ensemble.initialise(factory, n_models, seed=0), X, y, keep), {}

    def run(ensemble, X, y, keep):
        train(ensemble, X, y, keep, engine=engine, epochs=1, batch_size=batch, lr=1e-3, optimizer="adam",
              momentum=0.0, seed=0)

    return setup, run, epoch_gflop(keep, d, width, batch)


@pytest.mark.benchmark(group="ensemble_training")
@pytest.mark.parametrize("n_models", MODELS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("engine", ["loop", "ensemble"])
def test_one_epoch(benchmark, shape, engine, n_models):
    setup, run, gflop = _work(shape, engine, n_models)
    benchmark.extra_info["gflop"] = gflop
    # the loop's cost grows as M² (each model's slice of a stacked parameter back-propagates a full-size gradient):
    # one round of a minute or two is enough where the stacked engine is an order of magnitude faster
    slow = engine == "loop" and n_models > 16 and shape.startswith("fingerprint")
    benchmark.pedantic(run, setup=setup, rounds=1 if slow else 5, iterations=1, warmup_rounds=0 if slow else 1)


@pytest.mark.benchmark(group="ensemble_training")
@pytest.mark.parametrize("n_models", MODELS)
def test_plain_matmul_gflops(benchmark, n_models):
    """One dense matmul of the fingerprint MLP's first layer on a batch of every model, ``[M·B, 2048] @ [2048,
    256]``: the machine's attainable GFLOP/s for comparison."""
    _, d, width, batch = SHAPES["fingerprint_2048x256"]
    a, b = torch.randn(n_models * batch, d), torch.randn(d, width)
    benchmark.extra_info["gflop"] = 2 * a.shape[0] * d * width / 1e9
    benchmark(lambda: a @ b)
    assert np.isfinite(benchmark.stats.stats.mean)
