"""``python -m bench check``: the tolerance rule, exit codes 0/1/2, and ``--update-baseline``."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.check import BASELINE_COLUMNS, compare
from bench.cli import main
from bench.store import ResultsStore
from tests.test_leaderboard import SETTINGS, cell_rows, make_store


@pytest.fixture
def store(tmp_path):
    make_store(tmp_path / "results", samples=False)
    return tmp_path / "results"


@pytest.fixture
def baseline(store, tmp_path, capsys):
    path = tmp_path / "baseline.csv"
    assert main(["check", "--results", str(store), "--baseline", str(path), "--update-baseline"]) == 0
    capsys.readouterr()
    return path


def check(store, baseline, *extra) -> int:
    return main(["check", "--results", str(store), "--baseline", str(baseline), *extra])


def rewrite_cell(store, index: int, seed: int = 0, accuracy_delta: float = 0.0, **attack_deltas: float) -> None:
    """Rewrite one hand-made cell with its accuracy and some attacks' TPR at 0.1 % FPR moved."""
    arch, arch_params, defense, defense_params, acc, attacks, eps = SETTINGS[index]
    moved = {a: (tpr + attack_deltas.get(a, 0.0), auc, bal) for a, (tpr, auc, bal) in attacks.items()}
    rows = cell_rows(arch, arch_params, defense, defense_params, acc + accuracy_delta, moved, eps, seed)
    ResultsStore(store).write_cell(rows)


def test_update_baseline_writes_ci_bounds_and_then_passes(store, baseline, capsys):
    table = pd.read_csv(baseline)
    assert tuple(table.columns) == BASELINE_COLUMNS
    # 6 settings × (utility + 4 attacks × 3 metrics); the skipped attack is kept, unmeasured (NaN, n = 0)
    assert len(table) == 6 * (1 + 4 * 3)
    utility = table[(table["defense"] == "none") & (table["architecture"] == "mlp") & (table["attack"] == "-")]
    assert utility["metric"].item() == "test_accuracy" and utility["better"].item() == "higher"
    assert utility["mean"].item() == pytest.approx(0.90) and utility["n"].item() == 4
    assert utility["ci_low"].item() < 0.90 < utility["ci_high"].item()
    skipped = table[table["attack"] == "nn"]
    assert skipped["mean"].isna().all() and (skipped["n"] == 0).all()
    assert check(store, baseline) == 0
    assert "no regression: 78 metrics of 6 settings" in capsys.readouterr().out


def test_injected_leakage_increase_fails(store, baseline, capsys):
    rewrite_cell(store, 0, lira=0.3)  # one of two seeds: the mean TPR of lira rises by 0.15
    assert check(store, baseline) == 1
    out = capsys.readouterr().out
    assert out.startswith("1 regression(s)")
    line = next(line for line in out.splitlines() if "tpr_at_fpr_0.1pct" in line)
    assert "toy / mlp / none" in line and "lira" in line and "regression" in line
    assert "0.3500" in line  # the new mean (0.20 + 0.15)


def test_change_within_tolerance_passes(store, baseline):
    rewrite_cell(store, 0, lira=0.03)  # mean 0.215: above the CI (0.2075) but within the 0.01 slack
    assert check(store, baseline) == 0
    assert check(store, baseline, "--slack", "0") == 1  # the same move fails without slack


def test_utility_drop_fails_and_improvements_pass(store, baseline, capsys):
    rewrite_cell(store, 1, accuracy_delta=-0.1)
    assert check(store, baseline) == 1
    out = capsys.readouterr().out
    assert "test_accuracy (higher is better)" in out and "dp_sgd(noise_multiplier=0.5)" in out
    rewrite_cell(store, 1)  # back
    rewrite_cell(store, 2, accuracy_delta=0.1, lira=-0.01, loss=-0.01, privacy_risk=-0.01)
    assert check(store, baseline) == 0
    assert "improved beyond it (consider --update-baseline)" in capsys.readouterr().out


