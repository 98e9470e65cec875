"""The leaderboard: one row per dataset × architecture × defense setting, computed from the results store alone.

For each setting (every seed and target of a cell setting pooled, see :mod:`bench.settings`):

- utility: mean test accuracy (``test_r2`` instead where the store has it), with a 95 % bootstrap CI over the
  target models;
- the **strongest attack**, chosen as an attacker would choose it: the attack with the highest mean TPR at 0.1 %
  FPR on the *calibration audits* (``calibration_tpr_at_fpr_0.1pct``: the calibration models audited in each
  target's place, :func:`bench.audit.target_metrics`), ties broken by the higher mean calibration AUC, then by
  name. The choice is then scored on the targets: its TPR at 0, 0.1 % and 1 % FPR, AUC and balanced accuracy,
  each with a bootstrap CI over the targets. A defender must survive every attack, so the privacy of a setting
  is that of its strongest attack. Choosing the attack with the highest *target* mean and reporting that same
  mean is biased upward (the winner's curse: the maximum of noisy means); it is kept as a labelled diagnostic
  (``naive_strongest_attack``, ``naive_tpr_at_fpr_0.1pct``). Stores written before the calibration metrics
  existed fall back to that naive rule, and ``strongest_attack_selection`` says which rule chose;
- ``rank`` with ``rank_ci_low`` / ``rank_ci_high``: the setting's rank by leakage within its dataset × architecture
  group (1 = least), with a bootstrap interval over its target models (:func:`rank_intervals`): settings whose
  intervals overlap are not told apart by the data;
- ``leakage_p`` / ``utility_p``: paired permutation tests over the targets against the undefended setting on the
  same membership matrices (:func:`paired_tests`), ``leakage_lower`` / ``utility_lower`` at α = 0.05;
- ε: the accountant's ε of DP cells (the store's ``fact.epsilon`` column, the ε reached beside the
  ``defense.epsilon`` asked for) beside the empirical lower bound, the largest
  mean ``epsilon_lower_bound`` of any attack;
- ``pareto``: whether the setting is Pareto-optimal within its dataset × architecture group (:func:`pareto_mask`).

Union rows (no AUC) and attacks skipped on a defense's release (NaN metrics) take no part in the ranking.

The strongest attack is that of the *outsider* who sees what the defense releases and trains reference models
(store columns ``access`` = black-box, ``knowledge`` = references). Attackers with more access or knowledge are
reported beside it, each class with its own strongest attack, chosen by the same rule (:data:`THREATS`):
white-box (the released weights), the attacker holding leaked training samples, and the federated insider who
sees every round.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import CALIBRATION, FPR_LEVELS, bootstrap_ci
from bench.rows import FACT
from bench.settings import GROUP_COLUMNS, SETTING_COLUMNS, format_value, label_settings, strengths
from privkernel.errors import BenchError

#: Utility columns, in order of preference: a regression store's R² replaces accuracy where present.
UTILITY_COLUMNS = ("test_r2", "test_accuracy")
#: The privacy axis: TPR of the strongest attack at this FPR.
PRIVACY = "tpr_at_fpr_0.1pct"
PRIVACY_FPR = FPR_LEVELS[PRIVACY]
#: The metrics of each attack that the regression check (:mod:`bench.check`) compares with its baseline.
ATTACK_METRICS = (PRIVACY, "auc", "balanced_accuracy")
#: Metrics reported for the strongest attack of a setting, each with a CI over its target models.
BOARD_METRICS = ("tpr_at_fpr_0", PRIVACY, "tpr_at_fpr_1pct", "auc", "balanced_accuracy")
#: What the strongest attack is chosen on: the same metrics measured on the calibration audits.
CALIBRATION_PRIVACY = f"{CALIBRATION}{PRIVACY}"
CALIBRATION_AUC = f"{CALIBRATION}auc"
#: The values of ``strongest_attack_selection``: chosen on the calibration audits, or (a store without
#: calibration metrics) on the targets themselves.
CALIBRATED, NAIVE = "calibration", "naive"
#: Bootstrap resamples of the rank intervals.
RANK_BOOT = 1000
#: Level of the paired tests against the undefended setting.
ALPHA = 0.05
#: The defense that the paired tests compare every other defense with.
UNDEFENDED = "none"
#: Sign-flip permutations of a paired test: every one of the 2^n for n ≤ 16 pairs, a random sample beyond.
PERMUTATIONS = 2**16
#: The store column of the ε a private training reached (its accountant's), reported as the board's ``epsilon``.
EPSILON = f"{FACT}epsilon"

HOW_TO_READ = (
    "TPR at an FPR is the highest true-positive rate of any threshold whose false-positive rate on the target's "
    "non-members is at most that FPR. Tied scores move together: a member tied with a non-member is never "
    "separated from it, so ties cannot buy TPR. With n non-members an FPR below 1/n cannot be resolved: the TPR at "
    "such an FPR equals the TPR at FPR = 0, the fraction of members scored strictly above every non-member "
    "(values marked † below, where the FPR < 1/n). Random guessing gives TPR = FPR, i.e. 0.001 at 0.1 % FPR, and "
    "AUC = balanced accuracy = 0.5."
)


def read_rows(results_dir: Path | str, grid: str | None = None) -> pd.DataFrame:
    """The store's rows (with ``grid``, that grid's only) with setting labels; an empty store is an error."""
    from bench.store import read_store

    df = read_store(results_dir, grid=grid)
    if df.empty:
        raise BenchError(f"the results store in {results_dir} has no rows; run `python -m bench grid` first")
    return label_settings(df)


def attack_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of single attacks (no unions) that were not skipped."""
    rows = df[df["attack"] != "union"]
    if "skipped" in rows.columns:
        rows = rows[rows["skipped"].isna()]
    return rows[rows[PRIVACY].notna()] if PRIVACY in rows.columns else rows.iloc[0:0]


