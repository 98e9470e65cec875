"""`python -m bench audit` on outputs computed elsewhere: same numbers as the grid, clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.cache import Cache
from bench.cli import main
from bench.grid import load_grid
from bench.pipeline import CellRun
from bench.store import read_store
from tests.conftest import TINY_GRID, write_grid


@pytest.fixture(scope="module")
def outputs_file(tmp_path_factory):
    """The outputs of a tiny grid cell written as an audit file, target = model 0, and the grid's store."""
    tmp_path = tmp_path_factory.mktemp("audit")
    grid = write_grid(tmp_path, TINY_GRID)
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "cache"),
                 "--results", str(tmp_path / "results"), "--quiet", "--no-report"]) == 0
    cell = load_grid(str(grid)).cells[1]
    audit = CellRun(cell, Cache(tmp_path / "cache")).audit()
    probs = np.exp(audit.outputs.astype(np.float64))
    path = tmp_path / "outputs.npz"
    arrays = dict(
        target_outputs=probs[0], target_membership=audit.keep[0].astype(int), labels=audit.labels,
        reference_outputs=probs[1:], reference_membership=audit.keep[1:],
    )
    np.savez(path, **arrays)
    store = read_store(tmp_path / "results")
    return path, arrays, store[(store.cell_key == cell.key) & (store.target == 0)]


def test_audit_reproduces_the_grid_numbers(outputs_file, tmp_path, capsys):
    path, _, expected = outputs_file
    csv = tmp_path / "audit.csv"
    assert main(["audit", "--outputs", str(path), "--attacks", "loss", "--calibration-models", "1",
                 "--csv", str(csv)]) == 0
    assert "loss" in capsys.readouterr().out
    got = pd.read_csv(csv).iloc[0]
    for metric in ["auc", "balanced_accuracy", "tpr_at_fpr_0", "tpr_at_fpr_1pct", "epsilon_lower_bound"]:
        assert got[metric] == pytest.approx(expected[metric].item(), abs=1e-6), metric


def test_logits_are_accepted_with_the_flag(outputs_file, tmp_path, capsys):
    path, arrays, expected = outputs_file
    logits = {**arrays, "target_outputs": np.log(arrays["target_outputs"]) + 3.0,
              "reference_outputs": np.log(arrays["reference_outputs"]) - 1.0}
    np.savez(tmp_path / "logits.npz", **logits)
    assert main(["audit", "--outputs", str(tmp_path / "logits.npz"), "--attacks", "loss"]) == 2
    assert "look like logits; pass --logits" in capsys.readouterr().err
    assert main(["audit", "--outputs", str(tmp_path / "logits.npz"), "--attacks", "loss", "--logits",
                 "--calibration-models", "1", "--csv", str(tmp_path / "a.csv")]) == 0
    assert pd.read_csv(tmp_path / "a.csv")["auc"].item() == pytest.approx(expected["auc"].item(), abs=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("labels"), "lacks the array(s) labels"),
        (lambda a: a.update(labels=a["labels"][:-1]), "array 'labels' must be ["),
        (lambda a: a.update(labels=a["labels"] + 5), "must hold integers in [0, 2)"),
        (lambda a: a.update(target_outputs=a["target_outputs"] * 0.5), "do not sum to 1"),
        (lambda a: a.update(target_outputs=np.where(np.eye(1, a["target_outputs"].shape[0], 0).T == 1, np.nan,
                                                    a["target_outputs"])), "NaN or infinite"),
        (lambda a: a.update(target_membership=np.ones_like(a["target_membership"])), "both members and non-members"),
        (lambda a: a.update(population_labels=a["labels"]), "give all of population_target_outputs"),
    ],
)
def test_bad_outputs_files_name_the_array(outputs_file, tmp_path, capsys, change, message):
    _, arrays, _ = outputs_file
    arrays = dict(arrays)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    assert main(["audit", "--outputs", str(tmp_path / "bad.npz"), "--attacks", "loss"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_file_and_pickled_arrays(tmp_path, capsys):
    assert main(["audit", "--outputs", str(tmp_path / "none.npz")]) == 2
    assert "no outputs file" in capsys.readouterr().err
    np.savez(tmp_path / "obj.npz", target_outputs=np.array([{"a": 1}], dtype=object))
    assert main(["audit", "--outputs", str(tmp_path / "obj.npz")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_an_attack_that_cannot_run_on_the_file_is_skipped_with_its_reason(outputs_file, tmp_path, capsys):
    _, arrays, _ = outputs_file
    one_reference = {**arrays, "reference_outputs": arrays["reference_outputs"][:1],
                     "reference_membership": arrays["reference_membership"][:1]}
    np.savez(tmp_path / "one.npz", **one_reference)
    # with one reference no model is left to calibrate on: said so, instead of skipping every attack
    assert main(["audit", "--outputs", str(tmp_path / "one.npz"), "--attacks", "loss",
                 "--calibration-models", "1"]) == 2
    assert "at most 0 can be" in capsys.readouterr().err
    csv = tmp_path / "one.csv"
    assert main(["audit", "--outputs", str(tmp_path / "one.npz"), "--attacks", "loss,rmia",
                 "--csv", str(csv)]) == 0
    table = pd.read_csv(csv).set_index("attack")
    assert "needs population records" in table.loc["rmia", "skipped"]
    assert table.loc["loss", "auc"] > 0
