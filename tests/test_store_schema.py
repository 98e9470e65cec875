"""The store's schema version: a current store records it, an older store is refused with the fix and migrated.

The version-1 store here is written the way privbench wrote stores before versions existed: no ``meta`` table,
the facts that components reported unprefixed (``epsilon`` beside ``defense.epsilon``, ``lira_k_in``), no
``label.*`` columns, SQLite's REAL affinity turning integer and boolean parameters into floats.
"""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from bench.cli import main
from bench.leaderboard import build_leaderboard, read_rows
from bench.rows import ATTACK_FACT, FACT
from bench.store import SCHEMA_VERSION, ResultsStore, migrate_store, read_samples, read_store, store_path
from privkernel.errors import BenchError

CELLS = {  # cell_key: (defense, defense params as SQLite gave them back, the v1 `cell` label, ε reached)
    "k-none": ("none", {}, "breast_cancer / mlp / none / seed=0", None),
    "k-dp": ("dpsgd", {"defense.accountant": "rdp", "defense.delta": 1e-05, "defense.epsilon": 1.0,
                       "defense.max_grad_norm": 1.0, "defense.noise_multiplier": 1.0, "defense.poisson": 1.0},
             "breast_cancer / mlp / dpsgd(epsilon=1.0) / seed=0", 0.9946),
    "k-l2": ("l2", {"defense.weight_decay": 0.01}, "breast_cancer / mlp(width=32) / l2(weight_decay=0.01) / seed=0",
             None),
}


def v1_store(folder) -> None:
    """A store as privbench wrote it before schema versions (one row per cell × attack, one target)."""
    rows, samples = [], []
    for key, (defense, params, label, epsilon) in CELLS.items():
        width = 32.0 if "width=32" in label else 64.0
        base = {"cell_key": key, "target": 0, "dataset": "breast_cancer", "architecture": "mlp",
                "architecture.width": width, "architecture.depth": 2.0, "architecture.dropout": 0.0,
                "architecture.activation": "relu", "defense": defense, **params, "training.engine": "ensemble",
                "training.epochs": 60, "training.batch_size": 32, "training.lr": 0.001, "training.optimizer": "adam",
                "training.momentum": 0.9, "n_models": 16, "n_targets": 4, "test_fraction": 0.3,
                "calibration_models": 2, "seed": 0, "cell": label, "grid": "old", "test_accuracy": 0.9,
                "train_accuracy": 1.0, "access": "black-box", "knowledge": "references"}
        if epsilon is not None:
            base.update({"epsilon": epsilon, "delta": 1e-05, "steps": 420.0})
        for attack, tpr in (("loss", 0.01), ("lira", 0.05)):
            row = {**base, "attack": attack, "attack_key": attack, "auc": 0.6, "tpr_at_fpr_0.1pct": tpr,
                   "balanced_accuracy": 0.55, "min_resolvable_fpr": 0.005, "epsilon_lower_bound": 0.1}
            if attack == "lira":
                row.update({"lira_k_in": 7.0, "lira_k_out": 8.0})
            rows.append(row)
            samples.append({"cell_key": key, "attack_key": attack, "target": 0, "record": 3, "label": 1.0,
                            "member": 1, "score": 0.25})
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(store_path(folder))
    with db:
        pd.DataFrame(rows).to_sql("results", db, index=False)
        pd.DataFrame(samples).to_sql("samples", db, index=False)
    db.close()


def test_a_new_store_records_its_schema_version(tmp_path):
    ResultsStore(tmp_path).write_cell([{"cell_key": "k", "attack_key": "a", "target": 0, "fact.epsilon": 2.0}])
    db = sqlite3.connect(store_path(tmp_path))
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    db.close()
    assert read_store(tmp_path)["fact.epsilon"].tolist() == [2.0]
    assert migrate_store(tmp_path) == []  # already current: nothing to do


def test_an_old_store_is_refused_with_the_fix(tmp_path, capsys):
    v1_store(tmp_path / "old")
    for read in (read_store, read_samples, lambda d: ResultsStore(d).check_writable(),
                 lambda d: ResultsStore(d).write_cell([{"cell_key": "x", "attack_key": "a", "target": 0}])):
        with pytest.raises(BenchError, match=r"schema version 1 .*python -m bench migrate --results"):
            read(tmp_path / "old")
    assert main(["leaderboard", "--results", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err
    assert "schema version 1" in err and err.count("\n") == 1  # one line, naming the problem and the fix
    assert "meta" not in {r[0] for r in sqlite3.connect(store_path(tmp_path / "old")).execute(
        "SELECT name FROM sqlite_master")}  # refusing never writes


def test_a_newer_store_is_refused(tmp_path):
    ResultsStore(tmp_path).write_cell([{"cell_key": "k", "attack_key": "a", "target": 0}])
    db = sqlite3.connect(store_path(tmp_path))
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    with pytest.raises(BenchError, match="newer than"):
        read_store(tmp_path)


def test_migration_renames_the_facts_adds_the_labels_and_keeps_every_value(tmp_path, capsys):
    v1_store(tmp_path)
    db = sqlite3.connect(store_path(tmp_path))
    before = pd.read_sql("SELECT * FROM results", db).sort_values(["cell_key", "attack_key"], ignore_index=True)
    db.close()
    assert main(["migrate", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "epsilon -> fact.epsilon" in out and "lira_k_in -> attack_fact.lira_k_in" in out
    after = read_store(tmp_path)
    renamed = {"epsilon": f"{FACT}epsilon", "delta": f"{FACT}delta", "steps": f"{FACT}steps",
               "lira_k_in": f"{ATTACK_FACT}lira_k_in", "lira_k_out": f"{ATTACK_FACT}lira_k_out"}
    assert not set(renamed) & set(after.columns)
    pd.testing.assert_frame_equal(
        before.rename(columns=renamed)[sorted(before.rename(columns=renamed).columns)],
        after[sorted(before.rename(columns=renamed).columns)], check_dtype=False,
    )
    # labels from the identity columns and the registry's defaults, as the v1 cell label showed them
    labels = after.drop_duplicates("cell_key").set_index("cell_key")
    for key, (_, _, cell, _) in CELLS.items():
        dataset, architecture, defense, _ = cell.split(" / ")
        assert (labels.loc[key, "label.dataset"], labels.loc[key, "label.architecture"],
                labels.loc[key, "label.defense"]) == (dataset, architecture, defense)
    board = build_leaderboard(read_rows(tmp_path), n_boot=50).set_index("defense")
    assert board.loc["dpsgd(epsilon=1.0)", "epsilon"] == pytest.approx(0.9946)
    assert pd.isna(board.loc["none", "epsilon"])
    assert read_samples(tmp_path)["score"].eq(0.25).all()
    assert main(["migrate", "--results", str(tmp_path)]) == 0
    assert "nothing to do" in capsys.readouterr().out
