"""pytest-benchmark group ``purchase_cell``: the Purchase-shaped cell of issue 17, cold, as a user runs it.

10,000 records × 600 binary features, 100 classes (``synthetic_purchase``); MLP 600-128-100 (tanh); SGD, batch 256,
30 epochs; 34 models; RMIA, LiRA and LOSS; one target. ``extra_info`` holds what the goals read: the seconds of
training (the ``models`` stage) and of scoring (``scores`` and ``metrics``) from the store's ``stage_times``, their
ratio (goal: at most 0.5), the scoring of one more target against the training (goal: at most 10 %; measured by a
second run with ``n_targets: 2`` on the warm cache: the scores it computes are the new target's, and half of its
metrics, whose key holds ``n_targets``), and the run's peak resident memory (goal: at most 1 GB). Run with
``tox -e bench``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from bench.store import list_runs, read_stage_times

CELL = {
    "name": "purchase_cell",
    "datasets": [{"name": "synthetic_purchase", "params": {"n_records": 10_000}}],
    "architectures": [{"name": "mlp", "params": {"depth": 1, "width": 128, "activation": "tanh"}}],
    "defenses": ["none"],
    "attacks": ["rmia", "lira", "loss"],
    "seeds": [0],
    "protocol": {"n_models": 34, "n_targets": 1, "calibration_models": 2},
    "training": {"epochs": 30, "batch_size": 256, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
}

#: Runs the grid in a child and prints the child's peak RSS (kB): the benchmark process's own memory stays out.
PEAK_RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _run(grid: dict, folder, tmp_path) -> float:
    path = tmp_path / f"{grid['name']}-{grid['protocol']['n_targets']}.yaml"
    path.write_text(yaml.safe_dump(grid))
    command = [sys.executable, "-m", "bench", "grid", "--grid", str(path), "--quiet", "--cache-dir",
               str(folder / "cache"), "--results", str(folder / "results")]
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], check=True, capture_output=True, text=True)
    return int(done.stdout.strip()) / 1024


def _seconds(results, run_id: str, *stages: str) -> float:
    times = read_stage_times(results, run_id)
    return float(times.loc[times["stage"].isin(stages), "seconds"].sum())


@pytest.mark.benchmark(group="purchase_cell")
def test_purchase_cell_cold(benchmark, tmp_path):
    folder = tmp_path / "run"
    peak = {}

    def setup():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        return (), {}

    benchmark.pedantic(lambda: peak.setdefault("mb", _run(CELL, folder, tmp_path)), setup=setup, rounds=1,
                       iterations=1)
    results = folder / "results"
    (first,) = list_runs(results)["id"]
    training, scoring = _seconds(results, first, "models"), _seconds(results, first, "scores", "metrics")
    _run({**CELL, "protocol": {**CELL["protocol"], "n_targets": 2}}, folder, tmp_path)
    second = list_runs(results)["id"].iloc[-1]
    times = read_stage_times(results, second)
    assert int(times.loc[times["stage"] == "models", "computed"].sum()) == 0  # the models came from the cache
    # the scores computed are the new target's (target 0's are read); the metrics are both targets' (their key
    # holds n_targets), so half of them are the new target's
    extra_target = _seconds(results, second, "scores") + _seconds(results, second, "metrics") / 2
    benchmark.extra_info.update({
        "training_s": training, "scoring_s": scoring, "scoring_over_training": scoring / training,
        "extra_target_s": extra_target, "extra_target_over_training": extra_target / training,
        "peak_rss_mb": peak["mb"],
    })
