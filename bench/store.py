"""The results store: one SQLite table, one row per cell × attack × target.

Why SQLite: each finished cell is written in one transaction, so a run killed at any moment leaves the store
as it was before that cell (never a half-written file), and a rerun replaces a cell's rows instead of appending
duplicates. It ships with Python, and pandas reads it directly::

    import sqlite3, pandas as pd
    df = pd.read_sql("SELECT * FROM results", sqlite3.connect("results/results.sqlite"))

Columns are added as new parameters or metrics appear, so every cell parameter and every metric is a column.
Only the driver process writes the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError

STORE_FILE = "results.sqlite"
TABLE = "results"
PRIMARY_KEY = ("cell_key", "attack_key", "target")


def store_path(results_dir: Path | str) -> Path:
    return Path(results_dir) / STORE_FILE


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_type(value: Any) -> str:
    if isinstance(value, bool) or isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "TEXT"


class ResultsStore:
    """Append/replace rows of finished cells in ``<results_dir>/results.sqlite``."""

    def __init__(self, results_dir: Path | str) -> None:
        self.path = store_path(results_dir)

    def check_writable(self) -> None:
        """Raise :class:`BenchError` unless the store can be created or opened for writing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("CREATE TABLE IF NOT EXISTS _probe (x)")
                db.execute("DROP TABLE _probe")
        except (OSError, sqlite3.Error) as exc:
            raise BenchError(
                f"cannot write the results store {self.path} ({exc}); pass a writable folder with --results"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=DELETE")
        return db

    def write_cell(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the rows of one cell, atomically (one transaction)."""
        rows = [dict(r) for r in rows]
        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        db = self._connect()
        try:
            with db:
                pk = ", ".join(_quote(c) for c in PRIMARY_KEY)
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} "
                    f"({', '.join(f'{_quote(c)} TEXT' for c in PRIMARY_KEY)}, PRIMARY KEY ({pk}))"
                )
                existing = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
                for column in columns:
                    if column not in existing:
                        sample = next(r[column] for r in rows if column in r)
                        db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {_quote(column)} {_sql_type(sample)}")
                cell_keys = {r["cell_key"] for r in rows}
                db.executemany(f"DELETE FROM {TABLE} WHERE cell_key = ?", [(k,) for k in cell_keys])
                placeholders = ", ".join("?" for _ in columns)
                db.executemany(
                    f"INSERT INTO {TABLE} ({', '.join(_quote(c) for c in columns)}) VALUES ({placeholders})",
                    [[r.get(c) for c in columns] for r in rows],
                )
        finally:
            db.close()


def read_store(results_dir: Path | str) -> pd.DataFrame:
    """The store as a DataFrame, one row per cell × attack × target, sorted by its key and column name."""
    path = store_path(results_dir)
    if not path.is_file():
        raise BenchError(f"no results store at {path}; run `python -m bench grid --results {results_dir}` first")
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if TABLE not in tables:
            raise BenchError(f"the results store {path} is empty; run `python -m bench grid` first")
        df = pd.read_sql(f"SELECT * FROM {TABLE}", db)
    finally:
        db.close()
    df["target"] = df["target"].astype(int)
    # columns appear in the order cells finished: give them a stable order
    df = df[list(PRIMARY_KEY) + sorted(c for c in df.columns if c not in PRIMARY_KEY)]
    return df.sort_values(list(PRIMARY_KEY), ignore_index=True)
