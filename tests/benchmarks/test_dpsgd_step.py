"""pytest-benchmark group ``dpsgd_step``: one DP-SGD step of 16 MLPs 600-256-100 (batch 64 per model).

* ``opacus_hooks`` / ``opacus_ghost``: Opacus' default path, 16 separate ``PrivacyEngine.make_private`` models
  (per-sample hooks, or ghost clipping) stepped one after the other;
* ``ensemble_book_keeping``: the project's path (``defenses.dpsgd.private_gradients`` on the stacked ensemble,
  per-sample norms without per-sample gradients) and an Adam step of all 16;
* ``ensemble_vmap``: the same with the reference ``vmap`` ∘ ``vmap`` ∘ ``grad`` per-sample gradients;
* ``non_private``: a plain step of the same 16-model ensemble, as the training loop (``targets.training.fit``) takes it.

Run with ``python -m pytest -m benchmark --benchmark-only tests/benchmarks/test_dpsgd_step.py``; compare the means
within one run (Opacus / project, DP / non-private).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from defenses.base import Defense
from defenses.dpsgd import private_gradients
from targets.architectures import mlp
from targets.ensemble import Ensemble

M, BATCH, D, WIDTH, CLASSES = 16, 64, 600, 256, 100
SIGMA, C = 1.0, 1.0


def factory():
    return mlp((D,), CLASSES, depth=1, width=WIDTH, activation="relu", dropout=0.0)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(M, BATCH, D, generator=g), torch.randint(0, CLASSES, (M, BATCH), generator=g)


def _opacus_models(mode: str):
    X, y = _data()
    models = []
    for m in range(M):
        module = factory()
        loader = DataLoader(TensorDataset(X[m], y[m]), batch_size=BATCH)
        engine = PrivacyEngine()
        if mode == "ghost":
            module, opt, criterion, _ = engine.make_private(
                module=module, optimizer=torch.optim.Adam(module.parameters(), lr=1e-3), data_loader=loader,
                criterion=torch.nn.CrossEntropyLoss(), noise_multiplier=SIGMA, max_grad_norm=C,
                poisson_sampling=False, grad_sample_mode="ghost")
        else:
            module, opt, _ = engine.make_private(
                module=module, optimizer=torch.optim.Adam(module.parameters(), lr=1e-3), data_loader=loader,
                noise_multiplier=SIGMA, max_grad_norm=C, poisson_sampling=False)
            criterion = torch.nn.CrossEntropyLoss()
        models.append((module, opt, criterion))
    return models, X, y


@pytest.mark.benchmark(group="dpsgd_step")
@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_opacus_per_model(benchmark, mode):
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    models, X, y = _opacus_models(mode)

    def step():
        for m, (module, opt, criterion) in enumerate(models):
            opt.zero_grad()
            criterion(module(X[m]), y[m]).backward()
            opt.step()

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)


def _ensemble():
    ensemble = Ensemble.initialise(factory, M, seed=0)
    return ensemble, torch.optim.Adam(list(ensemble.params.values()), lr=1e-3)


@pytest.mark.benchmark(group="dpsgd_step")
@pytest.mark.parametrize("method", ["book_keeping", "vmap"])
def test_ensemble_private(benchmark, method):
    (ensemble, opt), (X, y) = _ensemble(), _data()
    weights, expected = torch.ones(M, BATCH), torch.full((M,), float(BATCH))
    generator = torch.Generator().manual_seed(0)
    loss = Defense().loss

    def step():
        grads, _ = private_gradients(ensemble, X, y, weights, loss, max_grad_norm=C, noise_multiplier=SIGMA,
                                     expected_batch_size=expected, generator=generator, method=method)
        for k, p in ensemble.params.items():
            p.grad = grads[k]
        opt.step()

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="dpsgd_step")
def test_ensemble_non_private(benchmark):
    (ensemble, opt), (X, y) = _ensemble(), _data()
    loss = Defense().loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss(ensemble.forward(X), y).sum().backward()
        opt.step()

    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)

