"""The hooks through which defenses shape training and release, exercised with test-only defenses."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cache import Cache
from bench.cli import main
from bench.grid import load_grid
from bench.pipeline import CellRun
from bench.store import read_store
from defenses.base import Defense
from privkernel.registry import DEFENSES
from targets.training import TrainingHooks
from tests.conftest import TINY_GRID, write_grid


class LabelsOnly(Defense):
    releases = "labels"
    release_only = True

    def release(self, log_probs, rng):
        return np.where(np.arange(log_probs.shape[-1]) == log_probs.argmax(-1)[..., None], 0.0, -np.inf)


class Reported(Defense):
    """Shrinks the width, decays the weights and reports a fact of its training."""

    def architecture_overrides(self):
        return {"width": 3}

    def optimizer_overrides(self):
        return {"weight_decay": 0.5}

    def hooks(self):
        return HoldOutAndReport(self.loss)


class HoldOutAndReport(TrainingHooks):
    """Holds each model's first 10 members out (a validation set) and reports a fact."""

    def members(self, keep, seed):
        return keep & ~(keep & (np.cumsum(keep, axis=1) <= 10))

    def finish(self, run):
        return {"epsilon": 1.5}


@pytest.fixture
def defenses(registries):
    DEFENSES.register("labels_only_test", description="test")(LabelsOnly)
    DEFENSES.register("reported_test", description="test")(Reported)


def grid(tmp_path, defense, attacks=("loss", "correctness")):
    return write_grid(tmp_path, {**TINY_GRID, "architectures": [{"name": "mlp", "params": {"width": 16, "depth": 1}}],
                                 "defenses": ["none", defense], "attacks": list(attacks)})


def test_release_only_defense_shares_models_and_skips_probability_attacks(defenses, tmp_path):
    cells = load_grid(str(grid(tmp_path, "labels_only_test"))).cells
    none, labels = (CellRun(c, Cache(tmp_path / "c")) for c in cells)
    assert none.models_key == labels.models_key and none.observations_key != labels.observations_key
    assert main(["grid", "--grid", str(grid(tmp_path, "labels_only_test")), "--cache-dir", str(tmp_path / "c"),
                 "--results", str(tmp_path / "r"), "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    defended = rows[rows.defense == "labels_only_test"].set_index("attack")
    assert defended.loc["loss", "skipped"].str.contains("needs probabilities; the release shows labels").all()
    assert defended.loc["loss", "auc"].isna().all()
    assert defended.loc["correctness", "auc"].notna().all()  # label attacks always run
    undefended = rows[rows.defense == "none"].set_index("attack")
    # the release keeps the label, so utility is unchanged
    np.testing.assert_allclose(
        defended.loc["correctness", "test_accuracy"], undefended.loc["correctness", "test_accuracy"]
    )


def test_training_hooks_reach_the_models_and_the_store(defenses, tmp_path):
    path = grid(tmp_path, "reported_test", attacks=("loss",))
    none, reported = (CellRun(c, Cache(tmp_path / "c")) for c in load_grid(str(path)).cells)
    assert reported.models()["param.1.weight"].shape == (4, 3, 30)  # width overridden to 3
    assert none.models()["param.1.weight"].shape == (4, 16, 30)
    assert reported.training_info() == {"epsilon": 1.5}
    assert main(["grid", "--grid", str(path), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    assert rows.loc[rows.defense == "reported_test", "fact.epsilon"].eq(1.5).all()
    assert rows.loc[rows.defense == "none", "fact.epsilon"].isna().all()
    assert "epsilon" not in rows  # a reported fact is never mistaken for a parameter or a metric
    # the held-out members are audited as non-members of the model that never trained on them
    split_keep = reported.split()["keep"]
    np.testing.assert_array_equal(reported.membership().sum(1), split_keep.sum(1) - 10)
    members = rows.set_index("defense")["n_members"]
    assert (members.loc["reported_test"].to_numpy() == members.loc["none"].to_numpy() - 10).all()
