"""Two results stores compared metric for metric: did a change of the code move any number?

Rows are matched on the store's key (cell, attack, target) and samples on (cell, attack, target, record). A number
differs when ``|a − b| > rtol · (1 + |a|)``; two NaNs, or two equal infinities, are equal. Text compares exactly.
The ``run.*`` columns (which run wrote a row, and when) are not compared. Both stores must have the current schema
(``python -m bench migrate`` upgrades an older one first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.store import PRIMARY_KEY, read_samples, read_store, without_provenance

SAMPLE_KEY = (*PRIMARY_KEY, "record")
SAMPLE_VALUES = ("score", "member", "label")


@dataclass
class StoreDiff:
    """What differs between an ``old`` and a ``new`` store.

    Attributes
    ----------
    rows_only_old, rows_only_new
        Keys ``(cell_key, attack_key, target)`` of the rows that only one store has.
    columns_only_old, columns_only_new
        Columns that only one store has.
    columns
        For every shared column with differing values on shared rows: the number of rows that differ.
    samples
        The same for the samples table's ``score``, ``member`` and ``label``, plus ``"unmatched"``: the samples
        that only one store has.
    examples
        Up to three ``(key, old, new)`` per differing column.
    """

    rows_only_old: list[tuple] = field(default_factory=list)
    rows_only_new: list[tuple] = field(default_factory=list)
    columns_only_old: list[str] = field(default_factory=list)
    columns_only_new: list[str] = field(default_factory=list)
    columns: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not (self.rows_only_old or self.rows_only_new or self.columns_only_old or self.columns_only_new
                    or self.columns or self.samples)

    def lines(self) -> list[str]:
        """The report, one line per finding."""
        out = []
        for side, keys in (("old", self.rows_only_old), ("new", self.rows_only_new)):
            if keys:
                out.append(f"{len(keys)} rows only in the {side} store, e.g. {keys[:3]}")
        for side, columns in (("old", self.columns_only_old), ("new", self.columns_only_new)):
            if columns:
                out.append(f"columns only in the {side} store: {', '.join(columns)}")
        for column, count in {**self.columns, **{f"samples.{k}": v for k, v in self.samples.items()}}.items():
            shown = "; ".join(f"{key}: {a!r} → {b!r}" for key, a, b in self.examples.get(column, []))
            out.append(f"{column}: {count} differ" + (f" ({shown})" if shown else ""))
        return out


def _differs(old: pd.Series, new: pd.Series, rtol: float) -> np.ndarray:
    """Elementwise: whether ``old`` and ``new`` (aligned) differ, numbers within ``rtol``, text exactly."""
    a, b = pd.to_numeric(old, errors="coerce"), pd.to_numeric(new, errors="coerce")
    numeric = (a.notna() | old.isna()) & (b.notna() | new.isna())
    x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        same_number = (np.isnan(x) & np.isnan(y)) | (x == y) | (np.abs(x - y) <= rtol * (1 + np.abs(x)))
    same_text = (old.isna() & new.isna()).to_numpy() | (old.astype(str) == new.astype(str)).to_numpy()
    return np.where(numeric.to_numpy(), ~same_number, ~same_text)


def compare_stores(old_dir: Path | str, new_dir: Path | str, *, rtol: float = 1e-6) -> StoreDiff:
    """Compare the stores in ``old_dir`` and ``new_dir`` (see the module docstring)."""
    diff = StoreDiff()
    key = list(PRIMARY_KEY)
    old, new = without_provenance(read_store(old_dir)), without_provenance(read_store(new_dir))
    merged = old.merge(new, on=key, how="outer", suffixes=("@old", "@new"), indicator=True)
    diff.rows_only_old = [tuple(r) for r in merged.loc[merged["_merge"] == "left_only", key].itertuples(index=False)]
    diff.rows_only_new = [tuple(r) for r in merged.loc[merged["_merge"] == "right_only", key].itertuples(index=False)]
    diff.columns_only_old = sorted(set(old.columns) - set(new.columns))
    diff.columns_only_new = sorted(set(new.columns) - set(old.columns))
    both = merged[merged["_merge"] == "both"]
    for column in sorted((set(old.columns) & set(new.columns)) - set(key)):
        bad = _differs(both[f"{column}@old"], both[f"{column}@new"], rtol)
        if bad.any():
            diff.columns[column] = int(bad.sum())
            diff.examples[column] = [(tuple(r[key]), r[f"{column}@old"], r[f"{column}@new"])
                                     for _, r in both[bad].head(3).iterrows()]
    old_s, new_s = read_samples(old_dir), read_samples(new_dir)
    samples = old_s.merge(new_s, on=list(SAMPLE_KEY), how="outer", suffixes=("@old", "@new"), indicator=True)
    unmatched = int((samples["_merge"] != "both").sum())
    if unmatched:
        diff.samples["unmatched"] = unmatched
    shared = samples[samples["_merge"] == "both"]
    for column in SAMPLE_VALUES:
        bad = _differs(shared[f"{column}@old"].astype(np.float64), shared[f"{column}@new"].astype(np.float64), rtol)
        if bad.any():
            diff.samples[column] = int(bad.sum())
    return diff