def test_tolerance_rule():
    keys = {"dataset": "d", "architecture": "a", "defense": "none", "options": "", "attack": "x"}
    baseline = pd.DataFrame([
        {**keys, "metric": "auc", "better": "lower", "n": 4, "mean": 0.50, "ci_low": 0.45, "ci_high": 0.55},
        {**keys, "metric": "balanced_accuracy", "better": "lower", "n": 4, "mean": 0.50, "ci_low": 0.45,
         "ci_high": 0.55},
        {**keys, "metric": "tpr_at_fpr_0.1pct", "better": "lower", "n": 4, "mean": 0.1, "ci_low": 0.1,
         "ci_high": 0.1},
        {**keys, "attack": "-", "metric": "test_accuracy", "better": "higher", "n": 4, "mean": 0.9, "ci_low": 0.85,
         "ci_high": 0.95},
    ])
    current = baseline.assign(mean=[0.559, 0.561, float("nan"), 0.84])
    result = compare(baseline, current, slack=0.01).set_index("metric")
    assert result["limit"].to_dict() == pytest.approx(
        {"auc": 0.56, "balanced_accuracy": 0.56, "tpr_at_fpr_0.1pct": 0.11, "test_accuracy": 0.84})
    assert result["status"].to_dict() == {"auc": "ok", "balanced_accuracy": "regression",
                                          "tpr_at_fpr_0.1pct": "unmeasured", "test_accuracy": "ok"}
    lower = compare(baseline, baseline.assign(mean=[0.3, 0.5, 0.1, 0.99]), slack=0.01).set_index("metric")
    assert lower["status"].to_dict() == {"auc": "improvement", "balanced_accuracy": "ok", "tpr_at_fpr_0.1pct": "ok",
                                         "test_accuracy": "improvement"}


def test_bad_baselines_exit_2(store, baseline, tmp_path, capsys):
    table = pd.read_csv(baseline, keep_default_na=False)
    broken = tmp_path / "broken.csv"
    table.drop(columns="ci_high").to_csv(broken, index=False)
    assert check(store, broken) == 2
    assert "missing column(s) ci_high" in capsys.readouterr().err

    table[table["defense"] != "l2(weight=0.1)"].to_csv(broken, index=False)
    assert check(store, broken) == 2
    err = capsys.readouterr().err
    assert "cover different settings" in err and "only in the store: toy / mlp / l2(weight=0.1)" in err
    assert err.count("\n") == 1  # one line

    table[table["attack"] != "loss"].to_csv(broken, index=False)
    assert check(store, broken) == 2
    assert "cover different attacks/metrics" in capsys.readouterr().err

    table.assign(mean=["high"] + list(table["mean"].iloc[1:])).to_csv(broken, index=False)
    assert check(store, broken) == 2
    assert "non-number 'high'" in capsys.readouterr().err

    broken.write_text("")
    assert check(store, broken) == 2
    assert "is empty" in capsys.readouterr().err
    assert check(store, tmp_path / "missing.csv") == 2
    assert "--update-baseline" in capsys.readouterr().err


def test_store_changes_exit_2(store, baseline, tmp_path, capsys):
    new = ("mlp", {"width": 64}, "dropout", {"rate": 0.5}, 0.9, SETTINGS[0][5], None)
    ResultsStore(store).write_cell(cell_rows(*new, seed=0))
    assert check(store, baseline) == 2
    assert "only in the store: toy / mlp / dropout(rate=0.5)" in capsys.readouterr().err
    assert check(tmp_path / "no-store", baseline) == 2
    assert "no results store" in capsys.readouterr().err
    assert check(store, baseline, "--cells", "resnet") == 2
    assert "--cells 'resnet' matches no setting" in capsys.readouterr().err


def test_cells_filter_checks_and_updates_only_the_selected_settings(store, baseline, capsys):
    rewrite_cell(store, 0, lira=0.3)
    assert check(store, baseline, "--cells", "dp_sgd") == 0  # the regression is outside the filter
    assert "no regression: 39 metrics of 3 settings" in capsys.readouterr().out
    assert check(store, baseline, "--cells", "*/ none *") == 1  # a shell pattern over the whole setting label
    before = pd.read_csv(baseline, keep_default_na=False)
    assert check(store, baseline, "--cells", "logreg", "--update-baseline") == 0
    after = pd.read_csv(baseline, keep_default_na=False)
    pd.testing.assert_frame_equal(after, before)  # the logreg rows are unchanged, the other rows are kept
    assert check(store, baseline, "--cells", "mlp / none", "--update-baseline") == 0
    assert check(store, baseline) == 0
