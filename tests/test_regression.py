"""Regression cells end to end: MSE training, R²/MAE utility, residual attacks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from attacks.base import AttackData
from bench.cli import main
from bench.grid import load_grid
from bench.store import read_store
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS, DATASETS
from targets.datasets import Dataset
from tests.conftest import TINY_GRID, write_grid


def regression_data(residual_t, residual_r, keep, pop_residual_t=None, pop_residual_r=None):
    y = np.zeros(len(residual_t))
    kwargs = {}
    if pop_residual_t is not None:
        pop_y = np.zeros(len(pop_residual_t))
        kwargs = dict(population_target=pop_residual_t[:, None], population_references=pop_residual_r[..., None],
                      population_labels=pop_y)
    return AttackData(np.asarray(residual_t, float)[:, None], y, np.asarray(residual_r, float)[..., None],
                      np.asarray(keep, bool), task="regression", **kwargs)


def test_loss_attack_scores_the_squared_residual():
    data = regression_data([0.1, -2.0, 0.5], np.zeros((1, 3)), [[True, False, True]])
    np.testing.assert_allclose(ATTACKS.get("loss").obj(data).scores, [-0.01, -4.0, -0.25])


def test_lira_on_residuals_matches_the_closed_form():
    # 4 IN references with |residual| 0.1, 0.2, 0.3, 0.4 and 4 OUT with 1, 2, 3, 4 on one point
    keep = np.array([[True] * 4 + [False] * 4]).T
    refs = np.array([[0.1, -0.2, 0.3, -0.4, 1.0, -2.0, 3.0, -4.0]]).T
    out = ATTACKS.get("lira").obj(regression_data([0.25], refs, keep), equalize_refs=False)
    phi_in, phi_out = -np.abs(refs[:4, 0]), -np.abs(refs[4:, 0])
    expected = (norm.logpdf(-0.25, phi_in.mean(), phi_in.std(ddof=1))
                - norm.logpdf(-0.25, phi_out.mean(), phi_out.std(ddof=1)))
    assert out.scores[0] == pytest.approx(expected)


def test_rmia_on_residuals_matches_a_brute_force():
    rng = np.random.default_rng(0)
    keep = membership = np.array([[True, False], [False, True], [True, False], [False, True]])
    r_t, r_r = rng.normal(size=2), rng.normal(size=(4, 2))
    pop_t, pop_r = rng.normal(size=5), rng.normal(size=(4, 5))
    out = ATTACKS.get("rmia").obj(regression_data(r_t, r_r, membership, pop_t, pop_r), equalize_refs=False,
                                  tie_break="none")
    two_var = 2 * np.mean(pop_r**2)
    lik = lambda r: np.exp(-np.asarray(r) ** 2 / two_var)  # noqa: E731
    expected = []
    for i in range(2):
        pr_x = 0.5 * (lik(r_r[keep[:, i], i]).mean() + lik(r_r[~keep[:, i], i]).mean())
        ratio_x = lik(r_t[i]) / pr_x
        ratio_z = [lik(pop_t[j]) / lik(pop_r[:, j]).mean() for j in range(5)]
        expected.append(np.mean([ratio_x / rz >= 1.0 for rz in ratio_z]))
    np.testing.assert_allclose(out.scores, expected)


@pytest.fixture
def noise_targets(registries):
    """Regression targets that are pure noise: fitting members means memorising them."""

    def load() -> Dataset:
        rng = np.random.default_rng(1)
        return Dataset(rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=300).astype(np.float32),
                       "regression", 1)

    DATASETS.register("noise_targets", description="test", task="regression")(load)


def test_regression_cell_columns(tmp_path):
    grid = write_grid(tmp_path, {**TINY_GRID, "datasets": ["diabetes"], "architectures": ["logreg"],
                                 "attacks": ["loss", "lira"], "training": {"epochs": 20, "lr": 0.01}})
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    assert rows["test_r2"].between(0.2, 0.7).all()  # a linear model explains about half of the variance
    assert rows["test_mae"].between(0.3, 1.0).all() and rows["auc"].notna().all()


@pytest.mark.slow  # trains wide MLPs for 100 epochs on two datasets: about a minute on two cores
def test_regression_cells_end_to_end(noise_targets, tmp_path):
    grid = write_grid(tmp_path, {
        **TINY_GRID, "datasets": ["diabetes", "noise_targets"],
        "architectures": [{"name": "mlp", "params": {"width": 128, "depth": 2}}],
        "attacks": ["loss", "lira", "rmia", "nn"], "protocol": {"n_models": 6, "n_targets": 2},
        "training": {"epochs": 100, "batch_size": 32, "lr": 0.003},
    })
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    diabetes, noise = rows[rows.dataset == "diabetes"], rows[rows.dataset == "noise_targets"]
    assert diabetes["test_r2"].between(-1, 0.8).all() and diabetes["train_r2"].gt(diabetes["test_r2"]).all()
    assert noise["train_r2"].gt(0.9).all() and noise["test_r2"].lt(0.1).all()
    assert noise.groupby("attack")["auc"].mean().min() > 0.75  # every attack finds the memorised records
    assert "test_accuracy" not in rows or rows["test_accuracy"].isna().all()


def test_a_classification_attack_on_a_regression_cell_is_refused(tmp_path):
    grid = write_grid(tmp_path, {**TINY_GRID, "datasets": ["diabetes"], "attacks": ["loss", "confidence"]})
    with pytest.raises(BenchError, match="attack 'confidence' supports classification only"):
        load_grid(str(grid))


def test_a_mixed_grid_skips_classification_attacks_on_regression_cells(tmp_path):
    grid = write_grid(tmp_path, {**TINY_GRID, "datasets": ["breast_cancer", "diabetes"], "architectures": ["logreg"],
                                 "attacks": ["loss", "confidence"], "training": {"epochs": 3}})
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r").set_index(["dataset", "attack"])
    assert rows.loc[("diabetes", "confidence"), "skipped"].str.contains("supports classification only").all()
    assert rows.loc[("breast_cancer", "confidence"), "auc"].notna().all()
    assert rows.loc[("diabetes", "loss"), "auc"].notna().all()
