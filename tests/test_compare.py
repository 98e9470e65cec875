"""`bench compare`: two stores metric for metric, against changes made by hand to a copy."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from bench.cli import main
from bench.compare import compare_stores
from tests.conftest import TINY_GRID, write_grid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    grid = write_grid(folder, {**TINY_GRID, "architectures": ["logreg"], "attacks": ["loss", "lira"]})
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(folder / "c"), "--results", str(folder / "r"),
                 "--quiet", "--no-report"]) == 0
    return folder / "r"


def altered(store, tmp_path, *statements):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    db = sqlite3.connect(copy / "results.sqlite")
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()
    return copy


def test_a_copy_is_identical(store, tmp_path, capsys):
    assert compare_stores(store, altered(store, tmp_path)).identical
    assert main(["compare", str(store), str(tmp_path / "copy")]) == 0
    assert "identical" in capsys.readouterr().out


def test_every_kind_of_difference_is_found(store, tmp_path, capsys):
    copy = altered(
        store, tmp_path,
        "UPDATE results SET auc = auc + 1e-3 WHERE attack_key = 'loss' AND target = 0",
        "UPDATE results SET test_accuracy = test_accuracy * (1 + 1e-9)",  # within rtol
        "DELETE FROM results WHERE attack_key = 'lira' AND target = 1",
        "UPDATE samples SET score = score + 1 WHERE attack_key = 'lira' AND target = 0 AND record % 2 = 0",
        "ALTER TABLE results ADD COLUMN extra REAL",
    )
    diff = compare_stores(store, copy)
    assert not diff.identical
    assert diff.columns == {"auc": 1}
    assert [key[1:] for key in diff.rows_only_old] == [("lira", 1)] and diff.rows_only_new == []
    assert diff.columns_only_new == ["extra"] and diff.columns_only_old == []
    lira0 = sqlite3.connect(store / "results.sqlite").execute(
        "SELECT COUNT(*) FROM samples WHERE attack_key = 'lira' AND target = 0 AND record % 2 = 0").fetchone()[0]
    assert diff.samples == {"score": lira0} and lira0 > 0
    assert main(["compare", str(store), str(copy)]) == 1
    out = capsys.readouterr().out
    assert "auc: 1 differ" in out and "1 rows only in the old store" in out and "columns only in the new store" in out
    assert compare_stores(store, copy, rtol=1e-2).columns == {}  # the auc change is within 1 %


def test_an_older_store_is_refused_with_the_fix(store, tmp_path, capsys):
    copy = altered(store, tmp_path, "DROP TABLE meta")
    assert main(["compare", str(store), str(copy)]) == 2
    assert "bench migrate" in capsys.readouterr().err
