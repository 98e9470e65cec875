"""The leaderboard: one row per dataset × architecture × defense setting, computed from the results store alone.

For each setting (every seed and target of a cell setting pooled, see :mod:`bench.settings`):

- utility: mean test accuracy (``test_r2`` instead where the store has it), with a 95 % bootstrap CI over the
  target models;
- the **strongest attack**: the attack with the highest mean TPR at 0.1 % FPR, ties broken by the higher mean AUC
  (then by name), with its TPR at 0.1 % FPR, AUC and balanced accuracy, each with a bootstrap CI over targets —
  a defender must survive every attack, so the privacy of a setting is that of its strongest attack;
- ε: the accountant's ε of DP cells (the store's ``fact.epsilon`` column, the ε reached beside the
  ``defense.epsilon`` asked for) beside the empirical lower bound, the largest
  mean ``epsilon_lower_bound`` of any attack;
- ``pareto``: whether the setting is Pareto-optimal within its dataset × architecture group (:func:`pareto_mask`).

Union rows (no AUC) and attacks skipped on a defense's release (NaN metrics) take no part in the ranking.

The strongest attack is that of the *outsider* who sees what the defense releases and trains reference models
(store columns ``access`` = black-box, ``knowledge`` = references). Attackers with more access or knowledge are
reported beside it, each class with its own strongest attack (:data:`THREATS`): white-box (the released
weights), the attacker holding leaked training samples, and the federated insider who sees every round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import FPR_LEVELS, bootstrap_ci
from bench.rows import FACT
from bench.settings import GROUP_COLUMNS, SETTING_COLUMNS, format_value, label_settings, strengths
from privkernel.errors import BenchError

#: Utility columns, in order of preference: a regression store's R² replaces accuracy where present.
UTILITY_COLUMNS = ("test_r2", "test_accuracy")
#: The privacy axis: TPR of the strongest attack at this FPR.
PRIVACY = "tpr_at_fpr_0.1pct"
PRIVACY_FPR = FPR_LEVELS[PRIVACY]
#: Metrics reported for the strongest attack, each with a CI.
ATTACK_METRICS = (PRIVACY, "auc", "balanced_accuracy")
#: The store column of the ε a private training reached (its accountant's), reported as the board's ``epsilon``.
EPSILON = f"{FACT}epsilon"

HOW_TO_READ = (
    "TPR at an FPR is the highest true-positive rate of any threshold whose false-positive rate on the target's "
    "non-members is at most that FPR. Tied scores move together: a member tied with a non-member is never "
    "separated from it, so ties cannot buy TPR. With n non-members an FPR below 1/n cannot be resolved: the TPR at "
    "such an FPR equals the TPR at FPR = 0, the fraction of members scored strictly above every non-member "
    "(rows marked † below, where 0.1 % < 1/n). Random guessing gives TPR = FPR, i.e. 0.001 at 0.1 % FPR, and "
    "AUC = balanced accuracy = 0.5."
)


def read_rows(results_dir: Path | str) -> pd.DataFrame:
    """The store's rows with setting labels; an empty store is an error."""
    from bench.store import read_store

    df = read_store(results_dir)
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
    """Per attack of one setting: mean and CI of each of :data:`ATTACK_METRICS`, mean ε lower bound, row count."""
    out = []
    for attack, group in attack_rows(rows).groupby("attack_key", sort=True):
        entry: dict = {"attack": attack, "n": len(group)}
        for metric in ATTACK_METRICS:
            mean, low, high = mean_ci(group[metric] if metric in group else [], n_boot, seed)
            entry.update({metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        bound = group["epsilon_lower_bound"] if "epsilon_lower_bound" in group else pd.Series(dtype=float)
        entry["epsilon_lower_bound"] = float(bound.mean()) if bound.notna().any() else float("nan")
        out.append(entry)
    columns = ["attack", "n", *[f"{m}{s}" for m in ATTACK_METRICS for s in ("", "_ci_low", "_ci_high")],
               "epsilon_lower_bound"]
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


def build_leaderboard(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per setting of labelled store rows (:func:`bench.settings.label_settings`), sorted by group, then
    Pareto-optimal rows first, then by utility (high first), strongest-attack TPR (low first) and label."""
    defense_params = sorted(c for c in df.columns if c.startswith("defense."))
    out = []
    for _, rows in df.groupby(list(SETTING_COLUMNS), sort=False, dropna=False):
        first = rows.iloc[0]
        entry: dict = {c: first[c] for c in (*SETTING_COLUMNS, "setting", "group", "defense_name")}
        entry.update({c: first[c] for c in defense_params})
        entry["seeds"] = rows["seed"].nunique() if "seed" in rows else 1
        models = model_rows(rows)
        entry["target_models"] = len(models)
        utility = utility_column(rows)
        entry["utility_metric"] = utility or ""
        for column in UTILITY_COLUMNS:
            if column in df.columns:
                mean, low, high = mean_ci(models[column] if column in models else [], n_boot, seed)
                entry.update({column: mean, f"{column}_ci_low": low, f"{column}_ci_high": high})
        summary = attack_summary(rows[threat_mask(rows, *OUTSIDER)], n_boot, seed)
        best = strongest(summary)
        entry["strongest_attack"] = best["attack"] if best is not None else ""
        for metric in ATTACK_METRICS:
            for suffix in ("", "_ci_low", "_ci_high"):
                entry[f"{metric}{suffix}"] = best[f"{metric}{suffix}"] if best is not None else float("nan")
        best_auc = strongest(summary, "auc", PRIVACY)
        entry["strongest_auc_attack"] = best_auc["attack"] if best_auc is not None else ""
        for suffix in ("", "_ci_low", "_ci_high"):
            entry[f"strongest_auc{suffix}"] = best_auc[f"auc{suffix}"] if best_auc is not None else float("nan")
        reached = rows[EPSILON] if EPSILON in rows else pd.Series(dtype=float)
        entry["epsilon"] = float(reached.mean()) if reached.notna().any() else float("nan")
        bounds = summary["epsilon_lower_bound"]
        entry["epsilon_lower_bound"] = float(bounds.max()) if bounds.notna().any() else float("nan")
        entry["epsilon_lower_bound_attack"] = summary.loc[bounds.idxmax(), "attack"] if bounds.notna().any() else ""
        resolvable = attack_rows(rows)["min_resolvable_fpr"] if "min_resolvable_fpr" in rows else pd.Series()
        entry["min_resolvable_fpr"] = float(resolvable.max()) if resolvable.notna().any() else float("nan")
        for threat, (access, knowledge) in THREATS.items():
            other = strongest(attack_summary(rows[threat_mask(rows, access, knowledge)], n_boot, seed))
            entry[f"{threat}: attack"] = other["attack"] if other is not None else ""
            for metric in ATTACK_METRICS:
                entry[f"{threat}: {metric}"] = other[metric] if other is not None else float("nan")
        out.append(entry)
    board = pd.DataFrame(out)
    board["strength"] = strengths(board, defense_params)
    board["utility"] = [row[row["utility_metric"]] if row["utility_metric"] else np.nan for _, row in board.iterrows()]
    board["pareto"] = False
    for _, index in board.groupby(list(GROUP_COLUMNS), sort=False).groups.items():
        board.loc[index, "pareto"] = pareto_mask(board.loc[index, "utility"], board.loc[index, PRIVACY])
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


def to_markdown(board: pd.DataFrame, source: str = "") -> str:
    """The leaderboard as Markdown: one table per dataset × architecture group, Pareto-optimal rows marked ★."""
    lines = [
        "# privbench leaderboard",
        "",
        "Regenerated from the results store by `python -m bench leaderboard`"
        + (f" (store: `{source}`)" if source else "") + "; do not edit by hand.",
        "",
        "One row per dataset × architecture × defense setting: every seed and target model of the setting pooled. "
        "Means with 95 % percentile-bootstrap confidence intervals over the target models (fixed seed). "
        "The **strongest attack** is the attack with the highest mean TPR at 0.1 % FPR (ties broken by AUC): a "
        "defender must survive every attack. Its AUC and balanced accuracy (threshold chosen on reference models) "
        "follow. ★ marks the Pareto-optimal settings of each group: no other setting of the group has both "
        "higher-or-equal utility and lower-or-equal strongest-attack TPR at 0.1 % FPR, one of them strictly. "
        "ε (accountant) is the DP-SGD accountant's guarantee (δ as configured); ε lower bound is the largest mean "
        "empirical ε lower bound of any attack (95 % Clopper–Pearson, δ = 1e-5): the gap shows how loose a guarantee "
        "is in practice.",
        "",
        f"**How TPR at a fixed FPR is read.** {HOW_TO_READ}",
        "",
        "Figures (frontiers, ROC curves, per-class vulnerability, privacy-risk scores): `python -m bench plot`, "
        "written under `plots/`. The same table as CSV: `leaderboard.csv`.",
        "",
    ]
    for (dataset, architecture), rows in board.groupby(list(GROUP_COLUMNS), sort=False):
        utility = rows["utility_metric"].iloc[0] or "test_accuracy"
        lines += [f"## {dataset} · {architecture}", ""]
        common = rows["options"].iloc[0] if rows["options"].nunique() == 1 else ""
        if common:
            lines += [f"Options: {common}.", ""]
        header = ["", "defense", f"{UTILITY_NAMES.get(utility, utility)}", "strongest attack",
                  "TPR @ 0.1 % FPR", "AUC", "balanced accuracy", "ε (accountant)", "ε lower bound", "target models"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, row in rows.iterrows():
            name = row["defense"] + (f" [{row['options']}]" if row["options"] and not common else "")
            dagger = " †" if np.isfinite(row["min_resolvable_fpr"]) and row["min_resolvable_fpr"] > PRIVACY_FPR \
                else ""
            bound = _num(row["epsilon_lower_bound"], 2)
            if row["epsilon_lower_bound_attack"] and row["epsilon_lower_bound"] > 0:
                bound += f" ({row['epsilon_lower_bound_attack']})"
            cells = [
                "★" if row["pareto"] else "", name, _with_ci(row, utility), row["strongest_attack"] or "–",
                _with_ci(row, PRIVACY) + dagger, _with_ci(row, "auc"), _with_ci(row, "balanced_accuracy"),
                _num(row["epsilon"], 2), bound,
                f"{row['target_models']} ({row['seeds']} seed{'s' * (row['seeds'] > 1)})",
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines += _other_attackers(rows, common)
        resolvable = rows["min_resolvable_fpr"].dropna()
        if len(resolvable) and (resolvable > PRIVACY_FPR).any():
            lines += ["", f"† Some targets are audited on only {int(round(1 / resolvable.max()))} non-members "
                      f"(smallest resolvable FPR {format_value(round(100 * resolvable.max(), 2))} %): there the TPR at "
                      "0.1 % FPR is the TPR at FPR = 0."]
        lines.append("")
    return "\n".join(lines)


def _other_attackers(rows: pd.DataFrame, common: str) -> list[str]:
    """Markdown lines of the group's attackers beyond the outsider (:data:`THREATS`), if the store has any."""
    entries = []
    for _, row in rows.iterrows():
        name = row["defense"] + (f" [{row['options']}]" if row["options"] and not common else "")
        for threat in THREATS:
            if row.get(f"{threat}: attack"):
                entries.append([name, threat, row[f"{threat}: attack"],
                                *[_num(row[f"{threat}: {m}"]) for m in ATTACK_METRICS]])
    if not entries:
        return []
    header = ["defense", "attacker", "strongest attack", "TPR @ 0.1 % FPR", "AUC", "balanced accuracy"]
    lines = ["", "Attackers beyond the outsider (white-box: sees the weights; leaked samples: knows part of the "
             "target's training set and is scored on the rest; federated insider: sees every round's model):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in entry) + " |" for entry in entries]
    return lines


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