#: Attacker classes reported beside the outsider: name → (access, knowledge) of their store rows.
OUTSIDER = ("black-box", "references")
THREATS = {
    "white-box": ("white-box", "references"),
    "leaked samples": (None, "leaked"),
    "federated insider": ("insider", "references"),
}


def threat_mask(rows: pd.DataFrame, access: str | None, knowledge: str | None) -> pd.Series:
    """Rows of attackers with this access and knowledge (None: any). Stores written before these columns
    existed hold outsider rows only."""
    access_col = rows["access"].fillna(OUTSIDER[0]) if "access" in rows else pd.Series(OUTSIDER[0], rows.index)
    knowledge_col = rows["knowledge"].fillna(OUTSIDER[1]) if "knowledge" in rows else pd.Series(OUTSIDER[1],
                                                                                                  rows.index)
    mask = pd.Series(True, rows.index)
    if access is not None:
        mask &= access_col == access
    if knowledge is not None:
        mask &= knowledge_col == knowledge
    return mask


def utility_column(rows: pd.DataFrame) -> str | None:
    """The utility column of a setting's rows: the first of :data:`UTILITY_COLUMNS` with a finite value."""
    for column in UTILITY_COLUMNS:
        if column in rows.columns and rows[column].notna().any():
            return column
    return None


