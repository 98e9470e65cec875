"""Every row records the run that wrote it; `bench store` lists runs and prunes them only on request; `--grid`
reads one grid's rows from a shared store; `bench cache` shows and prunes the cache."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pandas as pd
import pytest

from bench import __version__
from bench.cache import Cache
from bench.cli import main
from bench.store import list_runs, read_samples, read_store, store_path, without_provenance
from privkernel.registry import ATTACKS, DATASETS
from tests.conftest import TINY_GRID, write_grid

ONE_CELL = {**TINY_GRID, "architectures": ["logreg"]}


def run(grid, tmp_path, *extra: str) -> int:
    return main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "cache"), "--results",
                 str(tmp_path / "results"), "--quiet", "--no-report", *extra])


def test_every_row_names_its_run_grid_and_code_versions(tmp_path):
    grid = write_grid(tmp_path, ONE_CELL)
    assert run(grid, tmp_path) == 0
    rows = read_store(tmp_path / "results")
    (run_id,) = set(rows["run.id"])
    assert set(rows["run.grid"]) == {"tiny"} and set(rows["run.grid_path"]) == {str(grid)}
    assert set(rows["run.privbench"]) == {__version__} and rows["run.time"].notna().all()
    assert set(rows["version.dataset"]) == {DATASETS.get("breast_cancer").version}
    assert set(rows["version.attack"]) == {ATTACKS.get("loss").version}
    runs = list_runs(tmp_path / "results")
    assert runs.loc[0, "id"] == run_id and runs.loc[0, "status"] == "finished" and runs.loc[0, "rows"] == len(rows)
    computed = json.loads(runs.loc[0, "computed"])
    assert computed == {"features": 1, "split": 1, "models": 1, "observations": 1, "scores": 2, "metrics": 2}
    assert run(grid, tmp_path) == 0  # warm: nothing computed, every row taken over by the new run
    runs = list_runs(tmp_path / "results")
    assert json.loads(runs.loc[1, "computed"]) == {} and list(runs["rows"]) == [0, len(rows)]


def test_leaderboard_of_one_grid_in_a_store_that_two_grids_share(tmp_path, capsys):
    first = write_grid(tmp_path, ONE_CELL, "a.yaml")
    second = write_grid(tmp_path, {**TINY_GRID, "name": "wide"}, "b.yaml")  # the same logreg cell, and an mlp cell
    assert run(first, tmp_path) == 0 and run(second, tmp_path) == 0
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--grid", "tiny", "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "leaderboard.csv")["architecture"]) == {"logreg"}
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--grid", "wide", "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "leaderboard.csv")["architecture"]) == {"logreg", "mlp(depth=1,width=16)"}
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--grid", "tiyn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no rows of grid 'tiyn'" in err and "did you mean 'tiny'" in err and "\n" not in err


def test_store_prune_deletes_only_the_named_runs_rows_and_samples(tmp_path, capsys):
    grid = write_grid(tmp_path, ONE_CELL)
    assert run(grid, tmp_path) == 0
    both = write_grid(tmp_path, {**ONE_CELL, "attacks": ["loss", "lira"]}, "both.yaml")
    assert run(both, tmp_path) == 0  # rewrites loss, adds lira
    assert run(grid, tmp_path) == 0  # rewrites loss again: lira's rows are the second run's
    results = tmp_path / "results"
    runs = list_runs(results)
    assert list(runs["rows"]) == [0, 2, 2]
    capsys.readouterr()
    assert main(["store", "--results", str(results)]) == 0
    listing = capsys.readouterr().out
    assert all(run_id in listing for run_id in runs["id"]) and "3 runs in" in listing
    before = read_store(results)
    assert main(["store", "prune", "--results", str(results), "--run", runs.loc[1, "id"], "--dry-run"]) == 0
    assert "would delete 2 rows" in capsys.readouterr().out and len(read_store(results)) == len(before)
    assert main(["store", "prune", "--results", str(results), "--run", runs.loc[1, "id"]]) == 0
    assert "deleted 2 rows" in capsys.readouterr().out
    after = read_store(results)
    assert set(after["attack_key"]) == {"loss"}
    kept = ["cell_key", "attack_key", "target", "auc", "run.id"]  # lira's columns are empty now
    pd.testing.assert_frame_equal(after[kept], before.loc[before["attack_key"] == "loss", kept].reset_index(drop=True))
    assert set(read_samples(results)["attack_key"]) == {"loss"}
    assert list(list_runs(results)["id"]) == [runs.loc[0, "id"], runs.loc[2, "id"]]
    for argv in (["store", "prune", "--results", str(results)],
                 ["store", "prune", "--results", str(results), "--run", "nope"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    assert len(read_store(results)) == len(after)  # refused: nothing deleted


def test_cache_shows_its_stages_and_prunes_only_entries_unused_for_the_given_days(tmp_path, capsys):
    grid = write_grid(tmp_path, ONE_CELL)
    assert run(grid, tmp_path) == 0
    cache = tmp_path / "cache"
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    shown = capsys.readouterr().out
    for stage in ("features", "split", "models", "observations", "scores", "metrics"):
        assert stage in shown
    metrics = sorted((cache / "metrics").rglob("*.json"))
    old = time.time() - 10 * 86400
    for path in [*metrics, *(cache / "models").rglob("*.pt")]:
        os.utime(path, (old, old))
    # a read is a use: the models entry read again is not pruned
    models = next((cache / "models").rglob("*.pt"))
    key = models.stem
    assert Cache(cache).load("models", key, "tensors") is not None
    assert main(["cache", "prune", "--cache-dir", str(cache), "--older-than", "7"]) == 0
    assert f"deleted {len(metrics)} entries" in capsys.readouterr().out
    assert not any((cache / "metrics").rglob("*.json")) and models.exists()
    assert any((cache / "scores").rglob("*.npz"))
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 2  # pruning needs its age
    assert run(grid, tmp_path) == 0  # the pruned stage is recomputed


@pytest.mark.parametrize("flag, value", [("--num-cpus", "0"), ("--num-cpus", "-1"), ("--num-cpus", "nan"),
                                         ("--num-gpus", "-1"), ("--num-gpus", "inf")])
def test_ray_resources_out_of_range_are_refused_even_with_dry_run(flag, value, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["grid", "--grid", "smoke", "--dry-run", flag, value])
    assert stop.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


def test_slack_below_zero_is_refused_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["check", "--baseline", str(tmp_path / "b.csv"), "--slack", "-0.1"])
    assert stop.value.code == 2 and "argument --slack: must be at least 0" in capsys.readouterr().err


def test_a_store_full_disk_is_reported_and_leaves_the_store_as_it_was(tmp_path, monkeypatch, capsys):
    grid = write_grid(tmp_path, ONE_CELL)
    assert run(grid, tmp_path) == 0
    before = read_store(tmp_path / "results")
    real_connect = sqlite3.connect

    class FullDisk:
        def __init__(self, db):
            self.db = db

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __enter__(self):
            return self.db.__enter__()

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

        def executemany(self, sql, rows):
            if sql.startswith("INSERT INTO results"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.executemany(sql, rows)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: FullDisk(real_connect(*a, **k)))
    assert run(grid, tmp_path, "--force") == 2
    err = capsys.readouterr().err
    assert "cannot write the results store" in err and "disk is full" in err and "Traceback" not in err
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    pd.testing.assert_frame_equal(without_provenance(read_store(tmp_path / "results")), without_provenance(before))
    assert store_path(tmp_path / "results").is_file()
