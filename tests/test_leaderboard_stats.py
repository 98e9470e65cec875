"""The leaderboard's statistics with known answers: the strongest attack chosen on calibration audits (and the
naive diagnostic), rank intervals, paired tests against ``none``, the fallback of old stores, and the calibration
metrics of :func:`bench.audit.target_metrics` against a slow reference."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from bench.audit import target_metrics
from bench.leaderboard import (
    CALIBRATED,
    NAIVE,
    build_leaderboard,
    choose_strongest,
    min_pairs,
    paired_less,
    rank_intervals,
    read_rows,
    to_markdown,
)
from bench.settings import label_settings
from bench.store import ResultsStore
from privkernel.hashing import stable_hash
from tests.test_leaderboard import SETTINGS, cell_rows, make_store

# --- synthetic rows -----------------------------------------------------------------------------------------------


def row(defense: str, seed: int, target: int, attack: str, tpr: float, auc: float = 0.6,
        calibration: tuple[float, float] | None = None, accuracy: float = 0.9, access: str = "black-box",
        epochs: int | None = None) -> dict:
    """One store row: ``attack`` on target ``(seed, target)`` of a toy / mlp cell of ``defense``, with its target
    TPR at 0.1 % FPR and AUC and, unless None, its calibration ``(TPR at 0.1 % FPR, AUC)``."""
    options = {} if epochs is None else {"training.epochs": epochs}
    label = f"toy / mlp / {defense} / seed={seed}" + (f" / epochs={epochs}" if epochs else "")
    out = {"cell_key": stable_hash(label)[:16], "cell": label, "label.dataset": "toy", "label.architecture": "mlp",
           "label.defense": defense, "dataset": "toy", "architecture": "mlp", "defense": defense, "seed": seed,
           **options, "target": target, "attack": attack, "attack_key": attack, "access": access,
           "knowledge": "references", "test_accuracy": accuracy, "tpr_at_fpr_0": tpr / 2, "tpr_at_fpr_0.1pct": tpr,
           "tpr_at_fpr_1pct": min(tpr + 0.1, 1.0), "auc": auc, "balanced_accuracy": auc - 0.05,
           "epsilon_lower_bound": 0.0, "min_resolvable_fpr": 1 / 200}
    if calibration is not None:
        out["calibration_tpr_at_fpr_0.1pct"], out["calibration_auc"] = calibration
    return out


def board_of(rows: list[dict]) -> pd.DataFrame:
    return build_leaderboard(label_settings(pd.DataFrame(rows)))


TARGETS = [(seed, target) for seed in range(4) for target in range(2)]  # 8 target models, keyed (seed, target)


# --- the strongest attack: chosen on calibration audits, scored on targets ------------------------------------------


def test_the_strongest_attack_is_chosen_on_calibration_and_scored_on_targets():
    rows = []
    for seed, target in TARGETS[:4]:
        # A looks strongest on the targets, B on the calibration audits: B is chosen and reported with its target
        # TPR; the naive maximum (A) is kept as a diagnostic only
        rows.append(row("none", seed, target, "A", 0.30, auc=0.80, calibration=(0.10, 0.60)))
        rows.append(row("none", seed, target, "B", 0.20, auc=0.70, calibration=(0.15, 0.65)))
        # the white-box class is chosen by the same rule
        rows.append(row("none", seed, target, "wb_a", 0.50, calibration=(0.10, 0.6), access="white-box"))
        rows.append(row("none", seed, target, "wb_b", 0.40, calibration=(0.20, 0.6), access="white-box"))
    best = board_of(rows).iloc[0]
    assert best["strongest_attack"] == "B" and best["strongest_attack_selection"] == CALIBRATED
    assert best["tpr_at_fpr_0.1pct"] == pytest.approx(0.20) and best["auc"] == pytest.approx(0.70)
    assert best["tpr_at_fpr_0"] == pytest.approx(0.10) and best["tpr_at_fpr_1pct"] == pytest.approx(0.30)
    assert best["naive_strongest_attack"] == "A" and best["naive_tpr_at_fpr_0.1pct"] == pytest.approx(0.30)
    # the strongest attack by AUC is chosen on the calibration AUC too
    assert best["strongest_auc_attack"] == "B" and best["strongest_auc"] == pytest.approx(0.70)
    assert best["white-box: attack"] == "wb_b" and best["white-box: selection"] == CALIBRATED
    assert best["white-box: tpr_at_fpr_0.1pct"] == pytest.approx(0.40)
    text = to_markdown(board_of(rows))
    assert "| B | 0.100 [" in text and "(naive)" not in text
    diagnostic = text[text.index("Diagnostic only"):]
    assert "winner's curse" in diagnostic and "| none | A | 0.300 | 0.200 |" in diagnostic


def test_calibration_ties_are_broken_by_calibration_auc_then_name():
    summary = pd.DataFrame({
        "attack": ["a", "b", "c"], "tpr_at_fpr_0.1pct": [0.9, 0.1, 0.1], "auc": [0.9, 0.9, 0.5],
        "calibration_tpr_at_fpr_0.1pct": [0.1, 0.3, 0.3], "calibration_auc": [0.9, 0.6, 0.7],
    })
    best, rule = choose_strongest(summary)
    assert best["attack"] == "c" and rule == CALIBRATED  # target AUC would pick b
    assert choose_strongest(summary.assign(calibration_auc=0.7))[0]["attack"] == "b"  # full tie: by name
    # one attack without calibration metrics: the attacks cannot be compared on them, the naive rule chooses
    best, rule = choose_strongest(summary.assign(**{"calibration_tpr_at_fpr_0.1pct": [0.1, np.nan, 0.3]}))
    assert best["attack"] == "a" and rule == NAIVE


def test_an_old_store_without_calibration_metrics_falls_back_to_the_naive_rule(tmp_path):
    make_store(tmp_path, samples=False, calibration=False)
    board = build_leaderboard(read_rows(tmp_path))
    assert set(board["strongest_attack_selection"]) == {NAIVE}
    mlp = board[board["group"] == "toy / mlp"].set_index("defense")
    assert mlp["strongest_attack"].to_dict() == {
        "none": "lira", "dp_sgd(noise_multiplier=0.5)": "loss", "dp_sgd(noise_multiplier=1.0)": "lira",
        "dp_sgd(noise_multiplier=2.0)": "lira", "l2(weight=0.1)": "lira",
    }
    text = to_markdown(board)
    assert "| lira (naive) |" in text and "the store has no calibration metrics" in text
    assert "Diagnostic only" not in text  # the naive maximum is the table itself there
    # a setting with calibration metrics on some of its cells is chosen on the rows that have them
    store = ResultsStore(tmp_path)
    for seed in (0, 1):
        store.write_cell(cell_rows(*SETTINGS[0], seed=seed))  # none / mlp
    store.write_cell(cell_rows(*SETTINGS[1], seed=0))  # dp_sgd(0.5) / mlp, seed 1 left without
    mlp = build_leaderboard(read_rows(tmp_path)).query("group == 'toy / mlp'").set_index("defense")
    assert mlp.loc["none", "strongest_attack_selection"] == CALIBRATED
    assert mlp.loc["dp_sgd(noise_multiplier=0.5)", "strongest_attack_selection"] == CALIBRATED
    assert mlp.loc["dp_sgd(noise_multiplier=1.0)", "strongest_attack_selection"] == NAIVE


# --- rank intervals -----------------------------------------------------------------------------------------------


def test_rank_intervals_overlap_for_identical_settings_and_separate_far_apart_ones():
    values = np.array([0.10, 0.12, 0.15, 0.20, 0.22, 0.30, 0.31, 0.35])
    rank, low, high = rank_intervals([values, values.copy()])
    assert rank.tolist() == [1.5, 1.5] and low.tolist() == [1, 1] and high.tolist() == [2, 2]
    rank, low, high = rank_intervals([values + 0.5, values, values + 2.0])
    assert rank.tolist() == [2, 1, 3] and low.tolist() == [2, 1, 3] and high.tolist() == [2, 1, 3]
    # deterministic given the seed; a setting without values takes no part
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(
        rank_intervals([values, values * 1.1, np.array([])], seed=3),
        rank_intervals([values, values * 1.1, np.array([])], seed=3), strict=True))
    rank, low, high = rank_intervals([values, np.array([np.nan])])
    assert rank[0] == low[0] == high[0] == 1 and np.isnan([rank[1], low[1], high[1]]).all()


def test_the_board_ranks_by_leakage_within_the_group_whatever_the_row_order():
    rows = []
    for k, (seed, target) in enumerate(TARGETS):
        for defense, tpr in (("none", 0.30), ("l2", 0.05), ("relaxloss", 0.05)):
            rows.append(row(defense, seed, target, "lira", tpr + 0.001 * k, calibration=(0.1, 0.6)))
    board = board_of(rows).set_index("defense")
    # l2 and relaxloss leak the same on every target: tied at 1.5, their intervals overlap; none is last
    assert board.loc["none", ["rank", "rank_ci_low", "rank_ci_high"]].tolist() == [3, 3, 3]
    for defense in ("l2", "relaxloss"):
        assert board.loc[defense, ["rank", "rank_ci_low", "rank_ci_high"]].tolist() == [1.5, 1, 2]
    shuffled = board_of([rows[i] for i in np.random.default_rng(0).permutation(len(rows))]).set_index("defense")
    pd.testing.assert_frame_equal(shuffled.loc[board.index, ["rank", "rank_ci_low", "rank_ci_high"]],
                                  board[["rank", "rank_ci_low", "rank_ci_high"]])
    assert "| 3 [3, 3] |" in to_markdown(board_of(rows))


# --- paired tests against no defense --------------------------------------------------------------------------------


def test_paired_sign_flip_test_is_exact():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert paired_less(x - 0.01 * np.arange(1, 6), x) == 1 / 32  # every difference negative: 2^-n
    assert paired_less(x[:4] - 0.1, x[:4]) == 1 / 16
    assert paired_less(x + 0.1, x) == 1.0 and paired_less(x, x) == 1.0  # nothing lower; all ties count
    assert np.isnan(paired_less(x[:1], x[:1] + 1))  # fewer than 2 pairs
    assert paired_less(np.full(16, -1.0), np.zeros(16)) == 2.0 ** -16  # still exact at 16 pairs
    # a mixed case against brute-force enumeration of the 2^n sign flips
    d = np.array([-0.3, -0.1, 0.05, -0.2, 0.15, -0.25, -0.05])
    observed = d.mean()
    flips = [np.mean(d * np.array(signs)) for signs in itertools.product((1, -1), repeat=len(d))]
    expected = np.mean([f <= observed + 1e-12 for f in flips])
    assert paired_less(d, np.zeros_like(d)) == pytest.approx(expected, abs=1e-12)
    assert min_pairs() == 5  # 2^-4 = 0.0625 > 0.05 >= 2^-5


def paired_rows(seeds_none=range(4), seeds_defense=range(4)) -> list[dict]:
    """none and four defenses on the targets ``(seed, target)``; none's strongest attack is ``loss``, the
    defenses' ``lira`` (by calibration)."""
    rows = []
    for k, (seed, target) in enumerate(TARGETS):
        base, accuracy = 0.20 + 0.01 * k, 0.90 + 0.001 * k
        if seed in seeds_none:
            rows.append(row("none", seed, target, "loss", base, calibration=(0.3, 0.7), accuracy=accuracy))
            # none's lira is weaker than every defense's lira: comparing with it would find no defense lower
            rows.append(row("none", seed, target, "lira", 0.01, calibration=(0.1, 0.6), accuracy=accuracy))
        if seed not in seeds_defense:
            continue
        for defense, tpr, acc in (("l2", base - 0.05 - 0.001 * k, accuracy - 0.01),  # leaks less, less accurate
                                  ("relaxloss", base + 0.02, accuracy)):  # leaks more, as accurate
            rows.append(row(defense, seed, target, "lira", tpr, calibration=(0.3, 0.7), accuracy=acc))
            rows.append(row(defense, seed, target, "loss", 0.0, calibration=(0.1, 0.6), accuracy=acc))
        # other options than none's: no undefended setting shares its membership matrices
        rows.append(row("dropout", seed, target, "lira", 0.0, calibration=(0.3, 0.7), accuracy=0.5, epochs=60))
    return rows


