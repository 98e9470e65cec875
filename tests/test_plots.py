"""What the figures plot (the series, not the pixels) on the hand-made store, and that the files are written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.leaderboard import build_leaderboard, read_rows
from bench.metrics import auc, per_class_metrics, roc_curve
from bench.plots import (
    frontier_points,
    log_floor,
    pareto_staircase,
    per_class_series,
    plot_cells,
    plot_frontier,
    riskiest_records,
    roc_series,
    slug,
)
from bench.settings import filter_cells
from bench.store import read_samples
from tests.test_leaderboard import N_RECORDS, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plots") / "results"
    make_store(folder)
    return folder


@pytest.fixture(scope="module")
def board(store):
    return build_leaderboard(read_rows(store))


def _cell_samples(store, cell: str) -> pd.DataFrame:
    rows = read_rows(store)
    key = rows.loc[rows["cell"] == cell, "cell_key"].iloc[0]
    return read_samples(store, key)


def test_frontier_points_tpr(board):
    points = frontier_points(board[board["group"] == "toy / mlp"], "tpr")
    # the undefended point first, then each defense's curve in the order of its swept parameter
    assert list(points["defense"]) == ["none", "dp_sgd(noise_multiplier=0.5)", "dp_sgd(noise_multiplier=1.0)",
                                       "dp_sgd(noise_multiplier=2.0)", "l2(weight=0.1)"]
    assert list(points["undefended"]) == [True, False, False, False, False]
    assert list(points["dp"]) == [False, True, True, True, False]
    assert list(points["epsilon"].fillna(-1)) == [-1, 8.0, 2.0, 0.5, -1]
    assert list(points["strength"]) == ["", "noise_multiplier=0.5", "noise_multiplier=1", "noise_multiplier=2", ""]
    assert points["utility"].tolist() == pytest.approx([0.90, 0.88, 0.85, 0.70, 0.88])
    assert points["privacy"].tolist() == pytest.approx([0.20, 0.05, 0.01, 0.02, 0.06])
    assert list(points["pareto"]) == [True, True, True, False, False]
    assert (points["privacy_ci_low"] <= points["privacy"]).all()
    assert (points["privacy"] <= points["privacy_ci_high"]).all()


def test_frontier_points_auc_variant_uses_the_attack_with_the_highest_auc(board):
    points = frontier_points(board[board["group"] == "toy / mlp"], "auc").set_index("defense")
    assert points["privacy"].to_dict() == pytest.approx({
        "none": 0.70, "dp_sgd(noise_multiplier=0.5)": 0.57, "dp_sgd(noise_multiplier=1.0)": 0.52,
        "dp_sgd(noise_multiplier=2.0)": 0.51, "l2(weight=0.1)": 0.58,
    })
    # on AUC, the strongest noise is no longer dominated, l2 still is
    assert points["pareto"].to_dict() == {
        "none": True, "dp_sgd(noise_multiplier=0.5)": True, "dp_sgd(noise_multiplier=1.0)": True,
        "dp_sgd(noise_multiplier=2.0)": True, "l2(weight=0.1)": False,
    }


def test_pareto_staircase_vertices():
    xs, ys = pareto_staircase([0.9, 0.88, 0.85, 0.70, 0.88], [0.2, 0.05, 0.01, 0.02, 0.06])
    assert xs.tolist() == [0.85, 0.85, 0.88, 0.88, 0.9]
    assert ys.tolist() == [0.01, 0.05, 0.05, 0.2, 0.2]
    xs, ys = pareto_staircase([0.5], [0.1])
    assert xs.tolist() == [0.5] and ys.tolist() == [0.1]


def test_log_floor_draws_zeros_below_everything_positive():
    assert log_floor([0.0, 0.02, 0.05]) == pytest.approx(0.0005)  # below the 0.1 % random-guess line
    assert log_floor([0.0, 0.0004]) == pytest.approx(0.0002)
    assert log_floor([0.0, np.nan]) == pytest.approx(0.0005)


def test_roc_series_pooled_and_per_target(store):
    samples = _cell_samples(store, "toy / mlp / none / seed=0")
    pooled = roc_series(samples)
    assert [c["attack"] for c in pooled] == ["lira", "loss", "privacy_risk"]
    lira = samples[samples["attack_key"] == "lira"]
    fpr, tpr, _ = roc_curve(lira["score"].to_numpy(), lira["member"].to_numpy())
    assert np.array_equal(pooled[0]["fpr"], fpr) and np.array_equal(pooled[0]["tpr"], tpr)
    assert pooled[0]["n_nonmembers"] == N_RECORDS and pooled[0]["target"] is None  # 2 targets × 20
    per_target = roc_series(samples, per_target=True)
    assert [(c["attack"], c["target"]) for c in per_target][:2] == [("lira", 0), ("lira", 1)]
    one = lira[lira["target"] == 1]
    assert per_target[1]["auc"] == pytest.approx(auc(one["score"].to_numpy(), one["member"].to_numpy()))


def test_per_class_series_flags_the_minority(store):
    samples = _cell_samples(store, "toy / mlp / none / seed=0")
    lira = samples[samples["attack_key"] == "lira"]
    table = per_class_series(lira)
    assert table["label"].tolist() == [0.0, 1.0]
    assert table["n"].tolist() == [12, 28] and table["minority"].tolist() == [True, False]
    expected = np.mean([per_class_metrics(t["score"].to_numpy(), t["member"].to_numpy(), t["label"].to_numpy())[0]
                        ["auc"] for _, t in lira.groupby("target")])
    assert table["auc"].iloc[0] == pytest.approx(expected)
    assert (table["auc_ci_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_ci_high"]).all()


def test_riskiest_records_rank_by_mean_score_while_a_member():
    samples = pd.DataFrame({
        "target": [0, 1, 0, 1, 0, 1, 0, 1],
        "record": [5, 5, 7, 7, 9, 9, 3, 3],
        "label": [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        "member": [True, True, True, False, False, False, True, True],
        "score": [0.9, 0.8, 0.95, 0.2, 0.99, 0.99, 0.85, 0.85],
    })
    top = riskiest_records(samples, k=3)
    # record 9 is never a member (its high score is a false alarm); 5 and 3 tie at 0.85: the lower id first
    assert top["record"].tolist() == [7, 3, 5]
    assert top["mean_risk_as_member"].tolist() == pytest.approx([0.95, 0.85, 0.85])
    assert top["n_as_member"].tolist() == [1, 2, 2]
    assert top["mean_risk_as_nonmember"].iloc[0] == pytest.approx(0.2) and np.isnan(top["mean_risk_as_nonmember"][1])


def test_default_cells_are_the_first_seed_of_each_setting(store):
    rows = read_rows(store)
    assert sorted(plot_cells(rows, None)["cell"]) == sorted(
        c for c in rows["cell"].unique() if c.endswith("seed=0"))
    assert len(plot_cells(rows, "seed=")) == rows["cell_key"].nunique()  # a filter matching every cell


def test_slug():
    assert slug("toy / mlp(width=256) / none / seed=0") == "toy__mlp_width-256__none__seed-0"


def test_cli_writes_png_and_svg(store, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", "--results", str(store), "--out", str(out), "--cells", "toy / mlp / none / seed=0"]) == 0
    assert "wrote 9 files" in capsys.readouterr().out
    name = "toy__mlp__none__seed-0"
    for stem in ("frontier_toy__mlp", f"roc_{name}", f"per_class_{name}", f"risk_{name}"):
        png, svg = (out / f"{stem}.png").read_bytes(), (out / f"{stem}.svg").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        assert b"<svg" in svg[:1000] and len(svg) > 10_000
    risk = (out / f"risk_{name}.txt").read_text().splitlines()
    assert risk[0].startswith("# riskiest records") and "mean_risk_as_member" in risk[1] and len(risk) == 2 + 20
    # the same figure drawn again gives the same SVG (no timestamps, fixed ids): committed figures diff cleanly
    again = tmp_path / "again"
    again.mkdir()
    rows = filter_cells(read_rows(store), "toy / mlp / none / seed=0")
    plot_frontier(build_leaderboard(rows), again)
    assert (again / "frontier_toy__mlp.svg").read_bytes() == (out / "frontier_toy__mlp.svg").read_bytes()


def test_bad_filter_and_store_without_samples(store, tmp_path, capsys):
    assert main(["plot", "--results", str(store), "--out", str(tmp_path), "--cells", "resnet"]) == 2
    err = capsys.readouterr().err
    assert "--cells 'resnet' matches no cell" in err and "toy / logreg / none / seed=0" in err
    bare = tmp_path / "bare"
    make_store(bare, seeds=(0,), samples=False)
    assert main(["plot", "--results", str(bare), "--out", str(tmp_path / "p"), "--cells", "logreg"]) == 0
    assert "frontiers only" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["frontier_toy__logreg.png",
                                                                  "frontier_toy__logreg.svg"]


def test_plot_cells_applies_the_detail_filter():
    from bench.plots import plot_cells

    df = pd.DataFrame({"cell_key": ["a", "b", "c"], "cell": ["d / mlp / none / seed=0", "d / mlp / l2 / seed=0",
                                                             "d / mlp / none / seed=1"],
                       "setting": ["d / mlp / none", "d / mlp / l2", "d / mlp / none"], "seed": [0, 0, 1],
                       "options": ["", "", ""]})
    assert plot_cells(df, "*/ none /*")["cell_key"].tolist() == ["a", "c"]
    assert plot_cells(df, None)["cell_key"].tolist() == ["b", "a"]


def test_cells_that_differ_in_their_training_only_get_their_own_figures():
    from bench.plots import plot_cells, slug

    df = pd.DataFrame({"cell_key": ["a", "b", "c"], "cell": ["d / mlp / none / seed=0"] * 2 + ["d / mlp / l2 / seed=0"],
                       "setting": ["d / mlp / none", "d / mlp / none [engine=federated, sites=4]", "d / mlp / l2"],
                       "seed": [0, 0, 0], "options": ["", "engine=federated, sites=4", ""]})
    labels = plot_cells(df, None).set_index("cell_key")["cell"]
    assert labels["c"] == "d / mlp / l2 / seed=0" and labels["a"] == "d / mlp / none / seed=0"
    assert labels["b"] == "d / mlp / none / seed=0 [engine=federated, sites=4]"
    assert len({slug(label) for label in labels}) == 3
