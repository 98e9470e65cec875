"""The harness end to end on tiny grids: store contents, cache reuse, executors, failures, SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.metrics import auc
from bench.store import list_runs, read_samples, read_store, store_path, without_provenance
from privkernel.registry import ATTACKS, DATASETS
from targets.datasets import Dataset
from tests.attack_data import pairwise_auc
from tests.conftest import TINY_GRID, write_grid


def run_grid(grid: Path, dirs: dict[str, Path], *extra: str) -> int:
    return main(["grid", "--grid", str(grid), "--cache-dir", str(dirs["cache"]), "--results", str(dirs["results"]),
                 "--quiet", "--no-report", *extra])


def test_grid_writes_one_row_per_cell_attack_target_and_rerun_is_cached(tiny_grid, workdirs, capsys):
    assert run_grid(tiny_grid, workdirs) == 0
    first = read_store(workdirs["results"])
    assert len(first) == 2 * 1 * 2
    for column in ["dataset", "architecture", "architecture.width", "defense", "attack", "target", "seed",
                   "training.epochs", "n_models", "train_accuracy", "test_accuracy", "auc", "balanced_accuracy",
                   "tpr_at_fpr_0", "tpr_at_fpr_0.1pct", "tpr_at_fpr_1pct"]:
        assert column in first.columns
    assert first["test_accuracy"].gt(0.8).all()
    assert first["test_roc_auc"].gt(0.9).all()  # the models rank malignant tumours well
    assert "0 entirely from the cache" in capsys.readouterr().err

    samples = read_samples(workdirs["results"])
    pool = first["n_members"] + first["n_nonmembers"]
    assert len(samples) == pool.sum()
    for (cell_key, attack_key, target), group in samples.groupby(["cell_key", "attack_key", "target"]):
        row = first[(first.cell_key == cell_key) & (first.attack_key == attack_key) & (first.target == target)]
        assert group["member"].sum() == row["n_members"].item()
        # the stored AUC is the one its samples give, by the definition (a slow reference) and by bench.metrics
        scores, members = group["score"].to_numpy(), group["member"].to_numpy()
        assert pairwise_auc(scores, members) == pytest.approx(row["auc"].item(), abs=1e-12)
        assert auc(scores, members) == pytest.approx(row["auc"].item(), abs=1e-12)
        assert group["record"].is_unique

    assert run_grid(tiny_grid, workdirs) == 0
    assert "2 entirely from the cache" in capsys.readouterr().err
    pd.testing.assert_frame_equal(without_provenance(read_store(workdirs["results"])), without_provenance(first))


@pytest.fixture
def random_labels(registries):
    """A dataset whose labels are coin flips: a model can only fit its members by memorising them, so the
    LOSS attack must separate members from non-members far better than chance."""

    def load() -> Dataset:
        rng = np.random.default_rng(0)
        return Dataset(rng.normal(size=(300, 10)).astype(np.float32), rng.integers(0, 2, 300), "classification", 2)

    DATASETS.register("random_labels", description="coin-flip labels (test only)")(load)


def test_known_leakage_is_found(random_labels, tmp_path, workdirs):
    grid = write_grid(tmp_path, {
        **TINY_GRID, "datasets": ["random_labels"],
        "architectures": [{"name": "mlp", "params": {"width": 256, "depth": 2}}],
        "training": {"epochs": 150, "batch_size": 32, "lr": 0.003},
    })
    assert run_grid(grid, workdirs) == 0
    rows = read_store(workdirs["results"])
    assert rows["train_accuracy"].min() > 0.95 and rows["test_accuracy"].max() < 0.7
    assert rows["auc"].min() > 0.8
    assert rows["balanced_accuracy"].min() > 0.7


def test_process_pool_gives_the_same_store(tiny_grid, tmp_path, workdirs):
    assert run_grid(tiny_grid, workdirs) == 0
    pooled = {"cache": tmp_path / "cache2", "results": tmp_path / "results2"}
    assert run_grid(tiny_grid, pooled, "--workers", "2") == 0
    # torch may pick other kernels with one thread per worker: equal up to float rounding
    pd.testing.assert_frame_equal(without_provenance(read_store(pooled["results"])),
                                  without_provenance(read_store(workdirs["results"])), rtol=1e-4)


def test_a_failing_cell_loses_nothing(tiny_grid, tmp_path, workdirs, capsys):
    assert run_grid(tiny_grid, workdirs) == 0
    before = read_store(workdirs["results"])

    def broken(data):
        raise FloatingPointError("boom")

    grid = write_grid(tmp_path, {**TINY_GRID, "attacks": ["loss", "broken"],
                                 "architectures": ["logreg", {"name": "mlp", "params": {"width": 16, "depth": 1}},
                                                   {"name": "mlp", "params": {"width": 8, "depth": 1}}]})
    with ATTACKS.temporarily():
        ATTACKS.register("broken", description="always fails (test only)")(broken)
        assert run_grid(grid, workdirs) == 1
    assert "broken" not in ATTACKS  # the registration ended with the block
    err = capsys.readouterr().err
    assert "3 failed" in err and "FloatingPointError: boom" in err and "Traceback" not in err
    # the old rows are intact
    pd.testing.assert_frame_equal(without_provenance(read_store(workdirs["results"])), without_provenance(before))


def test_unwritable_results_folder_exits_2(tiny_grid, tmp_path, workdirs, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    workdirs["results"] = blocker / "results"
    assert run_grid(tiny_grid, workdirs) == 2
    assert "pass a writable folder with --results" in capsys.readouterr().err


def _store_cells(results: Path) -> int:
    try:
        with sqlite3.connect(store_path(results)) as db:
            return db.execute("SELECT COUNT(DISTINCT cell_key) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def _midway_grid(tmp_path: Path) -> Path:
    """Eight cells that take a few seconds in all: time to stop a run between them."""
    return write_grid(tmp_path, {**TINY_GRID, "seeds": [0, 1, 2, 3], "training": {"epochs": 25, "batch_size": 16}})


def _grid_command(grid: Path, folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench", "grid", "--grid", str(grid), "--quiet", "--no-report", "--cache-dir",
            str(folder / "cache"), "--results", str(folder / "results"), *extra]


def _stop_midway(command: list[str], results: Path, signum: int) -> subprocess.Popen:
    """Start ``command``, and send ``signum`` once two cells are in the store."""
    process = subprocess.Popen(command, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _store_cells(results) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    return process


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
N_MIDWAY_CELLS = 8


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The midway grid, and the store of one run of it that nothing stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    grid = _midway_grid(folder)
    subprocess.run(_grid_command(grid, folder), check=True, env=ONE_THREAD, capture_output=True)
    return grid, without_provenance(read_store(folder / "results"))


def test_sigkill_midway_then_rerun_gives_the_uninterrupted_store(tmp_path, uninterrupted):
    grid, clean = uninterrupted
    killed = _stop_midway(_grid_command(grid, tmp_path / "killed"), tmp_path / "killed" / "results", signal.SIGKILL)
    killed.wait()
    assert 2 <= _store_cells(tmp_path / "killed" / "results") < N_MIDWAY_CELLS, "the kill did not land midway"

    subprocess.run(_grid_command(grid, tmp_path / "killed"), check=True, env=ONE_THREAD, capture_output=True)
    pd.testing.assert_frame_equal(without_provenance(read_store(tmp_path / "killed" / "results")), clean)


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, "1"), (signal.SIGTERM, "2")])
def test_a_stop_signal_ends_the_run_after_its_stage_with_one_line_and_a_rerun_resumes(tmp_path, uninterrupted,
                                                                                      signum, workers):
    grid, clean = uninterrupted
    stopped = _stop_midway(_grid_command(grid, tmp_path / "stopped", "--workers", workers),
                           tmp_path / "stopped" / "results", signum)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err  # the announcement, then what was kept
    assert lines[1].startswith(f"stopped by {signal.Signals(signum).name} after the current stages:")
    assert "rerun the same command to resume" in lines[1]
    assert _store_cells(tmp_path / "stopped" / "results") < N_MIDWAY_CELLS, "the run ended before the signal"
    assert not list((tmp_path / "stopped" / "cache").rglob(".*.lock"))
    assert not list((tmp_path / "stopped" / "cache").rglob(".*.tmp"))

    subprocess.run(_grid_command(grid, tmp_path / "stopped"), check=True, env=ONE_THREAD, capture_output=True)
    pd.testing.assert_frame_equal(without_provenance(read_store(tmp_path / "stopped" / "results")), clean,
                                  rtol=1e-4)
    assert list(list_runs(tmp_path / "stopped" / "results")["status"]) == ["interrupted", "finished"]