def test_defenses_are_tested_against_none_on_the_same_targets():
    board = board_of(paired_rows()).set_index("setting")
    l2, relax, none = board.loc["toy / mlp / l2"], board.loc["toy / mlp / relaxloss"], board.loc["toy / mlp / none"]
    assert (none["strongest_attack"], l2["strongest_attack"]) == ("loss", "lira")
    # lower on all 8 paired targets: the smallest p of 8 pairs, 2^-8
    assert l2["paired_targets"] == 8
    assert l2["leakage_p"] == 1 / 256 and l2["leakage_lower"]
    assert l2["utility_p"] == 1 / 256 and l2["utility_lower"]
    # higher leakage on every target, equal utility (all differences 0): nothing lower
    assert relax["leakage_p"] == 1.0 and not relax["leakage_lower"]
    assert relax["utility_p"] == 1.0 and not relax["utility_lower"]
    # none itself and a setting without an undefended one of its options: no test
    for other in (none, board.loc["toy / mlp / dropout [epochs=60]"]):
        assert other["paired_targets"] == 0 and np.isnan(other["leakage_p"]) and np.isnan(other["utility_p"])
        assert not other["leakage_lower"] and not other["utility_lower"]
    text = to_markdown(board_of(paired_rows()))
    line = next(x for x in text.splitlines() if "| l2 |" in x)
    assert " ▽ |" in line and " ↓ |" in line
    relax_line = next(x for x in text.splitlines() if "| relaxloss |" in x)
    assert "▽" not in relax_line and "↓" not in relax_line
    assert "Too few paired targets" not in text


