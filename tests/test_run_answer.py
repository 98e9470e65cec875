"""A grid run ends with its answer: the compact table, LEADERBOARD.md and the figures regenerated (unless
--no-report), and each distinct warning of the cells printed once after the run, not over its progress bar."""

from __future__ import annotations

import warnings

import numpy as np

from bench.cli import main
from bench.leaderboard import build_leaderboard, compact_summary, read_rows
from privkernel.registry import ATTACKS
from tests.conftest import TINY_GRID, write_grid


def run(grid, tmp_path, *extra: str) -> int:
    return main(["grid", "--grid", str(grid), "--cache-dir", str(tmp_path / "cache"), "--results",
                 str(tmp_path / "results"), "--quiet", *extra])


def test_a_run_ends_with_the_compact_table_and_regenerates_the_leaderboard_and_figures(tmp_path, capsys):
    grid = write_grid(tmp_path, TINY_GRID)
    assert run(grid, tmp_path, "--no-report") == 0
    assert not (tmp_path / "results" / "LEADERBOARD.md").exists()
    assert "TPR @ 0.1 % FPR" not in capsys.readouterr().out
    assert run(grid, tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    board = build_leaderboard(read_rows(tmp_path / "results", grid="tiny"))
    table = compact_summary(board)
    assert out[:len(table)] == table and len(table) <= 25
    assert {"breast_cancer · logreg", "breast_cancer · mlp(depth=1,width=16)"} <= {line.split(" (")[0]
                                                                                 for line in table}
    for _, row in board.iterrows():  # every setting's strongest attack and TPR are in the table
        assert any(row["strongest_attack"] in line and f"{row['tpr_at_fpr_0.1pct']:.3f}" in line for line in table)
    assert "full leaderboard:" in out[-1] and (tmp_path / "results" / "LEADERBOARD.md").is_file()
    assert (tmp_path / "results" / "leaderboard.csv").is_file()
    assert any(p.suffix == ".svg" for p in (tmp_path / "results" / "plots").iterdir())


def test_the_table_stays_short_for_many_settings():
    board = build_leaderboard_of(n_settings=40)
    table = compact_summary(board, max_lines=25)
    assert len(table) <= 25 and "... and" in "\n".join(table)


def build_leaderboard_of(n_settings: int):
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({
        "group": "d / a", "dataset": "d", "architecture": "a", "defense": [f"l2(weight_decay={i})"
                                                                           for i in range(n_settings)],
        "options": "", "pareto": False, "utility_metric": "test_accuracy",
        "test_accuracy": rng.uniform(0.5, 1, n_settings), "strongest_attack": "lira", "min_resolvable_fpr": 0.0001,
        "tpr_at_fpr_0.1pct": rng.uniform(0, 0.1, n_settings), "auc": rng.uniform(0.5, 0.7, n_settings),
    })
    rows["tpr_at_fpr_0.1pct_ci_low"], rows["tpr_at_fpr_0.1pct_ci_high"] = rows["tpr_at_fpr_0.1pct"] - 0.01, 0.2
    return rows


def test_a_warning_of_the_cells_is_printed_once_after_the_run(tmp_path, capsys):
    def noisy(data):
        warnings.warn("Optimal order is the largest alpha. Please consider expanding the range of alphas",
                      UserWarning, stacklevel=1)
        return -np.zeros(len(data.labels))

    grid = write_grid(tmp_path, {**TINY_GRID, "attacks": ["loss", "noisy"]})
    with ATTACKS.temporarily():
        ATTACKS.register("noisy", description="warns (test only)")(noisy)
        assert run(grid, tmp_path, "--no-report") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "Optimal order" in line]
    assert len(lines) == 1 and lines[0].startswith("warning, in 2 cells: UserWarning (")
    assert "valid upper bound" in lines[0]  # what the known warning means


def test_the_lines_are_shared_between_groups_in_turn():
    from bench.leaderboard import _rows_per_group

    # six groups as in the default grid: every group shows one setting, then the cut ones one more each
    assert _rows_per_group([1, 6, 1, 20, 1, 3], 12) == [1, 2, 1, 2, 1, 2]
    assert _rows_per_group([3], 22) == [3] and _rows_per_group([40], 22) == [21]
