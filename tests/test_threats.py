"""Attackers beyond the black-box outsider, through the harness: which records leak to the leaked-samples
attacker and that they are left out of its metrics; white-box and leaked rows in the store and the leaderboard."""

from __future__ import annotations

import numpy as np
import pytest

from bench.audit import Audit, leak_of, leaked_records, score_target, target_metrics
from bench.cli import main
from bench.grid import load_grid
from bench.leaderboard import build_leaderboard, read_rows, to_markdown
from bench.spec import ComponentSpec
from bench.store import read_samples, read_store
from privkernel.errors import BenchError
from privkernel.registry import ATTACKS
from tests.conftest import TINY_GRID, write_grid


def test_leaked_records_take_the_fraction_of_members_and_of_non_members():
    keep = np.zeros(400, dtype=bool)
    keep[:100] = True
    chosen = leaked_records(keep, 0.3, seed=4)
    assert keep[chosen].sum() == 30 and (~keep[chosen]).sum() == 90
    np.testing.assert_array_equal(chosen, leaked_records(keep, 0.3, seed=4))
    assert not np.array_equal(chosen, leaked_records(keep, 0.3, seed=5))
    # at least one record of each kind leaks, and at least one of each is left to evaluate
    tiny = np.array([True, True, False, False])
    assert len(leaked_records(tiny, 0.01, 0)) == 2 and len(leaked_records(tiny, 0.99, 0)) == 2


def _audit(n_models=5, n=200, seed=0):
    rng = np.random.default_rng(seed)
    keep = rng.random((n_models, n)) < 0.5
    labels = rng.integers(0, 2, n)
    # members get a confident right answer, non-members a coin flip: the leak is learnable
    p_right = np.where(keep, 0.95, rng.uniform(0.3, 0.7, (n_models, n)))
    probs = np.where(np.arange(2) == labels[:, None], p_right[..., None], 1 - p_right[..., None])
    return Audit(np.log(probs), keep, labels)


def test_the_leaked_records_take_no_part_in_the_metrics():
    audit = _audit()
    leaked = ATTACKS.get("leaked")
    spec = ComponentSpec.make("leaked", leaked.validate({"fraction": 0.5, "max_iter": 200}), leaked.validate({}))
    scores = score_target(spec, audit, 0, [1, 2])
    evaluated = scores["evaluated"]
    known = leaked_records(audit.keep[0], *leak_of(spec, 0))
    assert not evaluated[known].any() and evaluated.sum() == audit.keep.shape[1] - len(known)
    assert scores["calibration_evaluated"].shape == (2, audit.keep.shape[1])
    metrics = target_metrics(scores, audit.keep, 0, [1, 2])
    assert metrics["auc"] > 0.9
    # spoiling the leaked records' scores changes nothing: they are not evaluated
    spoiled = {**scores, "target": np.where(evaluated, scores["target"], -scores["target"])}
    assert target_metrics(spoiled, audit.keep, 0, [1, 2]) == metrics
    # while spoiling an evaluated record does
    flipped = scores["target"].copy()
    flipped[np.flatnonzero(evaluated)[:20]] *= -1
    assert target_metrics({**scores, "target": flipped}, audit.keep, 0, [1, 2])["auc"] < metrics["auc"]


THREAT_GRID = {
    **TINY_GRID, "architectures": [{"name": "mlp", "params": {"width": 64, "depth": 1}}],
    "attacks": ["loss", {"name": "white_box", "params": {"hidden": 16, "max_iter": 50}},
                {"name": "leaked", "params": {"fraction": 0.5, "features": ["outputs", "white_box"],
                                              "max_iter": 200}}],
    "protocol": {"n_models": 6, "n_targets": 2, "calibration_models": 1},
    "training": {"epochs": 30, "lr": 0.01},
}


def test_white_box_and_leaked_rows_sit_beside_the_black_box_rows(tmp_path):
    grid = write_grid(tmp_path, THREAT_GRID)
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--results", str(tmp_path / "r"),
                 "--quiet", "--no-report"]) == 0
    rows = read_store(tmp_path / "r")
    threat = rows.groupby("attack_key")[["access", "knowledge"]].first().apply(tuple, axis=1).to_dict()
    assert threat == {
        "loss": ("black-box", "references"), "white_box(hidden=16,max_iter=50)": ("white-box", "references"),
        "leaked(max_iter=200)": ("black-box", "leaked"),
        "leaked(features=white_box,max_iter=200)": ("white-box", "leaked"),
    }
    assert rows["auc"].notna().all() and (rows.groupby("target")["cell_key"].nunique() == 1).all()
    samples = read_samples(tmp_path / "r")
    per_attack = samples.groupby(["attack_key", "target"]).size().unstack()
    # the leaked attacker is scored on the half of the records it does not know
    assert (per_attack.loc["leaked(max_iter=200)"] < 0.6 * per_attack.loc["loss"]).all()
    board = build_leaderboard(read_rows(tmp_path / "r"))
    assert board["strongest_attack"].iloc[0] == "loss"  # the outsider's strongest: the only black-box reference attack
    assert board["white-box: attack"].iloc[0] == "white_box(hidden=16,max_iter=50)"
    assert board["leaked samples: attack"].iloc[0].startswith("leaked")
    markdown = to_markdown(board)
    assert "Attackers beyond the outsider" in markdown and "| leaked samples |" in markdown


def test_a_union_with_a_leaked_attacker_is_refused(tmp_path):
    grid = write_grid(tmp_path, {**TINY_GRID, "attacks": ["loss", "leaked"],
                                 "unions": [{"attacks": ["loss", "leaked"], "fpr": 0.0}]})
    with pytest.raises(BenchError, match="leaked-samples attacker"):
        load_grid(str(grid))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_a_leaked_fraction_outside_zero_one_is_refused(tmp_path, fraction):
    grid = write_grid(tmp_path, {**TINY_GRID, "attacks": [{"name": "leaked", "params": {"fraction": fraction}}]})
    with pytest.raises(BenchError, match="fraction"):
        load_grid(str(grid))