def model_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per target model (cell × target): utility is a property of the model, repeated in each attack row."""
    column = utility_column(rows)
    if column is None:
        return rows.iloc[0:0]
    return rows[rows[column].notna()].drop_duplicates(["cell_key", "target"])


def mean_ci(values: pd.Series | np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the finite values with their 95 % percentile-bootstrap CI (NaN when there is none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return float(values.mean()), low, high


def attack_summary(rows: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per attack of one setting: mean and CI of each of :data:`BOARD_METRICS`, mean calibration TPR at 0.1 % FPR
    and AUC, mean ε lower bound, row count.

    A calibration mean is over the rows that have the metric: those of targets with a calibration model that is
    not itself a target (:func:`bench.audit.target_metrics`), the same rows for every attack of a setting. It is
    NaN when no row has it (a store written before calibration metrics existed).
    """
    out = []
    for attack, group in attack_rows(rows).groupby("attack_key", sort=True):
        entry: dict = {"attack": attack, "n": len(group)}
        for metric in BOARD_METRICS:
            mean, low, high = mean_ci(group[metric] if metric in group else [], n_boot, seed)
            entry.update({metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        for metric in (CALIBRATION_PRIVACY, CALIBRATION_AUC):
            measured = group[metric] if metric in group else pd.Series(np.nan, group.index)
            entry[metric] = float(measured.mean()) if measured.notna().any() else float("nan")
        bound = group["epsilon_lower_bound"] if "epsilon_lower_bound" in group else pd.Series(dtype=float)
        entry["epsilon_lower_bound"] = float(bound.mean()) if bound.notna().any() else float("nan")
        out.append(entry)
    columns = ["attack", "n", *[f"{m}{s}" for m in BOARD_METRICS for s in ("", "_ci_low", "_ci_high")],
               CALIBRATION_PRIVACY, CALIBRATION_AUC, "epsilon_lower_bound"]
    return pd.DataFrame(out, columns=columns)


def strongest(summary: pd.DataFrame, metric: str = PRIVACY, tie_break: str = "auc") -> pd.Series | None:
    """The attack with the highest mean ``metric``, ties broken by the higher mean ``tie_break``, then by name."""
    ranked = summary[summary[metric].notna()]
    if ranked.empty:
        return None
    # round away floating-point noise so that equal rates computed in different orders tie
    key = pd.DataFrame({"m": ranked[metric].round(12), "t": ranked[tie_break].round(12).fillna(-np.inf),
                        "name": ranked["attack"]})
    order = key.sort_values(["m", "t", "name"], ascending=[False, False, True]).index
    return ranked.loc[order[0]]


def choose_strongest(
    summary: pd.DataFrame, metric: str = PRIVACY, tie_break: str = "auc"
) -> tuple[pd.Series | None, str]:
    """The attack an attacker would call strongest by ``metric``, and the rule that chose it.

    With calibration metrics for every attack (``calibration_<metric>``, ``calibration_<tie_break>``) the choice is
    :func:`strongest` on them (:data:`CALIBRATED`): made on audits the attacker can run without any target's
    membership, so that the noise of the target audits does not decide which attack is reported. Otherwise (an old
    store) it is :func:`strongest` on the target means themselves (:data:`NAIVE`), which is biased upward: the
    maximum of noisy means.

    The calibration metrics come from the audits of calibration models that are not targets of the cell
    (:func:`bench.audit.target_metrics`), so the choice is independent of the target audits it is scored on.
    """
    calibrated = f"{CALIBRATION}{metric}"
    if len(summary) and calibrated in summary and summary[calibrated].notna().all():
        return strongest(summary, calibrated, f"{CALIBRATION}{tie_break}"), CALIBRATED
    return strongest(summary, metric, tie_break), NAIVE


def pareto_mask(utility: np.ndarray, leakage: np.ndarray) -> np.ndarray:
    """Pareto-optimal points: no other point has utility ≥ and leakage ≤, with at least one strict.

    Points with a NaN coordinate are never optimal and dominate nothing. Identical points are both optimal.
    """
    utility, leakage = np.asarray(utility, dtype=float), np.asarray(leakage, dtype=float)
    valid = np.isfinite(utility) & np.isfinite(leakage)
    optimal = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid & (utility >= utility[i]) & (leakage <= leakage[i])
        strictly = (utility > utility[i]) | (leakage < leakage[i])
        if np.any(others & strictly):
            optimal[i] = False
    return optimal


def rank_intervals(
    values: Sequence[np.ndarray], n_boot: int = RANK_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rank of each setting's mean leakage among the settings of a group, with a bootstrap interval.

    Parameters
    ----------
    values
        Per setting, the leakage of each of its target models (one value per seed × target).
    n_boot, seed
        Bootstrap resamples and the seed of their generator: the result depends on nothing else.
    level
        Coverage of the interval.

    Returns
    -------
    rank, low, high
        ``rank``: the rank of the observed means (1 = least leakage; tied means share their average rank, as
        :func:`scipy.stats.rankdata` gives them). ``low``/``high``: the ``(1 − level)/2`` and ``(1 + level)/2``
        quantiles of the ranks over ``n_boot`` resamples. In each resample every setting's target models are
        drawn with replacement, independently of the other settings', the means are recomputed and ranked
        (Hall & Miller 2009; what MTEB shows as rank intervals). The quantiles are values the ranks took
        (``inverted_cdf``). Two settings whose intervals overlap are not told apart by the data. A setting
        without values has NaN everywhere and takes no part.
    """
    from scipy.stats import rankdata

    values = [np.asarray(v, dtype=np.float64) for v in values]
    values = [v[np.isfinite(v)] for v in values]
    ranked = np.array([len(v) > 0 for v in values], dtype=bool)
    rank, low, high = (np.full(len(values), np.nan) for _ in range(3))
    if not ranked.any():
        return rank, low, high
    # round away floating-point noise so that equal means computed in different orders tie
    rank[ranked] = rankdata(np.round([v.mean() for v in values if len(v)], 12))
    rng = np.random.default_rng(seed)
    means = np.column_stack([v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
                             for v in values if len(v)])
    ranks = rankdata(np.round(means, 12), axis=1)
    tail = (1 - level) / 2
    low[ranked] = np.quantile(ranks, tail, axis=0, method="inverted_cdf")
    high[ranked] = np.quantile(ranks, 1 - tail, axis=0, method="inverted_cdf")
    return rank, low, high


def paired_less(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """One-sided p-value that the pairs' mean difference ``mean(x − y)`` is below 0: an exact sign-flip test.

    Under the null hypothesis the two values of each pair are exchangeable, so each difference
    ``d_i = x_i − y_i`` is as likely as ``−d_i``. The p-value is the fraction of the ``2^n`` sign assignments whose
    mean difference is at most the observed one, the observed assignment included
    (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``, ``alternative="less"``): all of them
    for ``n ≤ 16`` pairs, :data:`PERMUTATIONS` random ones (generator seeded with ``seed``) beyond.

    The smallest attainable p-value is ``2^-n`` (every difference negative): 4 pairs can never reach 0.05
    (1/16), 5 pairs can (1/32). Pairs with a NaN are dropped; NaN for fewer than 2 pairs.
    """
    from scipy.stats import permutation_test

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 2:
        return float("nan")
    result = permutation_test(
        (x[both], y[both]), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=PERMUTATIONS, alternative="less", random_state=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def min_pairs(alpha: float = ALPHA) -> int:
    """The fewest pairs with which :func:`paired_less` can reach ``p ≤ alpha``: the smallest n with 2^-n ≤ alpha."""
    return int(np.ceil(np.log2(1 / alpha)))


def paired_tests(board: pd.DataFrame, targets: Sequence[pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Each setting against the undefended setting of its group and options, paired over their target models.

    Settings of the same dataset × architecture and the same training and protocol options draw the same split and
    membership matrix for the same seed (it depends on the seed, ``n_models`` and ``test_fraction`` only), so the
    target model ``(seed, target)`` of a defense and that of :data:`UNDEFENDED` were trained on the same records;
    release-only defenses even audit the same models. A pair is one ``(seed, target)`` that both settings have.

    Parameters
    ----------
    board
        One row per setting with the setting columns and ``defense_name``.
    targets
        Per row of ``board`` (same order), a frame indexed by ``(seed, target)`` with the ``leakage`` (TPR at 0.1 %
        FPR of the setting's chosen strongest attack) and ``utility`` of each target model.
    seed
        Seed of the random sign flips beyond 16 pairs.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``board``: ``paired_targets`` (pairs with both leakages), ``leakage_p`` and ``utility_p``
        (:func:`paired_less`: is the defense's leakage, its utility, lower than the undefended one's?) and
        ``leakage_lower`` / ``utility_lower`` (``p ≤`` :data:`ALPHA`). Each p-value is that of its own comparison,
        not corrected for the number of defenses tested. The undefended setting itself and settings without one to
        compare with get 0, NaN and False.
    """
    out = pd.DataFrame({"paired_targets": 0, "leakage_p": np.nan, "leakage_lower": False, "utility_p": np.nan,
                        "utility_lower": False}, index=board.index)
    keys = [*GROUP_COLUMNS, "options"]
    for _, rows in board.groupby(keys, sort=False, dropna=False):
        undefended = rows.index[rows["defense_name"] == UNDEFENDED]
        if len(undefended) != 1:
            continue
        base = targets[board.index.get_loc(undefended[0])]
        for index in rows.index.difference(undefended):
            pairs = targets[board.index.get_loc(index)].merge(base, left_index=True, right_index=True,
                                                              suffixes=("", "_undefended"))
            pairs = pairs[pairs["leakage"].notna() & pairs["leakage_undefended"].notna()]
            out.loc[index, "paired_targets"] = len(pairs)
            for metric in ("leakage", "utility"):
                p = paired_less(pairs[metric], pairs[f"{metric}_undefended"], seed)
                out.loc[index, [f"{metric}_p", f"{metric}_lower"]] = [p, bool(p <= ALPHA)]
    return out.astype({"paired_targets": int, "leakage_lower": bool, "utility_lower": bool})


def target_values(rows: pd.DataFrame, attack: str) -> pd.DataFrame:
    """One row per target model of a setting, indexed by ``(seed, target)``: the TPR at 0.1 % FPR of the outsider's
    ``attack`` (``leakage``) and the model's utility (``utility``)."""
    chosen = attack_rows(rows[threat_mask(rows, *OUTSIDER)])
    chosen = chosen[chosen["attack_key"] == attack]
    column = utility_column(rows)

    def per_target(table: pd.DataFrame, metric: str | None) -> pd.Series:
        if metric is None or table.empty:
            return pd.Series(dtype=float, index=pd.MultiIndex.from_arrays([[], []], names=["seed", "target"]))
        return table.groupby(["seed", "target"])[metric].mean()

    return pd.concat({"leakage": per_target(chosen, PRIVACY), "utility": per_target(model_rows(rows), column)},
                     axis=1)


def build_leaderboard(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per setting of labelled store rows (:func:`bench.settings.label_settings`), sorted by group, then
    Pareto-optimal rows first, then by utility (high first), strongest-attack TPR (low first) and label.

    ``n_boot`` and ``seed`` are those of the CIs; the rank intervals use :data:`RANK_BOOT` resamples and the
    paired tests their own permutations, with the same ``seed``.
    """
    defense_params = sorted(c for c in df.columns if c.startswith("defense."))
    if "seed" not in df:
        df = df.assign(seed=0)
    out, targets = [], []
    for _, rows in df.groupby(list(SETTING_COLUMNS), sort=False, dropna=False):
        first = rows.iloc[0]
        entry: dict = {c: first[c] for c in (*SETTING_COLUMNS, "setting", "group", "defense_name")}
        entry.update({c: first[c] for c in defense_params})
        entry["seeds"] = rows["seed"].nunique()
        models = model_rows(rows)
        entry["target_models"] = len(models)
        utility = utility_column(rows)
        entry["utility_metric"] = utility or ""
        for column in UTILITY_COLUMNS:
            if column in df.columns:
                mean, low, high = mean_ci(models[column] if column in models else [], n_boot, seed)
                entry.update({column: mean, f"{column}_ci_low": low, f"{column}_ci_high": high})
        summary = attack_summary(rows[threat_mask(rows, *OUTSIDER)], n_boot, seed)
        best, rule = choose_strongest(summary)
        entry["strongest_attack"] = best["attack"] if best is not None else ""
        entry["strongest_attack_selection"] = rule if best is not None else ""
        for metric in BOARD_METRICS:
            for suffix in ("", "_ci_low", "_ci_high"):
                entry[f"{metric}{suffix}"] = best[f"{metric}{suffix}"] if best is not None else float("nan")
        naive = strongest(summary)
        entry["naive_strongest_attack"] = naive["attack"] if naive is not None else ""
        entry[f"naive_{PRIVACY}"] = naive[PRIVACY] if naive is not None else float("nan")
        best_auc, _ = choose_strongest(summary, "auc", PRIVACY)
        entry["strongest_auc_attack"] = best_auc["attack"] if best_auc is not None else ""
        for suffix in ("", "_ci_low", "_ci_high"):
            entry[f"strongest_auc{suffix}"] = best_auc[f"auc{suffix}"] if best_auc is not None else float("nan")
        reached = rows[EPSILON] if EPSILON in rows else pd.Series(dtype=float)
        entry["epsilon"] = float(reached.mean()) if reached.notna().any() else float("nan")
        bounds = summary["epsilon_lower_bound"]
        entry["epsilon_lower_bound"] = float(bounds.max()) if bounds.notna().any() else float("nan")
        entry["epsilon_lower_bound_attack"] = summary.loc[bounds.idxmax(), "attack"] if bounds.notna().any() else ""
        # the † of the strongest attack's TPRs: the audits of its own rows (a leaked-samples attacker, scored on the
        # records it was not told about, has fewer non-members than the outsider)
        scored = attack_rows(rows[threat_mask(rows, *OUTSIDER)])
        if best is not None:
            scored = scored[scored["attack_key"] == best["attack"]]
        resolvable = scored["min_resolvable_fpr"] if "min_resolvable_fpr" in scored else pd.Series(dtype=float)
        entry["min_resolvable_fpr"] = float(resolvable.max()) if resolvable.notna().any() else float("nan")
        for threat, (access, knowledge) in THREATS.items():
            other, other_rule = choose_strongest(attack_summary(rows[threat_mask(rows, access, knowledge)], n_boot,
                                                                seed))
            entry[f"{threat}: attack"] = other["attack"] if other is not None else ""
            entry[f"{threat}: selection"] = other_rule if other is not None else ""
            for metric in ATTACK_METRICS:
                entry[f"{threat}: {metric}"] = other[metric] if other is not None else float("nan")
        out.append(entry)
        targets.append(target_values(rows, entry["strongest_attack"]))
    board = pd.DataFrame(out)
    board["strength"] = strengths(board, defense_params)
    board["utility"] = [row[row["utility_metric"]] if row["utility_metric"] else np.nan for _, row in board.iterrows()]
    board["pareto"] = False
    board["rank"], board["rank_ci_low"], board["rank_ci_high"] = np.nan, np.nan, np.nan
    for _, index in board.groupby(list(GROUP_COLUMNS), sort=False).groups.items():
        board.loc[index, "pareto"] = pareto_mask(board.loc[index, "utility"], board.loc[index, PRIVACY])
        # settings in label order, so that the resamples drawn for each do not depend on the order of the store
        order = board.loc[index, "setting"].sort_values(kind="stable").index
        ranks = rank_intervals([targets[i]["leakage"].to_numpy() for i in order], seed=seed)
        board.loc[order, ["rank", "rank_ci_low", "rank_ci_high"]] = np.column_stack(ranks)
    board = board.join(paired_tests(board, targets, seed))
    board = board.sort_values(
        [*GROUP_COLUMNS, "pareto", "utility", PRIVACY, "setting"],
        ascending=[True, True, False, False, True, True], na_position="last", kind="stable", ignore_index=True,
    )
    leading = ["group", *SETTING_COLUMNS, "setting", "defense_name", "strength", "pareto", "seeds", "target_models",
               "utility_metric", "utility"]
    return board[leading + [c for c in board.columns if c not in leading and c not in defense_params]
                 + defense_params]


# --- Markdown ---------------------------------------------------------------------------------------------------


def _num(value: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def _with_ci(row: pd.Series, metric: str, digits: int = 3) -> str:
    mean = row.get(metric, np.nan)
    if not np.isfinite(mean):
        return "–"
    low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


UTILITY_NAMES = {"test_accuracy": "test accuracy", "test_r2": "test R²"}


#: The TPR columns of the Markdown table (store column, header); † marks a value whose FPR an audit cannot resolve.
FPR_COLUMNS = (("tpr_at_fpr_0", "TPR @ 0 % FPR"), (PRIVACY, "TPR @ 0.1 % FPR"), ("tpr_at_fpr_1pct", "TPR @ 1 % FPR"))


def _rank(row: pd.Series) -> str:
    if not np.isfinite(row.get("rank", np.nan)):
        return "–"
    return f"{row['rank']:g} [{row['rank_ci_low']:g}, {row['rank_ci_high']:g}]"


def _name(row: pd.Series, common: str) -> str:
    return row["defense"] + (f" [{row['options']}]" if row["options"] and not common else "")


def _table(header: list[str], entries: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c).replace("|", "\\|") for c in entry) + " |" for entry in entries]]


def to_markdown(board: pd.DataFrame, source: str = "") -> str:
    """The leaderboard as Markdown: one table per dataset × architecture group, Pareto-optimal rows marked ★."""
    lines = [
        "# privbench leaderboard",
        "",
        "Regenerated from the results store by `python -m bench leaderboard`"
        + (f" (store: `{source}`)" if source else "") + "; do not edit by hand.",
        "",
        "One row per dataset × architecture × defense setting: every seed and target model of the setting pooled. "
        "Means with 95 % percentile-bootstrap confidence intervals over the target models (fixed seed).",
        "",
        "**Strongest attack.** A defender must survive every attack, so a setting's privacy is that of its strongest "
        "attack, chosen as an attacker would choose it: the attack with the highest mean TPR at 0.1 % FPR on the "
        "*calibration audits* (reference models audited in each target's place, with the target left out of their "
        "references), ties broken by the mean calibration AUC, then by name. The chosen attack is then scored on "
        "the targets: TPR at 0, 0.1 % and 1 % FPR and AUC. Choosing the attack with the best mean on the targets "
        "and reporting that same mean would overstate the leakage (the winner's curse: the maximum of noisy "
        "means); that naive maximum is shown below each table as a diagnostic only. Only calibration models that "
        "are not themselves targets of the cell take part, so the choice is independent of the target audits "
        "that score it. "
        "★ marks the Pareto-optimal settings of each group: no other setting of the group has both "
        "higher-or-equal utility and lower-or-equal strongest-attack TPR at 0.1 % FPR, one of them strictly.",
        "",
        f"**Rank** is the rank of a setting's strongest-attack TPR at 0.1 % FPR within its group (1 = least "
        f"leakage, ties share their average rank) with its 95 % bootstrap interval: {RANK_BOOT} resamples, each "
        "drawing every setting's target models (seed × target) with replacement and ranking the new means. "
        "Settings whose rank intervals overlap are not told apart by the data.",
        "",
        "**Against no defense.** Each defense is compared with `none` of its group and options on the same target "
        "models' membership (same seed and target index: the same split and training sets) by an exact one-sided "
        "paired sign-flip permutation test of the mean difference over the pairs. ↓ next to the TPR: the "
        f"strongest attack's TPR at 0.1 % FPR is significantly lower than against `none` (p ≤ {ALPHA:g}); ▽ next "
        f"to the utility: the utility is significantly lower (p ≤ {ALPHA:g}). With n pairs the smallest attainable "
        f"p is 2^-n, so fewer than {min_pairs()} pairs can never be significant. p-values are per comparison, not "
        "corrected for the number of defenses (`leakage_p`, `utility_p` in the CSV).",
        "",
        "ε (accountant) is the DP-SGD accountant's guarantee (δ as configured); ε lower bound is the largest mean "
        "empirical ε lower bound of any attack (95 % Clopper–Pearson, δ = 1e-5): the gap shows how loose a guarantee "
        "is in practice.",
        "",
        f"**How TPR at a fixed FPR is read.** {HOW_TO_READ}",
        "",
        "Figures (frontiers, ROC curves, per-class vulnerability, privacy-risk scores): `python -m bench plot`, "
        "written under `plots/`. The same table as CSV (with balanced accuracy and every p-value): "
        "`leaderboard.csv`.",
        "",
    ]
    for (dataset, architecture), rows in board.groupby(list(GROUP_COLUMNS), sort=False):
        utility = rows["utility_metric"].iloc[0] or "test_accuracy"
        lines += [f"## {dataset} · {architecture}", ""]
        common = rows["options"].iloc[0] if rows["options"].nunique() == 1 else ""
        if common:
            lines += [f"Options: {common}.", ""]
        header = ["", "defense", f"{UTILITY_NAMES.get(utility, utility)}", "strongest attack",
                  *[title for _, title in FPR_COLUMNS], "AUC", "rank [95 % interval]", "ε (accountant)",
                  "ε lower bound", "target models"]
        entries = []
        for _, row in rows.iterrows():
            resolvable = row["min_resolvable_fpr"]
            tprs = [_with_ci(row, metric) + (" †" if np.isfinite(resolvable) and resolvable > FPR_LEVELS[metric]
                                             and FPR_LEVELS[metric] > 0 else "")
                    for metric, _ in FPR_COLUMNS]
            tprs[1] += " ↓" if row.get("leakage_lower", False) else ""
            bound = _num(row["epsilon_lower_bound"], 2)
            if row["epsilon_lower_bound_attack"] and row["epsilon_lower_bound"] > 0:
                bound += f" ({row['epsilon_lower_bound_attack']})"
            attack = (row["strongest_attack"] or "–") + (" (naive)" if row["strongest_attack_selection"] == NAIVE
                                                         else "")
            entries.append([
                "★" if row["pareto"] else "", _name(row, common),
                _with_ci(row, utility) + (" ▽" if row.get("utility_lower", False) else ""), attack, *tprs,
                _with_ci(row, "auc"), _rank(row), _num(row["epsilon"], 2), bound,
                f"{row['target_models']} ({row['seeds']} seed{'s' * (row['seeds'] > 1)})",
            ])
        lines += _table(header, entries)
        lines += _notes(rows, common)
        lines += _other_attackers(rows, common)
        lines.append("")
    return "\n".join(lines)


def _rows_per_group(sizes: list[int], lines: int) -> list[int]:
    """How many settings of each group fit in ``lines`` lines: one each at least, then one more at a time to the
    group showing the fewest of those not shown in full (in turn), counting the "... and N more" line of a group
    that is cut."""
    shown = [1] * len(sizes)

    def used(counts: list[int]) -> int:
        return sum(counts) + sum(c < n for c, n in zip(counts, sizes, strict=True))

    while True:
        open_groups = [i for i, (c, n) in enumerate(zip(shown, sizes, strict=True)) if c < n]
        if not open_groups:
            return shown
        best = min(open_groups, key=lambda i: shown[i])
        trial = shown.copy()
        trial[best] += 1
        if used(trial) > lines:
            return shown
        shown = trial


def compact_summary(board: pd.DataFrame, max_lines: int = 25) -> list[str]:
    """The answer a run ends with: per dataset × architecture group, each setting's utility, strongest attack, its
    TPR at 0.1 % FPR with the 95 % interval and its AUC, in aligned text columns; at most about ``max_lines`` lines
    (a group's further settings are counted, not listed: the full table is ``LEADERBOARD.md``). ★: Pareto-optimal,
    †: the audits cannot resolve 0.1 % FPR (as in the Markdown table)."""
    groups = list(board.groupby(list(GROUP_COLUMNS), sort=False))
    allotted = _rows_per_group([len(rows) for _, rows in groups], max_lines - 1 - 2 * len(groups))
    lines = []
    for ((dataset, architecture), rows), per_group in zip(groups, allotted, strict=True):
        utility = rows["utility_metric"].iloc[0] or "test_accuracy"
        common = rows["options"].iloc[0] if rows["options"].nunique() == 1 else ""
        lines.append(f"{dataset} · {architecture}" + (f" ({common})" if common else ""))
        table = [["", "defense", UTILITY_NAMES.get(utility, utility), "strongest attack", "TPR @ 0.1 % FPR [95 %]",
                  "AUC"]]
        for _, row in rows.head(per_group).iterrows():
            unresolved = np.isfinite(row["min_resolvable_fpr"]) and row["min_resolvable_fpr"] > PRIVACY_FPR
            table.append(["★" if row["pareto"] else "", _name(row, common), _num(row[utility]),
                          row["strongest_attack"] or "–", _with_ci(row, PRIVACY) + (" †" if unresolved else ""),
                          _num(row["auc"])])
        widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
        lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        if len(rows) > per_group:
            lines.append(f"     ... and {len(rows) - per_group} more settings")
    lines.append("★ Pareto-optimal in its group; † the audits have too few non-members to resolve 0.1 % FPR")
    return lines


def _notes(rows: pd.DataFrame, common: str) -> list[str]:
    """Markdown lines under a group's table: unresolvable FPRs, the rule that chose, too few pairs, the diagnostic."""
    lines = []
    resolvable = rows["min_resolvable_fpr"].dropna()
    if len(resolvable) and (resolvable > PRIVACY_FPR).any():
        worst = resolvable.max()
        lines += ["", f"† Some targets are audited on only {int(round(1 / worst))} non-members (smallest resolvable "
                  f"FPR {format_value(round(100 * worst, 2))} %): there the TPR at a smaller FPR is the TPR at "
                  "FPR = 0."]
    if (rows["strongest_attack_selection"] == NAIVE).any():
        lines += ["", "(naive): the store has no calibration metrics for these settings (written before they "
                  "existed), so their strongest attack was chosen on the targets' own mean TPR at 0.1 % FPR and its "
                  "TPR is biased upward. Rerun `python -m bench grid` to compute them from the cached scores."]
    compared = rows.loc[rows["defense_name"] != UNDEFENDED, "paired_targets"]
    compared = compared[compared > 0]
    if len(compared) and compared.min() < min_pairs():
        lines += ["", f"Too few paired targets for the tests against `none`: with {compared.min()} pairs the smallest "
                  f"attainable p is 2^-{compared.min()} = {2.0 ** -compared.min():.3g} > {ALPHA:g}, so no marks "
                  f"↓ ▽ are possible there; {min_pairs()} or more target models per setting (seeds × targets) "
                  "are needed."]
    calibrated = rows[rows["strongest_attack_selection"] == CALIBRATED]
    if len(calibrated):
        lines += ["", "Diagnostic only, not a result (winner's curse): the attack with the highest mean TPR at "
                  "0.1 % FPR on the targets themselves, chosen and scored on the same targets:", ""]
        lines += _table(["defense", "naive strongest attack", "its TPR @ 0.1 % FPR (biased up)",
                         "calibration-chosen TPR @ 0.1 % FPR"],
                        [[_name(row, common), row["naive_strongest_attack"] or "–", _num(row[f"naive_{PRIVACY}"]),
                          _num(row[PRIVACY])] for _, row in calibrated.iterrows()])
    return lines


def _other_attackers(rows: pd.DataFrame, common: str) -> list[str]:
    """Markdown lines of the group's attackers beyond the outsider (:data:`THREATS`), if the store has any."""
    entries = []
    for _, row in rows.iterrows():
        for threat in THREATS:
            if row.get(f"{threat}: attack"):
                naive = " (naive)" if row.get(f"{threat}: selection") == NAIVE else ""
                entries.append([_name(row, common), threat, row[f"{threat}: attack"] + naive,
                                *[_num(row[f"{threat}: {m}"]) for m in ATTACK_METRICS]])
    if not entries:
        return []
    return ["", "Attackers beyond the outsider (white-box: sees the weights; leaked samples: knows part of the "
            "target's training set and is scored on the rest; federated insider: sees every round's model), each "
            "with its strongest attack chosen by the same rule:", "",
            *_table(["defense", "attacker", "strongest attack", "TPR @ 0.1 % FPR", "AUC", "balanced accuracy"],
                    entries)]


def write_leaderboard(board: pd.DataFrame, out_dir: Path | str, source: str = "") -> tuple[Path, Path]:
    """Write ``LEADERBOARD.md`` and ``leaderboard.csv`` into ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        md, csv = out / "LEADERBOARD.md", out / "leaderboard.csv"
        md.write_text(to_markdown(board, source))
        board.to_csv(csv, index=False)
    except OSError as exc:
        raise BenchError(f"cannot write the leaderboard into {out} ({exc}); pass a writable folder with --out") \
            from None
    return md, csv
