"""The Gaussian-noise release (defenses/gaussian_release.py): a defense added as one file against the hooks."""

from __future__ import annotations

import numpy as np

from bench.cache import Cache
from bench.cli import main
from bench.grid import load_grid
from bench.metrics import auc
from bench.pipeline import CellRun
from bench.store import read_store
from defenses.gaussian_release import GaussianRelease
from tests.conftest import TINY_GRID, write_grid


def log_probs(seed: int = 0, shape: tuple[int, ...] = (3, 50, 4)) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=shape)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_without_noise_the_release_is_the_model_output():
    released = GaussianRelease(std=0.0).release(log_probs(), np.random.default_rng(0))
    np.testing.assert_allclose(released, log_probs(), rtol=0, atol=1e-12)


def test_the_noise_is_the_seeded_stream_added_to_the_probabilities():
    """Closed form of one release: q = max(p + ε, 1e-12) / Σ, with ε the generator's normal draws."""
    lp, std = log_probs(1), 0.05
    released = GaussianRelease(std=std).release(lp, np.random.default_rng(7))
    noisy = np.maximum(np.exp(lp) + np.random.default_rng(7).normal(0.0, std, lp.shape), 1e-12)
    np.testing.assert_allclose(np.exp(released), noisy / noisy.sum(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(np.exp(released).sum(-1), 1.0, rtol=1e-12)
    assert not np.allclose(released, lp, atol=1e-3)


def test_noise_hides_a_known_leak():
    """Members released at p_y = 0.95, non-members at 0.6: the true-class probability separates them perfectly
    (AUC 1); after noise of std 10 it is at chance."""
    member = np.arange(2000) % 2 == 0
    p_true = np.where(member, 0.95, 0.6)
    probs = np.stack([p_true, 1 - p_true], -1)[None]
    released = GaussianRelease(std=10.0).release(np.log(probs), np.random.default_rng(3))
    assert auc(probs[0, :, 0], member) == 1.0
    assert abs(auc(released[0, :, 0], member) - 0.5) < 0.05


def test_a_noisy_release_shares_the_undefended_models_and_runs_in_a_grid(tmp_path):
    content = {**TINY_GRID, "architectures": ["logreg"],
               "defenses": ["none", {"name": "gaussian_release", "params": {"std": 0.2}}]}
    grid = write_grid(tmp_path, content)
    none, noisy = (CellRun(cell, Cache(tmp_path / "c")) for cell in load_grid(str(grid)).cells)
    assert none.models_key == noisy.models_key and none.observations_key != noisy.observations_key
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    assert sorted(rows.groupby("defense").size().items()) == [("gaussian_release", 2), ("none", 2)]
    assert rows["auc"].notna().all()
    released = {cell: run.observations()["pool"] for cell, run in (("none", none), ("noisy", noisy))}
    assert not np.allclose(released["none"], released["noisy"])