def test_four_pairs_can_never_be_significant():
    # the defense has 8 target models, none only the 4 of seeds 0 and 1: pairs are matched by (seed, target)
    board = board_of(paired_rows(seeds_none=(0, 1))).set_index("setting")
    l2 = board.loc["toy / mlp / l2"]
    assert l2["paired_targets"] == 4 and l2["target_models"] == 8
    assert l2["leakage_p"] == 1 / 16 and not l2["leakage_lower"]
    assert l2["utility_p"] == 1 / 16 and not l2["utility_lower"]
    text = to_markdown(board_of(paired_rows(seeds_none=(0, 1))))
    assert "Too few paired targets" in text and "2^-4 = 0.0625 > 0.05" in text
    assert "↓ |" not in text and "▽ |" not in text


# --- calibration metrics of target_metrics ------------------------------------------------------------------------


def slow_metrics(scores: np.ndarray, members: np.ndarray) -> dict[str, float]:
    """TPR at each FPR by trying every threshold, AUC by comparing every member with every non-member."""
    pos, neg = scores[members], scores[~members]
    thresholds = [*sorted(set(scores.tolist())), np.inf]
    rates = [((pos >= t).mean(), (neg >= t).mean()) for t in thresholds]
    out = {name: max(tpr for tpr, fpr in rates if fpr <= level + 1e-12)
           for name, level in (("tpr_at_fpr_0", 0.0), ("tpr_at_fpr_0.1pct", 0.001), ("tpr_at_fpr_1pct", 0.01))}
    out["auc"] = float(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]))
    return out


