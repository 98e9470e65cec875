"""The leaderboard on a hand-made store: strongest attack, Pareto set, order, CIs, ε columns, files and errors.

``make_store`` (also used by the plot and check tests) writes a store whose numbers are chosen by hand; each
attack's calibration metrics equal its target metrics, so the calibration rule chooses what the naive rule would
(the rules that differ are tested in ``tests/test_leaderboard_stats.py``):

group toy / mlp (two seeds × two targets per setting)

=========================  ========  =====================  =======  =========================================
setting                    accuracy  strongest attack (TPR)  ε        Pareto
=========================  ========  =====================  =======  =========================================
none                       0.90      lira 0.20 (loss 0.10)   –        yes
dp_sgd(noise=0.5)          0.88      0.05                    8        yes
dp_sgd(noise=1.0)          0.85      0.01                    2        yes
dp_sgd(noise=2.0)          0.70      0.02                    0.5      no: noise=1.0 is more accurate and leaks less
l2(weight=0.1)             0.88      0.06                    –        no: noise=0.5 is as accurate, leaks less
=========================  ========  =====================  =======  =========================================

group toy / logreg: one undefended setting (Pareto-optimal alone).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.leaderboard import (
    HOW_TO_READ,
    attack_summary,
    build_leaderboard,
    pareto_mask,
    read_rows,
    strongest,
    to_markdown,
)
from bench.metrics import bootstrap_ci
from bench.store import ResultsStore
from privkernel.hashing import stable_hash

N_RECORDS = 40  # audited records per cell (half members per target); class 0 is a 30 % minority
ATTACKS = ("lira", "loss", "privacy_risk")
TRAINING = {"training.epochs": 60, "training.batch_size": 32, "training.lr": 0.001, "training.optimizer": "adam"}
PROTOCOL = {"n_models": 8, "n_targets": 2, "test_fraction": 0.3, "calibration_models": 2}

#: (architecture, architecture params, defense, defense params, accuracy, {attack: (tpr, auc, bal.acc)}, ε)
SETTINGS = [
    ("mlp", {"width": 64}, "none", {}, 0.90,
     {"lira": (0.20, 0.65, 0.60), "loss": (0.10, 0.70, 0.62), "privacy_risk": (0.05, 0.60, 0.55)}, None),
    ("mlp", {"width": 64}, "dp_sgd", {"noise_multiplier": 0.5}, 0.88,
     {"lira": (0.05, 0.55, 0.52), "loss": (0.05, 0.57, 0.53), "privacy_risk": (0.01, 0.52, 0.51)}, 8.0),
    ("mlp", {"width": 64}, "dp_sgd", {"noise_multiplier": 1.0}, 0.85,
     {"lira": (0.01, 0.52, 0.51), "loss": (0.0, 0.51, 0.50), "privacy_risk": (0.0, 0.50, 0.50)}, 2.0),
    ("mlp", {"width": 64}, "dp_sgd", {"noise_multiplier": 2.0}, 0.70,
     {"lira": (0.02, 0.51, 0.50), "loss": (0.0, 0.50, 0.50), "privacy_risk": (0.0, 0.50, 0.50)}, 0.5),
    ("mlp", {"width": 64}, "l2", {"weight": 0.1}, 0.88,
     {"lira": (0.06, 0.56, 0.53), "loss": (0.02, 0.58, 0.54), "privacy_risk": (0.0, 0.52, 0.51)}, None),
    ("logreg", {}, "none", {}, 0.95,
     {"lira": (0.0, 0.51, 0.50), "loss": (0.0, 0.52, 0.51), "privacy_risk": (0.0, 0.50, 0.50)}, None),
]
# per-target offsets: the mean of the four target models of a setting is the number above
OFFSETS = {(0, 0): -0.01, (0, 1): 0.01, (1, 0): -0.005, (1, 1): 0.005}


def _label(name: str, params: dict) -> str:
    return f"{name}({','.join(f'{k}={v}' for k, v in params.items())})" if params else name


def cell_rows(architecture: str, arch_params: dict, defense: str, defense_params: dict, accuracy: float,
              attacks: dict, epsilon: float | None, seed: int, dataset: str = "toy",
              calibration: bool = True) -> list[dict]:
    """The store rows of one hand-made cell: one per attack × target, plus a union row and a skipped attack.
    With ``calibration`` the rows have calibration metrics equal to their target metrics; without, they are those of
    a store written before calibration metrics existed."""
    labels = {"label.dataset": dataset,
              "label.architecture": _label(architecture, {} if arch_params == {"width": 64} else arch_params),
              "label.defense": _label(defense, defense_params)}
    label = f"{labels['label.dataset']} / {labels['label.architecture']} / {labels['label.defense']} / seed={seed}"
    key = stable_hash(label)[:16]
    base = {"cell_key": key, "cell": label, **labels, "dataset": dataset, "architecture": architecture,
            "defense": defense, "seed": seed, "grid": "test", **TRAINING, **PROTOCOL,
            **{f"architecture.{k}": v for k, v in arch_params.items()},
            **{f"defense.{k}": v for k, v in defense_params.items()}}
    if epsilon is not None:
        base["fact.epsilon"] = epsilon
    rows = []
    for target in range(2):
        off = OFFSETS[(seed, target)]
        model = {"target": target, "train_accuracy": 1.0, "test_accuracy": accuracy + off}
        for attack, (tpr, auc, bal) in attacks.items():
            rows.append({**base, **model, "attack": attack, "attack_key": attack,
                         "tpr_at_fpr_0": max(tpr + off, 0.0) / 2, "tpr_at_fpr_0.1pct": max(tpr + off, 0.0),
                         "tpr_at_fpr_1pct": tpr + 0.1, "auc": auc + off, "balanced_accuracy": bal + off,
                         "epsilon_lower_bound": 4 * (auc - 0.5), "min_resolvable_fpr": 1 / 20,
                         "n_members": 20, "n_nonmembers": 20})
            if calibration:
                rows[-1].update({f"calibration_{k}": rows[-1][k] for k in
                                 ("tpr_at_fpr_0", "tpr_at_fpr_0.1pct", "tpr_at_fpr_1pct", "auc")})
        rows.append({**base, **model, "attack": "union", "attack_key": "union(lira+loss)@fpr=0",
                     "union_tpr": 0.99, "union_fpr": 0.0})
        rows.append({**base, "target": target, "attack": "nn", "attack_key": "nn",
                     "skipped": "needs probabilities"})
    return rows


def cell_samples(rows: list[dict], strength: float) -> pd.DataFrame:
    """Per-record samples of a cell: members score ``strength`` higher on average; class 0 is the minority."""
    rng = np.random.default_rng(len(rows) + int(100 * strength))
    out = []
    first = rows[0]
    labels = (np.arange(N_RECORDS) >= int(0.3 * N_RECORDS)).astype(float)
    for attack in ATTACKS:
        for target in range(2):
            member = np.zeros(N_RECORDS, dtype=bool)
            member[rng.permutation(N_RECORDS)[: N_RECORDS // 2]] = True
            score = rng.normal(size=N_RECORDS) + strength * member
            if attack == "privacy_risk":
                score = 1 / (1 + np.exp(-score))
            out.append(pd.DataFrame({"cell_key": first["cell_key"], "attack_key": attack, "target": target,
                                     "record": np.arange(N_RECORDS), "label": labels, "member": member,
                                     "score": score}))
    return pd.concat(out, ignore_index=True)


def make_store(folder, settings=SETTINGS, seeds=(0, 1), samples: bool = True, calibration: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(folder)
    for arch, arch_params, defense, defense_params, acc, attacks, eps in settings:
        for seed in seeds:
            rows = cell_rows(arch, arch_params, defense, defense_params, acc, attacks, eps, seed,
                             calibration=calibration)
            store.write_cell(rows, cell_samples(rows, 3 * attacks["lira"][1] - 1.5) if samples else None)


@pytest.fixture
def store(tmp_path):
    make_store(tmp_path / "results")
    return tmp_path / "results"


# --- the rules ----------------------------------------------------------------------------------------------------


def test_pareto_mask_rule():
    utility = np.array([0.9, 0.88, 0.85, 0.70, 0.88, 0.9, np.nan])
    leakage = np.array([0.2, 0.05, 0.01, 0.02, 0.06, 0.2, 0.0])
    # index 3 is beaten on both, index 4 ties on utility and is beaten strictly on leakage; the duplicate
    # (indices 0 and 5) beats neither copy; a NaN point is never optimal
    assert pareto_mask(utility, leakage).tolist() == [True, True, True, False, False, True, False]
    assert pareto_mask([0.5], [0.5]).tolist() == [True]


def test_strongest_attack_highest_tpr_ties_broken_by_auc():
    summary = pd.DataFrame({"attack": ["a", "b", "c", "d"], "tpr_at_fpr_0.1pct": [0.1, 0.3, 0.3, np.nan],
                            "auc": [0.9, 0.6, 0.7, 0.99]})
    assert strongest(summary)["attack"] == "c"
    assert strongest(summary, "auc", "tpr_at_fpr_0.1pct")["attack"] == "d"  # ranked by AUC, its TPR is unknown
    assert strongest(summary.iloc[3:]) is None


# --- the hand-made store ------------------------------------------------------------------------------------------


def test_leaderboard_of_hand_made_store(store):
    board = build_leaderboard(read_rows(store))
    assert list(board["group"]) == ["toy / logreg"] + ["toy / mlp"] * 5
    # order: Pareto-optimal first by accuracy (high first), then the dominated ones by accuracy
    assert list(board["defense"]) == [
        "none", "none", "dp_sgd(noise_multiplier=0.5)", "dp_sgd(noise_multiplier=1.0)", "l2(weight=0.1)",
        "dp_sgd(noise_multiplier=2.0)",
    ]
    assert list(board["pareto"]) == [True, True, True, True, False, False]
    mlp = board[board["group"] == "toy / mlp"].set_index("defense")
    # strongest attack: highest mean calibration TPR at 0.1 % FPR (a union's 0.99 and the skipped attack take no
    # part); in dp_sgd(0.5) lira and loss tie at 0.05 and loss wins on calibration AUC
    assert set(board["strongest_attack_selection"]) == {"calibration"}
    assert (board["naive_strongest_attack"] == board["strongest_attack"]).all()  # calibration = target here
    assert mlp["strongest_attack"].to_dict() == {
        "none": "lira", "dp_sgd(noise_multiplier=0.5)": "loss", "dp_sgd(noise_multiplier=1.0)": "lira",
        "dp_sgd(noise_multiplier=2.0)": "lira", "l2(weight=0.1)": "lira",
    }
    none = mlp.loc["none"]
    assert none["tpr_at_fpr_0.1pct"] == pytest.approx(0.20)
    assert none["tpr_at_fpr_0"] == pytest.approx(0.10) and none["tpr_at_fpr_1pct"] == pytest.approx(0.30)
    assert none["auc"] == pytest.approx(0.65) and none["balanced_accuracy"] == pytest.approx(0.60)
    assert none["strongest_auc_attack"] == "loss" and none["strongest_auc"] == pytest.approx(0.70)
    # test accuracy: mean and bootstrap CI over the four target models (not over the 4 × 3 attack rows)
    values = [0.90 + OFFSETS[k] for k in sorted(OFFSETS)]
    assert none["test_accuracy"] == pytest.approx(0.90) and none["target_models"] == 4 and none["seeds"] == 2
    low, high = bootstrap_ci(np.array(values))
    assert (none["test_accuracy_ci_low"], none["test_accuracy_ci_high"]) == pytest.approx((low, high))
    # ε: the accountant's for DP cells only, beside the largest mean empirical lower bound over attacks
    assert np.isnan(none["epsilon"]) and mlp.loc["dp_sgd(noise_multiplier=1.0)", "epsilon"] == 2.0
    assert none["epsilon_lower_bound"] == pytest.approx(4 * 0.20) and none["epsilon_lower_bound_attack"] == "loss"
    # the swept parameter of each defense
    assert mlp["strength"].to_dict() == {
        "none": "", "dp_sgd(noise_multiplier=0.5)": "noise_multiplier=0.5",
        "dp_sgd(noise_multiplier=1.0)": "noise_multiplier=1", "dp_sgd(noise_multiplier=2.0)": "noise_multiplier=2",
        "l2(weight=0.1)": "",
    }
    # the training and protocol parameters that differ from their defaults
    assert set(board["options"]) == {"batch_size=32, epochs=60, n_models=8, n_targets=2"}


def test_attack_summary_skips_unions_and_skipped_attacks(store):
    rows = read_rows(store)
    summary = attack_summary(rows[(rows["defense"] == "none") & (rows["architecture"] == "mlp")])
    assert list(summary["attack"]) == ["lira", "loss", "privacy_risk"]
    assert list(summary["n"]) == [4, 4, 4]


def test_markdown_marks_pareto_rows_and_explains_tpr(store):
    board = build_leaderboard(read_rows(store))
    text = to_markdown(board)
    assert HOW_TO_READ in text and "1/n" in text
    assert text.count("| ★ |") == 4
    assert "## toy · mlp" in text and "## toy · logreg" in text
    assert "0.200 [" in text and "†" in text  # 0.1 % < 1/20 non-members: TPR at 0.1 % FPR is TPR at FPR 0
    row = next(line for line in text.splitlines() if "dp_sgd(noise_multiplier=1.0)" in line)
    assert "| 2.00 |" in row  # accountant ε beside the empirical bound
    # TPR at 0 (always resolvable), at 0.1 % and at 1 % FPR (both below 1/20: marked †), then the rank interval
    none = next(line for line in text.splitlines() if line.startswith("| ★ | none | 0.900"))
    assert "| 0.100 [0.096, 0.104] | 0.200 [0.193, 0.208] † | 0.300 [0.300, 0.300] † |" in none
    assert "| 5 [5, 5] |" in none  # the most leaking of the five mlp settings in every resample
    assert "(naive)" not in text and "Diagnostic only" in text


def test_cli_writes_markdown_and_csv(store, tmp_path, capsys):
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(store), "--out", str(out)]) == 0
    assert "6 settings in 2 dataset × architecture groups, 4 Pareto-optimal" in capsys.readouterr().out
    csv = pd.read_csv(out / "leaderboard.csv")
    assert len(csv) == 6 and csv["pareto"].sum() == 4
    for column in ("test_accuracy", "test_accuracy_ci_low", "strongest_attack", "tpr_at_fpr_0.1pct_ci_high",
                   "auc_ci_low", "balanced_accuracy", "epsilon", "epsilon_lower_bound", "pareto",
                   "strongest_attack_selection", "tpr_at_fpr_0_ci_low", "tpr_at_fpr_1pct_ci_high",
                   "naive_strongest_attack", "naive_tpr_at_fpr_0.1pct", "rank", "rank_ci_low", "rank_ci_high",
                   "paired_targets", "leakage_p", "leakage_lower", "utility_p", "utility_lower"):
        assert column in csv.columns
    assert (out / "LEADERBOARD.md").read_text().startswith("# privbench leaderboard")
    # --out defaults to the results folder
    assert main(["leaderboard", "--results", str(store)]) == 0
    assert (store / "LEADERBOARD.md").is_file() and (store / "leaderboard.csv").is_file()


def test_test_r2_is_the_utility_where_present(tmp_path):
    rows = cell_rows("mlp", {"width": 64}, "none", {}, 0.9, dict(SETTINGS[0][5]), None, 0, dataset="reg")
    for row in rows:
        if "test_accuracy" in row:
            row["test_accuracy"] = None
            row["test_r2"] = 0.6
    ResultsStore(tmp_path).write_cell(rows)  # tmp_path exists
    board = build_leaderboard(read_rows(tmp_path))
    assert board["utility_metric"].item() == "test_r2" and board["utility"].item() == pytest.approx(0.6)
    assert "test R²" in to_markdown(board)


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path / "nowhere")]) == 2
    assert "no results store" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    store = ResultsStore(tmp_path / "empty")
    store.write_cell([{"cell_key": "k", "attack_key": "a", "target": 0}])
    import sqlite3

    db = sqlite3.connect(store.path)
    with db:
        db.execute("DELETE FROM results")
    db.close()
    assert main(["leaderboard", "--results", str(tmp_path / "empty")]) == 2
    assert "has no rows" in capsys.readouterr().err


def test_the_dagger_follows_the_strongest_attacks_own_audits(tmp_path):
    """A leaked-samples attacker is scored on fewer non-members than the outsider: its rows must not put † on the
    outsider's strongest attack, whose audits resolve 0.1 % FPR."""
    store = ResultsStore(tmp_path)
    for seed in (0, 1):
        cell = cell_rows(*SETTINGS[0], seed=seed)
        for row in cell:
            if row["attack"] not in ("union", "nn"):
                row.update(min_resolvable_fpr=1 / 2000, n_nonmembers=2000)
        leaked = {**cell[0], "attack": "leaked", "attack_key": "leaked", "knowledge": "leaked",
                  "min_resolvable_fpr": 1 / 600, "n_nonmembers": 600}
        store.write_cell([*cell, leaked])
    board = build_leaderboard(read_rows(tmp_path))
    assert board.loc[0, "strongest_attack"] == "lira"
    assert board.loc[0, "min_resolvable_fpr"] == pytest.approx(1 / 2000)
    table = [line for line in to_markdown(board).splitlines() if line.startswith("|")]
    assert table and not any("†" in line for line in table)
