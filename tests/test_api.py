"""The public Python API (``import privbench``) gives what the command line gives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import privbench
from bench.cli import main
from bench.grid import available_grids, resolve_grid_path
from bench.store import without_provenance
from privkernel.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent

TINY_GRID = {
    "name": "tiny",
    "datasets": [{"name": "synthetic_purchase", "params": {"n_records": 200, "n_features": 20, "n_classes": 2}}],
    "architectures": ["logreg"],
    "defenses": ["none"],
    "attacks": ["loss", "lira"],
    "seeds": [0],
    "protocol": {"n_models": 4, "n_targets": 2, "calibration_models": 1},
    "training": {"epochs": 3},
}


def readme_api_example() -> str:
    """The first ``python`` code block of the README's Python API section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_api_example_runs_from_any_folder(tmp_path):
    """The notebook-style example, run as written in an empty folder (the shipped smoke grid is package data)."""
    script = tmp_path / "example.py"
    script.write_text(readme_api_example() + textwrap.dedent("""
        assert len(df) > 0 and {"defense", "attack", "auc"} <= set(df.columns)
        assert set(df["run.grid"]) == {"smoke"}
        print("rows", len(df))
    """))
    env = {**os.environ, "PRIVBENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert re.search(r"rows \d+", done.stdout)
    assert not (tmp_path / "results").exists()  # results=None keeps the store in a temporary folder


def test_run_grid_returns_the_rows_that_the_cli_stores(tmp_path):
    rows = privbench.run_grid(TINY_GRID, cache_dir=tmp_path / "cache", results=tmp_path / "api")
    grid_file = tmp_path / "tiny.yaml"
    import yaml

    grid_file.write_text(yaml.safe_dump(TINY_GRID))
    assert main(["grid", "--grid", str(grid_file), "--quiet", "--no-report", "--cache-dir", str(tmp_path / "cache"),
                 "--results", str(tmp_path / "cli")]) == 0
    stored = privbench.read_store(tmp_path / "cli")
    assert len(rows) == 2 * 2  # 2 attacks × 2 targets
    pd.testing.assert_frame_equal(without_provenance(rows), without_provenance(stored))
    assert privbench.read_store(tmp_path / "api").equals(rows)
    samples = privbench.read_samples(tmp_path / "api")
    assert set(samples["cell_key"]) == set(rows["cell_key"]) and samples["member"].dtype == bool


def test_run_grid_returns_only_its_own_cells_from_a_shared_store(tmp_path):
    privbench.run_grid(TINY_GRID, cache_dir=tmp_path / "cache", results=tmp_path / "store")
    other = {**TINY_GRID, "name": "other", "seeds": [1]}
    rows = privbench.run_grid(other, cache_dir=tmp_path / "cache", results=tmp_path / "store")
    assert set(rows["run.grid"]) == {"other"} and set(rows["seed"]) == {1}
    assert len(privbench.read_store(tmp_path / "store")) == 2 * len(rows)


def test_leaderboard_of_rows_equals_leaderboard_of_the_store(tmp_path):
    rows = privbench.run_grid(TINY_GRID, cache_dir=tmp_path / "cache", results=tmp_path / "store")
    from_rows = privbench.leaderboard(rows)
    from_store = privbench.leaderboard(tmp_path / "store", out=tmp_path / "board")
    pd.testing.assert_frame_equal(from_rows, from_store)
    assert (tmp_path / "board" / "LEADERBOARD.md").is_file() and (tmp_path / "board" / "leaderboard.csv").is_file()
    assert from_rows.loc[0, "strongest_attack"] in {"loss", "lira"}


def _outputs(seed: int = 0, n: int = 200, refs: int = 4) -> dict[str, np.ndarray]:
    """Outputs in which members get more confident predictions: a leak the attacks must find."""
    rng = np.random.default_rng(seed)
    keep = rng.random((refs + 1, n)) < 0.5
    labels = rng.integers(0, 2, n)
    margin = np.where(keep, 2.0, 0.5) + rng.normal(0, 0.5, keep.shape)
    p_true = 1 / (1 + np.exp(-margin))
    probs = np.empty((refs + 1, n, 2))
    probs[np.arange(refs + 1)[:, None], np.arange(n), labels] = p_true
    probs[np.arange(refs + 1)[:, None], np.arange(n), 1 - labels] = 1 - p_true
    return {"target_outputs": probs[0], "target_membership": keep[0].astype(int), "labels": labels,
            "reference_outputs": probs[1:], "reference_membership": keep[1:].astype(int)}


def test_audit_from_arrays_equals_bench_audit_on_the_same_file(tmp_path):
    arrays = _outputs()
    table = privbench.audit(**arrays, attacks=["loss", "lira"])
    np.savez(tmp_path / "outputs.npz", **arrays)
    assert main(["audit", "--outputs", str(tmp_path / "outputs.npz"), "--attacks", "loss,lira", "--csv",
                 str(tmp_path / "audit.csv")]) == 0
    from_cli = pd.read_csv(tmp_path / "audit.csv")
    pd.testing.assert_frame_equal(table, from_cli, check_dtype=False)
    assert (table["auc"] > 0.75).all()  # the leak is found


def test_audit_names_a_misnamed_array():
    arrays = _outputs()
    arrays["target_output"] = arrays.pop("target_outputs")
    with pytest.raises(TypeError, match="target_output"):
        privbench.audit(**arrays)


def test_components_lists_every_family_and_refuses_an_unknown_one():
    every = privbench.components()
    assert {"datasets", "architectures", "defenses", "attacks", "engines"} <= set(every)
    attacks = {c["name"]: c for c in privbench.components("attacks")["attacks"]}
    assert "rmia" in attacks and {p["name"] for p in attacks["rmia"]["params"]} >= {"a", "gamma"}
    with pytest.raises(BenchError, match="did you mean 'attacks'"):
        privbench.components("atacks")


def test_shipped_grids_are_found_by_name_and_a_wrong_name_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: names are package data
    assert {"default", "smoke", "benchmark", "benchmark-gpu", "molecules", "threats"} <= set(available_grids())
    assert resolve_grid_path("smoke").read_text().startswith("#")
    assert resolve_grid_path("smoke.yaml") == resolve_grid_path("smoke")
    with pytest.raises(BenchError, match="shipped grid: benchmark, benchmark-gpu, default, molecules, smoke, threats"):
        resolve_grid_path("smok")
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    assert resolve_grid_path("mine.yaml") == Path("mine.yaml")  # a user's grid is a path


def test_python_m_privbench_is_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "privbench", "grid", "--grid", "smoke", "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 cells in grid 'smoke'" in done.stdout


def test_options_show_the_training_and_protocol_defaults():
    training = {p["name"]: p for p in privbench.options("training")["training"]}
    assert training["momentum"]["default"] == 0.9 and training["schedule"]["default"] == "constant"
    assert set(privbench.options()) == {"training", "protocol"}
    assert {p["name"] for p in privbench.options("protocol")["protocol"]} >= {"n_models", "n_targets"}
    with pytest.raises(BenchError, match="did you mean 'protocol'"):
        privbench.options("protocl")


def test_audit_refuses_no_attacks_and_too_many_calibration_models_naming_the_option(tmp_path, capsys):
    arrays = _outputs(refs=4)
    with pytest.raises(BenchError, match=r"calibration_models \(--calibration-models\) must be between 0 and 3, got 4"):
        privbench.audit(**arrays, calibration_models=4)
    with pytest.raises(BenchError, match="no attack named"):
        privbench.audit(**arrays, attacks=[])
    np.savez(tmp_path / "outputs.npz", **arrays)
    assert main(["audit", "--outputs", str(tmp_path / "outputs.npz"), "--attacks", ","]) == 2
    assert "no attack named (attacks=, or --attacks)" in capsys.readouterr().err
