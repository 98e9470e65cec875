"""The results store: SQLite tables that pandas reads directly.

- ``results``: one row per cell × attack × target, every cell parameter and every metric a column;
- ``samples``: one row per cell × attack × target × audited record — the record's score, membership and label —
  from which per-class slices, unions of attacks and the riskiest records are computed without retraining.

Why SQLite: each finished cell is written in one transaction, so a run killed at any moment leaves the store as
it was before that cell (never a half-written file), and a rerun replaces a cell's rows instead of appending
duplicates. It ships with Python, and pandas reads it directly::

    import sqlite3, pandas as pd
    df = pd.read_sql("SELECT * FROM results", sqlite3.connect("results/results.sqlite"))

Columns are added as new parameters or metrics appear. Only the driver process writes the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from privkernel.errors import BenchError

STORE_FILE = "results.sqlite"
TABLE = "results"
SAMPLES = "samples"
PRIMARY_KEY = ("cell_key", "attack_key", "target")
SAMPLE_COLUMNS = ("cell_key", "attack_key", "target", "record", "label", "member", "score")


def store_path(results_dir: Path | str) -> Path:
    return Path(results_dir) / STORE_FILE


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_type(value: Any) -> str:
    if isinstance(value, (bool, int)):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "TEXT"


class ResultsStore:
    """Replace the rows of finished cells in ``<results_dir>/results.sqlite``."""

    def __init__(self, results_dir: Path | str) -> None:
        self.path = store_path(results_dir)

    def check_writable(self) -> None:
        """Raise :class:`BenchError` unless the store can be created or opened for writing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            try:
                with db:
                    db.execute("CREATE TABLE IF NOT EXISTS _probe (x)")
                    db.execute("DROP TABLE _probe")
            finally:
                db.close()
        except (OSError, sqlite3.Error) as exc:
            raise BenchError(
                f"cannot write the results store {self.path} ({exc}); pass a writable folder with --results"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def write_cell(self, rows: Iterable[Mapping[str, Any]], samples: pd.DataFrame | None = None) -> None:
        """Replace the result rows and per-record samples of the cells in ``rows``, in one transaction."""
        rows = [dict(r) for r in rows]
        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        cell_keys = [(k,) for k in {r["cell_key"] for r in rows}]
        db = self._connect()
        try:
            with db:
                pk = ", ".join(_quote(c) for c in PRIMARY_KEY)
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (cell_key TEXT, attack_key TEXT, target INTEGER, "
                    f"PRIMARY KEY ({pk}))"
                )
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {SAMPLES} (cell_key TEXT, attack_key TEXT, target INTEGER, "
                    "record INTEGER, label REAL, member INTEGER, score REAL)"
                )
                db.execute(f"CREATE INDEX IF NOT EXISTS samples_cell ON {SAMPLES} (cell_key)")
                existing = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
                for column in columns:
                    if column not in existing:
                        sample = next(r[column] for r in rows if column in r)
                        db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {_quote(column)} {_sql_type(sample)}")
                db.executemany(f"DELETE FROM {TABLE} WHERE cell_key = ?", cell_keys)
                db.executemany(f"DELETE FROM {SAMPLES} WHERE cell_key = ?", cell_keys)
                placeholders = ", ".join("?" for _ in columns)
                db.executemany(
                    f"INSERT INTO {TABLE} ({', '.join(_quote(c) for c in columns)}) VALUES ({placeholders})",
                    [[r.get(c) for c in columns] for r in rows],
                )
                if samples is not None and len(samples):
                    db.executemany(
                        f"INSERT INTO {SAMPLES} VALUES ({', '.join('?' for _ in SAMPLE_COLUMNS)})",
                        samples[list(SAMPLE_COLUMNS)].itertuples(index=False, name=None),
                    )
        finally:
            db.close()


def _read_table(results_dir: Path | str, table: str) -> pd.DataFrame:
    path = store_path(results_dir)
    if not path.is_file():
        raise BenchError(f"no results store at {path}; run `python -m bench grid --results {results_dir}` first")
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if table not in tables:
            raise BenchError(f"the results store {path} has no {table!r} table; run `python -m bench grid` first")
        return pd.read_sql(f"SELECT * FROM {table}", db)
    finally:
        db.close()


def read_store(results_dir: Path | str) -> pd.DataFrame:
    """The ``results`` table, one row per cell × attack × target, sorted by its key and column name."""
    df = _read_table(results_dir, TABLE)
    df["target"] = df["target"].astype(int)
    # columns appear in the order cells finished: give them a stable order
    df = df[list(PRIMARY_KEY) + sorted(c for c in df.columns if c not in PRIMARY_KEY)]
    return df.sort_values(list(PRIMARY_KEY), ignore_index=True)


def read_samples(results_dir: Path | str, cell_key: str | None = None) -> pd.DataFrame:
    """The ``samples`` table (optionally one cell's): score, membership and label of every audited record."""
    df = _read_table(results_dir, SAMPLES)
    if cell_key is not None:
        df = df[df["cell_key"] == cell_key]
    df = df.astype({"target": int, "record": int, "member": bool})
    return df.sort_values(["cell_key", "attack_key", "target", "record"], ignore_index=True)