@pytest.mark.parametrize("leaked", [False, True])
def test_calibration_metrics_are_the_mean_of_each_calibration_audit(leaked):
    rng = np.random.default_rng(7)
    n_models, n = 5, 300
    keep = rng.random((n_models, n)) < 0.5
    calibration = [1, 3, 4]
    # rounded scores: ties between members and non-members, and audits of different strength
    scores = {"target": np.round(rng.normal(size=n) + keep[0], 1),
              "calibration": np.round(rng.normal(size=(3, n)) + keep[calibration] * np.array([[0.5], [1.0], [3.0]]),
                                      1)}
    evaluated = np.ones((3, n), dtype=bool)
    if leaked:
        evaluated = rng.random((3, n)) < 0.7
        scores.update(evaluated=rng.random(n) < 0.7, calibration_evaluated=evaluated)
    measured = target_metrics(scores, keep, 0, calibration)
    audits = [slow_metrics(s[e], m[e]) for s, m, e in zip(scores["calibration"], keep[calibration], evaluated,
                                                           strict=True)]
    for name in ("tpr_at_fpr_0", "tpr_at_fpr_0.1pct", "tpr_at_fpr_1pct", "auc"):
        assert measured[f"calibration_{name}"] == pytest.approx(np.mean([a[name] for a in audits]), abs=1e-12)
    # the audits differ, so the mean of per-audit rates is not the rate of the pooled scores
    assert len({round(a["auc"], 6) for a in audits}) == 3
    assert measured["calibration_tpr_at_fpr_1pct"] > measured["calibration_tpr_at_fpr_0"]
    # the target's own metrics are untouched by the calibration ones
    target = slow_metrics(scores["target"][scores.get("evaluated", np.ones(n, bool))],
                          keep[0][scores.get("evaluated", np.ones(n, bool))])
    assert measured["auc"] == pytest.approx(target["auc"], abs=1e-12)


def test_calibration_models_that_are_targets_take_no_part_in_the_calibration_metrics():
    rng = np.random.default_rng(3)
    keep = rng.random((6, 200)) < 0.5
    calibration = [1, 2, 3]
    strength = np.array([[5.0], [5.0], [0.0]])  # models 1 and 2 are easy to attack, model 3 is not
    scores = {"target": rng.normal(size=200) + keep[0],
              "calibration": rng.normal(size=(3, 200)) + keep[calibration] * strength}
    only_3 = slow_metrics(scores["calibration"][2], keep[3])
    with_targets = target_metrics(scores, keep, 0, calibration, n_targets=1)
    without = target_metrics(scores, keep, 0, calibration, n_targets=3)  # models 0, 1, 2 are targets
    assert without["calibration_auc"] == pytest.approx(only_3["auc"], abs=1e-12)
    assert with_targets["calibration_auc"] > without["calibration_auc"] + 0.2
    none_left = target_metrics(scores, keep, 0, calibration, n_targets=4)
    assert np.isnan(none_left["calibration_tpr_at_fpr_0.1pct"]) and np.isnan(none_left["calibration_auc"])
    assert none_left["auc"] == without["auc"]  # the target's own metrics do not depend on it
