"""pytest-benchmark groups ``mpnn_cells`` and ``mpnn_b3db``: the molecule study's MPNN cells at the sizes of issue 20.

``mpnn_cells`` runs the three MPNN cells of the shipped ``molecules`` grid (no defense, DP-SGD at ε = 8, dropout;
its protocol and training) cold on a seeded subset of ``n`` B3DB molecules written as a CSV, in one child process;
``extra_info`` holds the seconds per stage from the store's ``stage_times`` and the child's peak RSS (goals at
2,000 molecules: the three cells together at most 5 minutes on a 2-core CPU, peak RSS at most 3 GB).
``mpnn_b3db`` runs the DP-SGD cell on all 7,807 classified B3DB molecules (goal: it completes on a 24 GB machine).
Run with ``tox -e bench``; they take minutes.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bench.grid import read_grid, resolve_grid_path
from bench.store import list_runs, read_stage_times
from targets.packaged import _b3db_file, read_b3db
from tests.benchmarks.test_purchase_cell import _run, _seconds

DEFENSES = {"none": "none", "dpsgd": {"name": "dpsgd", "params": {"epsilon": 8.0}},
            "dropout": {"name": "dropout", "params": {"rate": 0.5}}}


def b3db_subset(path, n: int, seed: int = 0) -> None:
    """``n`` B3DB classification molecules (a seeded permutation's first ``n``) as a CSV of smiles and label."""
    smiles, labels, _ = read_b3db(_b3db_file({"task": "classification"}), "classification")
    order = np.random.default_rng(seed).permutation(len(smiles))[:n]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["smiles", "label"])
        writer.writerows([smiles[i], int(labels[i])] for i in order)


def mpnn_grid(dataset: dict, defenses: list[str]) -> dict:
    """The molecule study's grid with its MPNN cells only, on ``dataset``."""
    study = read_grid(resolve_grid_path("molecules"))
    return {
        "name": f"mpnn_cells-{'-'.join(defenses)}",
        "datasets": [dataset],
        "architectures": [a for a in study["architectures"] if a["name"] == "mpnn"],
        "defenses": [DEFENSES[d] for d in defenses],
        "attacks": study["attacks"], "unions": study["unions"], "seeds": study["seeds"],
        "protocol": study["protocol"], "training": study["training"],
    }


def _measure(benchmark, tmp_path, n: int, defenses: list[str]) -> None:
    if n < 7807:
        data = tmp_path / f"b3db_{n}.csv"
        b3db_subset(data, n)
        dataset = {"name": "csv", "params": {"path": str(data), "task": "classification", "smiles_col": "smiles",
                                             "label_col": "label", "features": "graph", "drop_invalid": True}}
    else:  # all of B3DB, as the packaged dataset (which drops the 2 SMILES RDKit rejects)
        dataset = {"name": "b3db", "params": {"task": "classification", "features": "graph"}}
    grid = mpnn_grid(dataset, defenses)
    folder, peak = tmp_path / "run", {}
    benchmark.pedantic(lambda: peak.setdefault("mb", _run(grid, folder, tmp_path)), rounds=1, iterations=1)
    results = folder / "results"
    (run,) = list_runs(results)["id"]
    times = read_stage_times(results, run)
    benchmark.extra_info.update({
        "molecules": n, "peak_rss_mb": peak["mb"],
        **{f"{stage}_s": _seconds(results, run, stage) for stage in sorted(set(times["stage"]))},
    })


@pytest.mark.benchmark(group="mpnn_cells")
@pytest.mark.parametrize("n", [1000, 2000, 4000])
def test_the_study_mpnn_cells_cold(benchmark, tmp_path, n):
    _measure(benchmark, tmp_path, n, ["none", "dpsgd", "dropout"])


@pytest.mark.benchmark(group="mpnn_b3db")
def test_a_dpsgd_mpnn_cell_on_all_of_b3db(benchmark, tmp_path):
    _measure(benchmark, tmp_path, 7807, ["dpsgd"])
