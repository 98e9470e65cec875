"""The regression check that CI runs: compare the results store with a committed baseline, metric by metric.

The baseline (``results/baseline.csv``) has one row per setting × attack × metric (:data:`BASELINE_COLUMNS`):
the setting's labels (:mod:`bench.settings`), the attack (``-`` for the utility of the models), the metric, which
direction is better, the number of target models, the mean and its 95 % percentile-bootstrap CI over the targets.
Metrics: the utility (``test_accuracy``, or ``test_r2`` where the store has it; higher is better) and, per attack,
``auc``, ``tpr_at_fpr_0.1pct`` and ``balanced_accuracy`` (leakage: lower is better).

Tolerance rule: a metric regresses when its new mean lies outside the baseline's CI widened by an absolute
``slack``, in the bad direction — leakage ``new > ci_high + slack``, utility ``new < ci_low − slack`` — or when a
metric the baseline measured is no longer measured (NaN, e.g. an attack now skipped). Moves in the good direction
are reported as improvements and never fail the check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.leaderboard import ATTACK_METRICS, UTILITY_COLUMNS, mean_ci, model_rows, utility_column
from bench.settings import SETTING_COLUMNS, matches, setting_label
from privkernel.errors import BenchError

KEY_COLUMNS = (*SETTING_COLUMNS, "attack", "metric")
BASELINE_COLUMNS = (*KEY_COLUMNS, "better", "n", "mean", "ci_low", "ci_high")
NUMERIC_COLUMNS = ("n", "mean", "ci_low", "ci_high")
#: The attack column of the utility rows (utility belongs to the models, not to an attack).
MODEL = "-"
#: Default absolute slack added to the baseline's CI before a move counts as a regression.
DEFAULT_SLACK = 0.01


def better(metric: str) -> str:
    return "higher" if metric in UTILITY_COLUMNS else "lower"


def summarize(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The baseline table of labelled store rows: one row per setting × attack × metric."""
    out = []
    for setting, rows in df.groupby(list(SETTING_COLUMNS), sort=True, dropna=False):
        keys = dict(zip(SETTING_COLUMNS, setting, strict=True))
        utility = utility_column(rows)
        if utility is not None:
            models = model_rows(rows)
            mean, low, high = mean_ci(models[utility], n_boot, seed)
            out.append({**keys, "attack": MODEL, "metric": utility, "better": "higher", "n": len(models),
                        "mean": mean, "ci_low": low, "ci_high": high})
        attacks = rows[rows["attack"] != "union"]
        for attack, group in attacks.groupby("attack_key", sort=True):
            if "skipped" in group.columns:
                group = group[group["skipped"].isna()]
            for metric in ATTACK_METRICS:
                values = group[metric] if metric in group.columns else pd.Series(dtype=float)
                mean, low, high = mean_ci(values, n_boot, seed)
                out.append({**keys, "attack": attack, "metric": metric, "better": "lower",
                            "n": int(values.notna().sum()), "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=list(BASELINE_COLUMNS))


def read_baseline(path: Path | str) -> pd.DataFrame:
    """Read and validate a baseline CSV: exactly :data:`BASELINE_COLUMNS`, numeric values where numbers belong."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"no baseline at {path}; create it with `python -m bench check --baseline {path} "
                         "--update-baseline`")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise BenchError(f"the baseline {path} is empty; recreate it with --update-baseline") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read the baseline {path} ({exc}); recreate it with --update-baseline") from None
    missing = [c for c in BASELINE_COLUMNS if c not in table.columns]
    unexpected = [c for c in table.columns if c not in BASELINE_COLUMNS]
    if missing or unexpected:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
            ([f"unexpected column(s) {', '.join(unexpected)}"] if unexpected else [])
        raise BenchError(f"the baseline {path} has {'; '.join(parts)} (expected: {', '.join(BASELINE_COLUMNS)}); "
                         "recreate it with --update-baseline")
    if table.empty:
        raise BenchError(f"the baseline {path} has no rows; recreate it with --update-baseline")
    for column in NUMERIC_COLUMNS:
        text = table[column].str.strip()
        numbers = pd.to_numeric(text.replace({"": "nan"}), errors="coerce")
        bad = text[numbers.isna() & ~text.str.lower().isin(["", "nan"])]
        if len(bad):
            raise BenchError(f"the baseline {path}: column {column!r} has a non-number {bad.iloc[0]!r} on line "
                             f"{bad.index[0] + 2}; fix or recreate it with --update-baseline")
        if numbers.dtype.kind == "f":
            # pandas < 3 parses decimals up to an ulp off; float() is exact, so a rewritten baseline keeps its rows
            numbers = text.where(numbers.notna(), "nan").astype(float)
        table[column] = numbers
    duplicated = table.duplicated(list(KEY_COLUMNS))
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise BenchError(f"the baseline {path} repeats the row {' / '.join(str(row[c]) for c in KEY_COLUMNS)}; "
                         "recreate it with --update-baseline")
    return table[list(BASELINE_COLUMNS)]


def labels(table: pd.DataFrame) -> pd.Series:
    """The setting label of each row of a baseline-shaped table (what ``--cells`` is matched against)."""
    return setting_label(table)


def select(table: pd.DataFrame, cells: str | None) -> pd.DataFrame:
    return table[matches(labels(table), cells)] if cells is not None else table


def _describe(keys: set[tuple], limit: int = 4) -> str:
    shown = sorted(keys)[:limit]
    text = "; ".join(" / ".join(k[:3]) + (f" [{k[3]}]" if k[3] else "") + "".join(f" {x}" for x in k[4:])
                     for k in shown)
    return text + (f"; ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_same_cells(baseline: pd.DataFrame, current: pd.DataFrame, path: Path | str) -> None:
    """The baseline and the store must cover the same settings, attacks and metrics: say which differ."""
    def keyset(table: pd.DataFrame, columns) -> set[tuple]:
        return set(table[list(columns)].astype(str).itertuples(index=False, name=None))

    for columns, what in ((SETTING_COLUMNS, "settings"), (KEY_COLUMNS, "attacks/metrics")):
        old, new = keyset(baseline, columns), keyset(current, columns)
        if old != new:
            parts = []
            if old - new:
                parts.append(f"only in the baseline: {_describe(old - new)}")
            if new - old:
                parts.append(f"only in the store: {_describe(new - old)}")
            raise BenchError(f"the baseline {path} and the store cover different {what} ({'; '.join(parts)}); "
                             "rerun with --update-baseline if the change is intended")


def compare(baseline: pd.DataFrame, current: pd.DataFrame, slack: float = DEFAULT_SLACK) -> pd.DataFrame:
    """Every metric of ``current`` beside its baseline, with ``limit`` (the worst value tolerated), ``status``
    (``ok``, ``regression``, ``improvement``, ``unmeasured``: measured in the baseline, NaN now)."""
    merged = baseline.merge(current[list(KEY_COLUMNS) + ["mean", "n"]], on=list(KEY_COLUMNS),
                            suffixes=("", "_new"), how="inner")
    lower = merged["better"] == "lower"
    low = merged["ci_low"].fillna(merged["mean"])
    high = merged["ci_high"].fillna(merged["mean"])
    merged["limit"] = np.where(lower, high + slack, low - slack)
    new = merged["mean_new"]
    worse = np.where(lower, new > merged["limit"], new < merged["limit"])
    improved = np.where(lower, new < low - slack, new > high + slack)
    status = np.where(worse, "regression", np.where(improved, "improvement", "ok"))
    status = np.where(merged["mean"].notna() & new.isna(), "unmeasured", status)
    merged["status"] = status
    merged["delta"] = new - merged["mean"]
    return merged


def format_report(table: pd.DataFrame) -> str:
    """The rows of ``compare``'s table as aligned text."""
    shown = pd.DataFrame({
        "setting": labels(table),
        "attack": table["attack"],
        "metric": table["metric"] + " (" + table["better"] + " is better)",
        "baseline [95% CI]": [f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in
                              zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)],
        "new": table["mean_new"].map(lambda v: f"{v:.4f}"),
        "limit": table["limit"].map(lambda v: f"{v:.4f}"),
        "status": table["status"],
    })
    return shown.to_string(index=False)


def n_settings(table: pd.DataFrame) -> int:
    return len(table[list(SETTING_COLUMNS)].drop_duplicates())


def updated_baseline(current: pd.DataFrame, path: Path | str, cells: str | None) -> pd.DataFrame:
    """The baseline that ``--update-baseline`` writes: the store's summary; with ``--cells``, the existing
    baseline's rows of the settings not selected are kept."""
    table = current
    if cells is not None and Path(path).exists():
        old = read_baseline(path)
        kept = old[[not m for m in matches(labels(old), cells)]]
        table = pd.concat([kept, current], ignore_index=True) if len(kept) else current
    return table.sort_values(list(KEY_COLUMNS), kind="stable", ignore_index=True)


def write_baseline(summary: pd.DataFrame, path: Path | str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        summary.to_csv(tmp, index=False, columns=list(BASELINE_COLUMNS))
        tmp.replace(path)
    except OSError as exc:
        raise BenchError(f"cannot write the baseline {path} ({exc}); pass a writable path with --baseline") from None
    return path
