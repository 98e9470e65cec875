"""What a *setting* of the results store is, how it is labelled, and how ``--cells`` selects cells.

A setting is a cell without its seed: a dataset, an architecture, a defense (each with its parameters), and the
training and protocol options. Reports (leaderboard, plots, regression check) pool the rows of every seed and
target of a setting. Settings are named by labels that depend on the setting alone, never on what else is in the
store, so a committed baseline still names the same settings after a grid grows:

- ``dataset``, ``architecture``, ``defense``: the component labels the store holds in ``label.dataset``,
  ``label.architecture`` and ``label.defense`` (``name`` or ``name(param=value,...)`` with the parameters that
  differ from their defaults), written with the rows and never parsed back into parameters;
- ``options``: the training and protocol parameters that differ from their defaults (``"epochs=60, ..."``).

Frontiers and the Pareto rule compare the settings of one *group*: one dataset × architecture.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from bench.rows import LABEL
from bench.spec import PROTOCOL_PARAMS
from privkernel.errors import BenchError
from targets.training import training_options

#: Columns naming a setting in every report table.
SETTING_COLUMNS = ("dataset", "architecture", "defense", "options")
#: Columns naming the group within which settings are compared (frontiers, Pareto rule).
GROUP_COLUMNS = ("dataset", "architecture")
FAMILIES = ("dataset", "architecture", "defense")

_OPTION_DEFAULTS = {
    **{f"training.{p.name}": p.default for p in training_options()},
    **{p.name: p.default for p in PROTOCOL_PARAMS},
}


def format_value(value: Any) -> str:
    """A parameter value as a label shows it (``64.0`` read back from SQLite shows as ``64``)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default) or format_value(value) == format_value(default)
    except (TypeError, ValueError):
        return False


def options_label(row: pd.Series) -> str:
    """The training and protocol parameters of a row that differ from their defaults, sorted by name."""
    shown = []
    for column, default in sorted(_OPTION_DEFAULTS.items(), key=lambda kv: kv[0].removeprefix("training.")):
        if column in row.index and not _missing(row[column]) and not _same(row[column], default):
            shown.append(f"{column.removeprefix('training.')}={format_value(row[column])}")
    return ", ".join(shown)


def label_settings(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of the store's rows with setting columns: the labels ``dataset``, ``architecture``, ``defense``
    and ``options`` (the store's component names move to ``dataset_name``, ... ), ``setting`` (one string) and
    ``group`` (``dataset / architecture``)."""
    label_columns = [f"{LABEL}{f}" for f in FAMILIES]
    missing = [c for c in ("cell_key", "target", "attack", *FAMILIES, *label_columns) if c not in df.columns]
    if missing:
        raise BenchError(f"the results store lacks the column(s) {', '.join(missing)}; rerun `python -m bench grid`")
    out = df.copy()
    # one options label per cell: compute on the first row of each cell and broadcast
    firsts = out.drop_duplicates("cell_key").set_index("cell_key")
    options = {key: options_label(row) for key, row in firsts.iterrows()}
    for family in FAMILIES:
        out[f"{family}_name"] = out[family].astype(str)
        out[family] = out["cell_key"].map(firsts[f"{LABEL}{family}"].astype(str))
    out["options"] = out["cell_key"].map(options)
    out["setting"] = setting_label(out)
    out["group"] = out["dataset"] + " / " + out["architecture"]
    return out


def setting_label(table: pd.DataFrame) -> pd.Series:
    """``dataset / architecture / defense`` with `` [options]`` when there are any."""
    base = table["dataset"] + " / " + table["architecture"] + " / " + table["defense"]
    opts = table["options"].fillna("")
    return base + opts.map(lambda o: f" [{o}]" if o else "")


def matches(labels: Iterable[str], pattern: str | None) -> list[bool]:
    """Which labels a ``--cells`` filter selects: comma-separated alternatives, each a substring of the label or,
    when it contains ``*`` or ``?``, a shell-style pattern matched against the whole label."""
    labels = list(labels)
    if pattern is None:
        return [True] * len(labels)
    alternatives = [p.strip() for p in pattern.split(",") if p.strip()]
    if not alternatives:
        raise BenchError("--cells is empty; give a substring of a cell label, e.g. --cells 'mlp / none'")

    def one(label: str) -> bool:
        return any(fnmatch.fnmatchcase(label, p) if any(ch in p for ch in "*?") else p in label
                   for p in alternatives)

    return [one(label) for label in labels]


def filter_cells(df: pd.DataFrame, pattern: str | None, column: str = "cell") -> pd.DataFrame:
    """The rows whose ``column`` label the ``--cells`` filter selects; a filter that selects nothing is an error."""
    if pattern is None:
        return df
    keep = matches(df[column].astype(str), pattern)
    if not any(keep):
        known = sorted(df[column].astype(str).unique())
        shown = "; ".join(known[:6]) + (f"; ... ({len(known)} in all)" if len(known) > 6 else "")
        raise BenchError(f"--cells {pattern!r} matches no {column} of the store; its {column}s are: {shown}")
    return df[keep]


def strengths(table: pd.DataFrame, param_columns: Iterable[str]) -> pd.Series:
    """The swept parameters of each setting: for each defense within a group, the ``defense.*`` parameters and
    options whose values differ between its settings, as ``"k=v, ..."`` ("" when the defense has one setting).

    ``table`` has one row per setting with the setting columns, ``defense_name`` and the ``param_columns``.
    """
    param_columns = [c for c in param_columns if c in table.columns]
    out = pd.Series("", index=table.index, dtype=object)
    for _, rows in table.groupby(["group", "defense_name"], sort=False):
        swept = []
        for column in param_columns:
            values = {format_value(v) for v in rows[column] if not _missing(v)}
            if len(values) > 1:
                swept.append(column)
        if rows["options"].nunique() > 1:
            swept.append("options")
        for index, row in rows.iterrows():
            parts = []
            for column in swept:
                if column == "options":
                    if row["options"]:
                        parts.append(row["options"])
                elif not _missing(row[column]):
                    parts.append(f"{column.removeprefix('defense.')}={format_value(row[column])}")
            out[index] = ", ".join(parts)
    return out
