"""Federated training (FedAvg): site partitions, one site equals centralized training, the aggregation, the
insider attack across rounds, and federated cells end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.base import AttackData
from attacks.rounds import combine_rounds
from bench.cli import main
from bench.grid import load_grid
from bench.metrics import auc
from bench.settings import label_settings
from bench.store import read_store
from defenses.base import Defense
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from targets.architectures import mlp
from targets.ensemble import Ensemble
from targets.federated import site_membership, site_proportions
from targets.membership import membership_matrix
from tests.conftest import TINY_GRID, write_grid
from tests.training import train

TRAINING = dict(epochs=2, batch_size=16, lr=0.01, optimizer="adam", momentum=0.9)


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(120, 5)), dtype=torch.float32)
    y = torch.as_tensor((X[:, 0] + 0.3 * X[:, 1] > 0).long())
    keep = membership_matrix(4, 120, seed=1)
    return X, y, keep


def ensemble(n_models=4, seed=3):
    return Ensemble.initialise(lambda: mlp((5,), 2, depth=1, width=8, activation="relu", dropout=0.0), n_models, seed)


@pytest.mark.parametrize("site_sizes", ["iid", "skewed"])
def test_sites_partition_each_models_records(site_sizes):
    keep = membership_matrix(6, 200, seed=0)
    sites = site_membership(keep, 4, site_sizes, seed=5)
    assert sites.shape == (6, 4, 200)
    assert (sites.sum(1) == keep).all()  # every member on exactly one site, no non-member anywhere
    counts = sites.sum(-1)
    expected = site_proportions(4, site_sizes)[None] * keep.sum(1, keepdims=True)
    assert np.abs(counts - expected).max() <= 1
    np.testing.assert_array_equal(sites, site_membership(keep, 4, site_sizes, seed=5))
    assert not np.array_equal(sites, site_membership(keep, 4, site_sizes, seed=6))


def test_more_sites_than_records_is_refused():
    keep = np.zeros((2, 10), dtype=bool)
    keep[:, :3] = True
    with pytest.raises(BenchError, match="training.sites=4 .* smallest training set of the cell has 3 records"):
        site_membership(keep, 4, "iid", seed=0)
    with pytest.raises(BenchError, match="lower training.sites"):  # skewed: the smallest site gets 3/10 · 1/6 < 1
        site_membership(keep, 3, "skewed", seed=0)


@pytest.mark.parametrize("aggregation", ["weighted", "unweighted"])
def test_fedavg_with_one_site_and_one_round_is_centralized_training(toy, aggregation):
    X, y, keep = toy
    central, federated = ensemble(), ensemble()
    loss = Defense().loss
    log_c = train(central, X, y, keep, loss, seed=11, **TRAINING)
    log_f = train(federated, X, y, keep, loss, engine="federated", seed=11, sites=1, rounds=1, aggregation=aggregation,
                            site_sizes="iid", **TRAINING)
    for name, value in central.params.items():
        torch.testing.assert_close(federated.params[name], value, rtol=0, atol=0)
    np.testing.assert_array_equal(log_f.history, log_c.history)


@pytest.mark.parametrize("aggregation", ["weighted", "unweighted"])
def test_the_global_model_is_the_fedavg_of_the_site_models(toy, aggregation):
    X, y, keep = toy
    models = ensemble()
    log = train(models, X, y, keep, Defense().loss, engine="federated", seed=2, sites=3, rounds=2,
                    aggregation=aggregation, site_sizes="skewed", **TRAINING)
    counts = site_membership(keep, 3, "skewed", seed=2).sum(-1).astype(np.float64)
    weights = counts / counts.sum(1, keepdims=True) if aggregation == "weighted" else np.full((4, 3), 1 / 3)
    for name, final in models.params.items():
        glob, site = log.snapshots[f"round.global.{name}"], log.snapshots[f"round.site.{name}"]
        assert glob.shape == (2, *final.shape) and site.shape == (2, 4, 3, *final.shape[1:])
        w = torch.as_tensor(weights, dtype=site.dtype).view(1, 4, 3, *[1] * (site.dim() - 3))
        torch.testing.assert_close(glob, (w * site).sum(2))
        torch.testing.assert_close(glob[-1], final.detach())
    assert log.history.shape == (2 * TRAINING["epochs"], 4)


def test_weighting_matters_when_sites_differ_in_size(toy):
    X, y, keep = toy
    results = {}
    for aggregation in ("weighted", "unweighted"):
        models = ensemble()
        train(models, X, y, keep, Defense().loss, engine="federated", seed=2, sites=3, rounds=1,
                  aggregation=aggregation, site_sizes="skewed", **TRAINING)
        results[aggregation] = models.params["1.weight"].detach()
    assert not torch.allclose(results["weighted"], results["unweighted"])


def test_federated_training_learns(toy):
    X, y, keep = toy
    models = ensemble()
    log = train(models, X, y, keep, Defense().loss, engine="federated", seed=0, sites=4, rounds=15,
                    aggregation="weighted", site_sizes="iid", **{**TRAINING, "lr": 0.05})
    assert (log.history[-1] < 0.5 * log.history[0]).all()
    accuracy = (models.predict(X).argmax(-1) == y).float().mean(1)
    assert (accuracy > 0.85).all()


def test_combining_rounds_where_leakage_grows():
    """Each round scores members higher by an amount that grows with the round, plus fresh noise: averaging the
    rounds beats the last round alone, and the last round beats the first."""
    rng = np.random.default_rng(0)
    members = rng.random(2000) < 0.5
    rounds = 8
    signal = np.linspace(0.1, 0.6, rounds)[:, None] * members
    scores = signal + rng.normal(size=(rounds, 2000))
    first, last, mean = (auc(combine_rounds(scores[:1], "last"), members), auc(combine_rounds(scores, "last"), members),
                         auc(combine_rounds(scores, "mean"), members))
    assert first < last < mean
    np.testing.assert_array_equal(combine_rounds(scores, "max"), scores.max(0))


def test_the_rounds_attack_runs_its_base_attack_per_round():
    rng = np.random.default_rng(1)
    keep = rng.random((6, 50)) < 0.5
    per_round = np.log(rng.dirichlet([1, 1], size=(3, 7, 50)))  # [T, M, N, C]
    labels = rng.integers(0, 2, 50)
    data = AttackData(per_round[-1, 0], labels, per_round[-1, 1:], keep[1:6], target_rounds=per_round[:, 0],
                      reference_rounds=per_round[:, 1:])
    loss = ATTACKS.get("loss").obj
    expected = np.mean([loss(AttackData(per_round[t, 0], labels, per_round[t, 1:], keep[1:6])).scores
                        for t in range(3)], 0)
    out = ATTACKS.get("rounds").obj(data, base="loss", combine="mean")
    np.testing.assert_allclose(out.scores, expected)
    with pytest.raises(ValueError, match="engine 'federated'"):
        ATTACKS.get("rounds").obj(AttackData(per_round[-1, 0], labels, per_round[-1, 1:], keep[1:6]))


FEDERATED_GRID = {
    **TINY_GRID, "architectures": [{"name": "mlp", "params": {"width": 16, "depth": 1}}],
    "attacks": ["loss", "lira", {"name": "rounds", "params": {"base": "lira", "combine": ["mean", "last"]}},
                {"name": "rounds", "params": {"base": "loss", "view": "site", "site": 1}}],
    "protocol": {"n_models": 6, "n_targets": 2, "calibration_models": 1},
    "training": {"engine": "federated", "sites": 3, "rounds": 3, "epochs": 2, "lr": 0.01},
}


def test_federated_cell_end_to_end(tmp_path):
    grid = write_grid(tmp_path, FEDERATED_GRID)
    args = ["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
            "--quiet", "--no-report"]
    assert main(args) == 0
    rows = read_store(tmp_path / "r")
    assert (rows["training.engine"] == "federated").all() and (rows["training.sites"] == 3).all()
    assert set(rows["cell"]) == {"breast_cancer / mlp(depth=1,width=16) / none / federated(sites=3,rounds=3) / seed=0"}
    settings = label_settings(rows)
    assert set(settings["defense"]) == {"none"} and "engine=federated" in settings["options"].iloc[0]
    by = {key: part.sort_values("target") for key, part in rows.groupby("attack_key")}
    assert set(by) == {"loss", "lira", "rounds", "rounds(combine=last)", "rounds(base=loss,site=1,view=site)"}
    # the last round's global model is the released model: the insider's last look is the outsider's attack
    for column in ("auc", "tpr_at_fpr_0.1pct", "balanced_accuracy"):
        np.testing.assert_allclose(by["rounds(combine=last)"][column], by["lira"][column])
    assert (by["rounds"]["access"] == "insider").all() and (by["lira"]["access"] == "black-box").all()
    assert rows["auc"].notna().all() and rows["test_accuracy"].gt(0.8).all()


def test_federated_settings_are_checked_at_load(tmp_path):
    stray = write_grid(tmp_path, {**TINY_GRID, "training": {"sites": 4}}, "stray.yaml")
    with pytest.raises(BenchError, match="sites apply to the federated engine only, but no training of the grid uses"):
        load_grid(str(stray))
    dp = write_grid(tmp_path, {**FEDERATED_GRID, "defenses": [{"name": "dpsgd", "params": {"epsilon": 8.0}}]},
                    "dp.yaml")
    with pytest.raises(BenchError, match="defense 'dpsgd' cannot train with the federated engine: it fills the "
                                         "training hook.s. start, batches, gradients, finish, which the federated"):
        load_grid(str(dp))
    for defense in ("early_stopping", "advreg"):
        refused = write_grid(tmp_path, {**FEDERATED_GRID, "defenses": [defense]}, f"{defense}.yaml")
        with pytest.raises(BenchError, match=f"defense '{defense}' cannot train with the federated engine"):
            load_grid(str(refused))
    central = write_grid(tmp_path, {**TINY_GRID, "attacks": ["loss", "rounds"]}, "central.yaml")
    with pytest.raises(BenchError, match="no cell of the grid is federated"):
        load_grid(str(central))
    # non-federated cells keep their spec (and cache keys) without the federated settings, also in a sweep
    plain = load_grid(str(write_grid(tmp_path, TINY_GRID, "plain.yaml"))).cells
    swept = load_grid(str(write_grid(tmp_path, {**FEDERATED_GRID, "attacks": ["loss"], "training": {
        **FEDERATED_GRID["training"], "engine": ["ensemble", "federated"], "sites": [2, 3]}}, "swept.yaml"))).cells
    assert "sites" not in plain[0].training_params
    engines = sorted((c.training_params["engine"], c.training_params.get("sites")) for c in swept)
    assert engines == [("ensemble", None), ("federated", 2), ("federated", 3)]


def test_a_site_beyond_the_federation_is_refused_at_load(tmp_path):
    grid = write_grid(tmp_path, {**FEDERATED_GRID, "attacks": [{"name": "rounds", "params": {"view": "site",
                                                                                              "site": 3}}]})
    with pytest.raises(BenchError, match="watches site 3, but the federation has 3 sites"):
        load_grid(str(grid))


def test_more_sites_than_a_models_records_stops_the_cell_with_exit_2(tmp_path, capsys):
    grid = write_grid(tmp_path, {**FEDERATED_GRID, "attacks": ["loss"],
                                 "training": {**FEDERATED_GRID["training"], "sites": 1000}})
    code = main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"])
    assert code == 2
    assert "training.sites=1000" in capsys.readouterr().err
