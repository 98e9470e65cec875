"""The results store: SQLite tables that pandas reads directly.

- ``results``: one row per cell × attack × target, every cell parameter and every metric a column;
- ``samples``: one row per cell × attack × target × audited record — the record's score, membership and label —
  from which per-class slices, unions of attacks and the riskiest records are computed without retraining.

Why SQLite: each finished cell is written in one transaction, so a run killed at any moment leaves the store as
it was before that cell (never a half-written file), and a rerun replaces the (cell, attack, target) rows it
recomputed instead of appending duplicates, keeping every other row. It ships with Python, and pandas reads it
directly::

    import sqlite3, pandas as pd
    df = pd.read_sql("SELECT * FROM results", sqlite3.connect("results/results.sqlite"))

- ``meta``: ``key``/``value`` pairs, among them ``schema_version`` (:data:`SCHEMA_VERSION`);
- ``runs``: one row per run of a grid (:class:`RunRecord`): its id, grid name and path, privbench version, command,
  start and end times, status (``running``, ``finished``, ``interrupted``, ``failed``), its cells and the cache
  entries it computed by stage. Every ``results`` row names the run that last wrote it (``run.id``, ``run.time``,
  ``run.grid``, ...), so :func:`prune_runs` can remove one run's rows, and only on request;
- ``grid_rows``: which (cell, attack) rows each grid has written, so that ``--grid NAME`` reads one grid's rows
  from a store that several grids share, cells they have in common included;
- ``stage_times``: per run, cell and stage, the seconds of the stage's own work and how many of its entries were
  computed and read (:class:`bench.rows.StageTime`; stage ``cell`` is the whole cell).

Columns are added as new parameters or metrics appear; their namespaces (identity, display labels, ``fact.`` and
``attack_fact.``, metrics, provenance ``run.``/``version.``) are described in :mod:`bench.rows`. Only the driver
process of a run writes the store; several runs may write one store at once (SQLite's write-ahead log lets readers
and one writer proceed together, and a writer waits for another's transaction).

Schema versions: 1 (no ``meta`` table) stored the facts that components report unprefixed (``epsilon`` beside
``defense.epsilon``) and no ``label.*`` columns; 2 prefixes them (``fact.epsilon``, ``attack_fact.lira_k_in``)
and stores the components' display labels. A store of another version is refused with the fix;
``python -m bench migrate`` upgrades a version-1 store in place (:func:`migrate_store`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import __version__
from bench.rows import ATTACK_FACT, FACT, LABEL, LABELLED, RUN, StageTime
from privkernel.errors import BenchError, did_you_mean

STORE_FILE = "results.sqlite"
TABLE = "results"
SAMPLES = "samples"
PRIMARY_KEY = ("cell_key", "attack_key", "target")
SAMPLE_COLUMNS = ("cell_key", "attack_key", "target", "record", "label", "member", "score")
META = "meta"
RUNS = "runs"
GRID_ROWS = "grid_rows"
STAGE_TIMES = "stage_times"
#: The version of the store's columns this code writes and reads; bump it (and extend :func:`migrate_store`)
#: whenever a change renames or reinterprets columns.
SCHEMA_VERSION = 2
#: Version 1 (unversioned) stores: the facts the training reported (DP-SGD, early stopping, the adversarial
#: regularizer) and the diagnostics the attacks reported, stored unprefixed.
V1_TRAINING_FACTS = (
    "epsilon", "delta", "noise_multiplier", "sample_rate", "steps",
    "stopped_epoch_mean", "best_epoch_mean", "stopped_early_fraction", "validation_members",
    "inference_gain", "inference_accuracy", "reference_members",
)
V1_ATTACK_FACTS = (
    "global_threshold", "global_no_signal", "classes_global_fallback", "classes_no_signal", "n_classes",
    "risk_classes_global_fallback", "label_only_no_out_refs", "rounds_seen",
    "lira_no_out_refs", "lira_few_out_refs", "lira_no_in_refs", "lira_few_in_refs", "lira_k_in", "lira_k_out",
    "rmia_n_population", "rmia_tuned_auc", "rmia_a", "rmia_no_out_refs",
)


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class RunRecord:
    """One run of a grid, as the ``runs`` table and the ``run.*`` columns of its rows record it."""

    id: str
    grid: str
    grid_path: str
    started: str
    privbench: str = __version__
    command: str = ""

    @classmethod
    def start(cls, grid: str, grid_path: str, command: Sequence[str] | None = None) -> RunRecord:
        """A new run: its id is the UTC start time and a random suffix (``20261202T134501Z-3fa9c2``)."""
        now = time.gmtime()
        argv = sys.argv if command is None else command
        return cls(f"{time.strftime('%Y%m%dT%H%M%SZ', now)}-{secrets.token_hex(3)}", grid, grid_path,
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", now), command=shlex.join(map(str, argv)))

    def columns(self) -> dict[str, str]:
        """The provenance columns of a row this run writes (``run.time`` is added when it is written)."""
        return {f"{RUN}id": self.id, f"{RUN}grid": self.grid, f"{RUN}grid_path": self.grid_path,
                f"{RUN}privbench": self.privbench}


class ResultsStore:
    """Replace the rows of finished cells in ``<results_dir>/results.sqlite``, recording the run that wrote them."""

    def __init__(self, results_dir: Path | str) -> None:
        self.path = store_path(results_dir)

    def check_writable(self) -> None:
        """Raise :class:`BenchError` unless the store can be created or opened for writing."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            try:
                probe = _quote(f"_probe_{os.getpid()}_{secrets.token_hex(4)}")  # runs sharing the store probe apart
                with db:
                    db.execute(f"CREATE TABLE {probe} (x)")
                    db.execute(f"DROP TABLE {probe}")
                check_schema(db, self.path)
            finally:
                db.close()
        except (OSError, sqlite3.Error) as exc:
            raise BenchError(
                f"cannot write the results store {self.path} ({exc}); pass a writable folder with --results"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=120)
        db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer, nor it them
        return db

    def _transaction(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body`` in one transaction on the created, schema-checked store; a failed write (a full disk, a
        read-only file) is a :class:`BenchError` naming the store, and leaves it as it was."""
        try:
            db = self._connect()
            try:
                with db:
                    check_schema(db, self.path)
                    _create_tables(db)
                    return body(db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise BenchError(f"cannot write the results store {self.path} ({exc}); it is as it was before this "
                             "write: free space there or pass another folder with --results") from None

    def begin_run(self, run: RunRecord, cells: int) -> None:
        """Record ``run`` as running over ``cells`` cells."""
        self._transaction(lambda db: db.execute(
            f"INSERT INTO {RUNS} (id, grid, grid_path, privbench, command, started, status, cells, done, failed) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, 0, 0)",
            (run.id, run.grid, run.grid_path, run.privbench, run.command, run.started, cells)))

    def end_run(self, run: RunRecord, status: str, done: int, failed: int, computed: Mapping[str, int]) -> None:
        """Record how ``run`` ended: its status, the cells done and failed, the cache entries computed by stage."""
        self._transaction(lambda db: db.execute(
            f"UPDATE {RUNS} SET finished = ?, status = ?, done = ?, failed = ?, computed = ? WHERE id = ?",
            (_now(), status, done, failed, json.dumps(dict(sorted(computed.items()))), run.id)))

    def write_cell(self, rows: Iterable[Mapping[str, Any]], samples: pd.DataFrame | None = None,
                   run: RunRecord | None = None, timings: Mapping[str, StageTime] | None = None) -> None:
        """Replace exactly the (cell, attack, target) rows in ``rows``, and their per-record samples, in one
        transaction, each row marked with ``run`` (its ``run.*`` columns), and record the cell's ``timings`` for
        the run. Rows of other attacks or targets of the same cell stay: a rerun with a shorter attack list, or
        another grid sharing the cell, never deletes what it did not recompute."""
        provenance = {**run.columns(), f"{RUN}time": _now()} if run is not None else {}
        rows = [{**r, **provenance} for r in rows]
        if rows:
            self._transaction(lambda db: self._replace(db, rows, samples, run, timings or {}))

    def _replace(self, db: sqlite3.Connection, rows: list[dict[str, Any]], samples: pd.DataFrame | None,
                 run: RunRecord | None, timings: Mapping[str, StageTime]) -> None:
        columns = list(dict.fromkeys(c for r in rows for c in r))
        replaced = sorted({tuple(r[c] for c in PRIMARY_KEY) for r in rows})
        existing = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
        for column in columns:
            if column not in existing:
                sample = next(r[column] for r in rows if column in r)
                db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {_quote(column)} {_sql_type(sample)}")
        where = " AND ".join(f"{_quote(c)} = ?" for c in PRIMARY_KEY)
        db.executemany(f"DELETE FROM {TABLE} WHERE {where}", replaced)
        db.executemany(f"DELETE FROM {SAMPLES} WHERE {where}", replaced)
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
        if run is not None:
            db.executemany(f"INSERT OR IGNORE INTO {GRID_ROWS} VALUES (?, ?, ?)",
                           sorted({(run.grid, r["cell_key"], r["attack_key"]) for r in rows}))
            cell_key = rows[0]["cell_key"]
            db.executemany(f"INSERT OR REPLACE INTO {STAGE_TIMES} VALUES (?, ?, ?, ?, ?, ?)",
                           [(run.id, cell_key, stage, t.seconds, t.computed, t.read) for stage, t in timings.items()])


def _create_tables(db: sqlite3.Connection) -> None:
    """Create what is missing of the current schema (every table and index; columns come with the rows)."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(f"INSERT OR IGNORE INTO {META} VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    pk = ", ".join(_quote(c) for c in PRIMARY_KEY)
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (cell_key TEXT, attack_key TEXT, target INTEGER, "
               f"PRIMARY KEY ({pk}))")
    db.execute(f"CREATE TABLE IF NOT EXISTS {SAMPLES} (cell_key TEXT, attack_key TEXT, target INTEGER, "
               "record INTEGER, label REAL, member INTEGER, score REAL)")
    db.execute("DROP INDEX IF EXISTS samples_cell")  # replaced by the row index below
    db.execute(f"CREATE INDEX IF NOT EXISTS samples_row ON {SAMPLES} (cell_key, attack_key, target)")
    db.execute(f"CREATE TABLE IF NOT EXISTS {RUNS} (id TEXT PRIMARY KEY, grid TEXT, grid_path TEXT, privbench TEXT, "
               "command TEXT, started TEXT, finished TEXT, status TEXT, cells INTEGER, done INTEGER, failed INTEGER, "
               "computed TEXT)")
    db.execute(f"CREATE TABLE IF NOT EXISTS {GRID_ROWS} (grid TEXT, cell_key TEXT, attack_key TEXT, "
               "PRIMARY KEY (grid, cell_key, attack_key))")
    db.execute(f"CREATE TABLE IF NOT EXISTS {STAGE_TIMES} (run_id TEXT, cell_key TEXT, stage TEXT, seconds REAL, "
               "computed INTEGER, read INTEGER, PRIMARY KEY (run_id, cell_key, stage))")


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def schema_version(db: sqlite3.Connection) -> int | None:
    """The schema version of an open store: None for an empty one, 1 for a store written before versions."""
    tables = _tables(db)
    if META in tables:
        found = db.execute(f"SELECT value FROM {META} WHERE key = 'schema_version'").fetchone()
        if found is not None:
            return int(found[0])
    return 1 if TABLE in tables else None


def check_schema(db: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`BenchError` unless the store at ``path`` is empty or of :data:`SCHEMA_VERSION`."""
    version = schema_version(db)
    if version is None or version == SCHEMA_VERSION:
        return
    if version < SCHEMA_VERSION:
        raise BenchError(
            f"the results store {path} has schema version {version} (this privbench reads version "
            f"{SCHEMA_VERSION}: facts prefixed fact./attack_fact., label.* columns); upgrade it in place with "
            f"`python -m bench migrate --results {path.parent}`"
        )
    raise BenchError(
        f"the results store {path} has schema version {version}, newer than the {SCHEMA_VERSION} this privbench "
        "reads; upgrade privbench or pass another folder with --results"
    )


def _read_table(results_dir: Path | str, table: str) -> pd.DataFrame:
    path = store_path(results_dir)
    if not path.is_file():
        raise BenchError(f"no results store at {path}; run `python -m bench grid --results {results_dir}` first")
    db = sqlite3.connect(path)
    try:
        check_schema(db, path)
        tables = _tables(db)
        if table not in tables:
            raise BenchError(f"the results store {path} has no {table!r} table; run `python -m bench grid` first")
        return pd.read_sql(f"SELECT * FROM {table}", db)
    finally:
        db.close()


def read_store(results_dir: Path | str, grid: str | None = None) -> pd.DataFrame:
    """The ``results`` table, one row per cell × attack × target, sorted by its key and column name; with ``grid``,
    only the rows that grid has written (:data:`GRID_ROWS`), shared cells included."""
    df = _read_table(results_dir, TABLE)
    if grid is not None:
        df = df.merge(_grid_rows(results_dir, grid), on=["cell_key", "attack_key"])
    df["target"] = df["target"].astype(int)
    # columns appear in the order cells finished: give them a stable order
    df = df[list(PRIMARY_KEY) + sorted(c for c in df.columns if c not in PRIMARY_KEY)]
    return df.sort_values(list(PRIMARY_KEY), ignore_index=True)


def without_provenance(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the ``run.*`` columns, which differ between two runs of the same code: what two stores
    must share to hold the same results."""
    return rows.drop(columns=[c for c in rows.columns if c.startswith(RUN)])


def _grid_rows(results_dir: Path | str, grid: str) -> pd.DataFrame:
    """The (cell_key, attack_key) pairs grid ``grid`` has written; an unknown grid is refused with the known ones."""
    path = store_path(results_dir)
    db = sqlite3.connect(path)
    try:
        if GRID_ROWS not in _tables(db):
            raise BenchError(f"the results store {path} does not record which grid wrote its rows (it predates "
                             "`--grid` filters); rerun the grid into it, or read it without --grid")
        pairs = pd.read_sql(f"SELECT cell_key, attack_key FROM {GRID_ROWS} WHERE grid = ?", db, params=(grid,))
        if pairs.empty:
            known = [r[0] for r in db.execute(f"SELECT DISTINCT grid FROM {GRID_ROWS} ORDER BY grid")]
            raise BenchError(f"no rows of grid {grid!r} in {path}{did_you_mean(grid, known)}; its grids: "
                             f"{', '.join(known) or 'none'} (see `python -m bench store --results {results_dir}`)")
        return pairs
    finally:
        db.close()


def list_runs(results_dir: Path | str) -> pd.DataFrame:
    """The ``runs`` table in the order the runs began, with ``rows``: how many ``results`` rows each run last
    wrote."""
    _read_table(results_dir, RUNS)  # the checks: a store, of this schema, with runs
    db = sqlite3.connect(store_path(results_dir))
    try:
        runs = pd.read_sql(f"SELECT * FROM {RUNS} ORDER BY rowid", db)
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
        if f"{RUN}id" in columns:
            counts = dict(db.execute(f"SELECT {_quote(RUN + 'id')}, COUNT(*) FROM {TABLE} GROUP BY 1").fetchall())
        else:
            counts = {}
    finally:
        db.close()
    runs["rows"] = runs["id"].map(counts).fillna(0).astype(int)
    return runs


def read_stage_times(results_dir: Path | str, run_id: str | None = None) -> pd.DataFrame:
    """The ``stage_times`` table (one run's with ``run_id``): ``run_id``, ``cell_key``, ``stage``, ``seconds``,
    ``computed``, ``read``."""
    times = _read_table(results_dir, STAGE_TIMES)
    return times if run_id is None else times[times["run_id"] == run_id].reset_index(drop=True)


def prune_runs(results_dir: Path | str, run_ids: Iterable[str], dry_run: bool = False) -> dict[str, int]:
    """Delete the runs ``run_ids``: the ``results`` rows each last wrote, their samples, and the runs' records, in
    one transaction; return the counts (``runs``, ``rows``, ``samples``). Rows another run rewrote since are that
    run's and stay. An unknown id is refused before anything is deleted. With ``dry_run`` only count."""
    path, ids = store_path(results_dir), list(dict.fromkeys(run_ids))
    known = set(list_runs(results_dir)["id"])
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise BenchError(f"no run {unknown[0]!r} in {path}{did_you_mean(unknown[0], known)}; list the runs with "
                         f"`python -m bench store --results {results_dir}`")
    db = sqlite3.connect(path, timeout=120)
    try:
        with db:
            marks = ", ".join("?" for _ in ids)
            run_id = _quote(f"{RUN}id")
            keys = f"SELECT cell_key, attack_key, target FROM {TABLE} WHERE {run_id} IN ({marks})"
            counts = {
                "runs": len(ids),
                "rows": db.execute(f"SELECT COUNT(*) FROM ({keys})", ids).fetchone()[0],
                "samples": db.execute(f"SELECT COUNT(*) FROM {SAMPLES} WHERE (cell_key, attack_key, target) IN "
                                      f"({keys})", ids).fetchone()[0],
            }
            if not dry_run:
                db.execute(f"DELETE FROM {SAMPLES} WHERE (cell_key, attack_key, target) IN ({keys})", ids)
                db.execute(f"DELETE FROM {TABLE} WHERE {run_id} IN ({marks})", ids)
                db.execute(f"DELETE FROM {RUNS} WHERE id IN ({marks})", ids)
                db.execute(f"DELETE FROM {STAGE_TIMES} WHERE run_id IN ({marks})", ids)
                db.execute(f"DELETE FROM {GRID_ROWS} WHERE NOT EXISTS (SELECT 1 FROM {TABLE} r WHERE "
                           f"r.cell_key = {GRID_ROWS}.cell_key AND r.attack_key = {GRID_ROWS}.attack_key)")
            return counts
    finally:
        db.close()


def read_samples(results_dir: Path | str, cell_key: str | None = None) -> pd.DataFrame:
    """The ``samples`` table (optionally one cell's): score, membership and label of every audited record."""
    df = _read_table(results_dir, SAMPLES)
    if cell_key is not None:
        df = df[df["cell_key"] == cell_key]
    df = df.astype({"target": int, "record": int, "member": bool})
    return df.sort_values(["cell_key", "attack_key", "target", "record"], ignore_index=True)


def _v1_label(family: str, row: pd.Series) -> str:
    """The display label of a version-1 row's ``family`` component, from its identity columns and the registry's
    defaults (as :meth:`bench.spec.ComponentSpec.label` wrote it in the ``cell`` column)."""
    from bench.spec import ComponentSpec
    from privkernel.registry import ARCHITECTURES, DATASETS, DEFENSES

    registry = {"dataset": DATASETS, "architecture": ARCHITECTURES, "defense": DEFENSES}[family]
    name, prefix = str(row[family]), f"{family}."
    given = {c[len(prefix):]: row[c] for c in row.index if c.startswith(prefix)}
    given = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in given.items()}
    if name not in registry:  # a plugin no longer installed: show every parameter it was run with
        return ComponentSpec.make(name, {k: v for k, v in given.items() if v is not None}).label()
    params, defaults = {}, {}
    for param in registry.get(name).params:
        value = given.get(param.name)
        if param.type is bool and value in (0, 1):  # SQLite stores booleans as integers
            value = bool(value)
        params[param.name] = param.validate(value, f"migrating {family} {name!r}") if value is not None else None
        defaults[param.name] = param.default
    return ComponentSpec.make(name, params, defaults).label()


def migrate_store(results_dir: Path | str) -> list[str]:
    """Upgrade a version-1 store in place to :data:`SCHEMA_VERSION`, in one transaction; returns what changed.

    The training's facts (:data:`V1_TRAINING_FACTS`) are renamed ``fact.<name>``, the attacks' diagnostics
    (:data:`V1_ATTACK_FACTS`) ``attack_fact.<name>``; the ``label.<family>`` display columns are added, each cell's
    from its identity columns and the registry's defaults; the ``meta`` table records the version. Metric values
    are not touched. A store already at the current version is left as it is.
    """
    path = store_path(results_dir)
    if not path.is_file():
        raise BenchError(f"no results store at {path}; nothing to migrate")
    db = sqlite3.connect(path, timeout=60)
    try:
        version = schema_version(db)
        if version is None or version == SCHEMA_VERSION:
            return []
        if version > SCHEMA_VERSION:
            check_schema(db, path)
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({TABLE})")]
        cells = pd.read_sql(f"SELECT * FROM {TABLE}", db).drop_duplicates("cell_key")
        labels = {family: [(_v1_label(family, row), row["cell_key"]) for _, row in cells.iterrows()]
                  for family in LABELLED}  # before any change: an unknown parameter leaves the store as it was
        changes = []
        db.isolation_level = None  # one explicit transaction: sqlite3 would commit each ALTER TABLE on its own
        db.execute("BEGIN")
        try:
            for prefix, names in ((FACT, V1_TRAINING_FACTS), (ATTACK_FACT, V1_ATTACK_FACTS)):
                for name in names:
                    if name in columns:
                        db.execute(f"ALTER TABLE {TABLE} RENAME COLUMN {_quote(name)} TO {_quote(prefix + name)}")
                        changes.append(f"{name} -> {prefix}{name}")
            for family, values in labels.items():
                column = f"{LABEL}{family}"
                if column not in columns:
                    db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {_quote(column)} TEXT")
                    changes.append(f"added {column}")
                db.executemany(f"UPDATE {TABLE} SET {_quote(column)} = ? WHERE cell_key = ?", values)
            db.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(f"INSERT OR REPLACE INTO {META} VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        changes.append(f"schema_version {version} -> {SCHEMA_VERSION}")
        return changes
    finally:
        db.close()
