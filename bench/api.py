"""The Python API, published as :mod:`privbench`: what the command line does, as functions.

Each command of ``python -m bench`` is a thin layer over one of these functions, so a notebook and the command line
give the same numbers. Heavy libraries (torch, pandas, scikit-learn) are imported when a function runs, never when
the module is imported.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privkernel.errors import BenchError, did_you_mean

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from bench.executors import RunSummary
    from bench.grid import Grid
    from bench.pipeline import CellResult
    from bench.rows import StageTime

class CellsFailed(BenchError):
    """Some cells of a grid failed; the others finished and are in the store.

    Attributes
    ----------
    failures
        ``(cell, exception)`` of each failed cell.
    """

    def __init__(self, failures: Sequence[tuple[Any, BaseException]]) -> None:
        self.failures = list(failures)
        shown = "; ".join(f"{cell.label}: {exc}" for cell, exc in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        super().__init__(f"{len(self.failures)} cell(s) failed: {shown}{more}; the finished cells are in the store, "
                         "rerun to retry the failed ones from the cache")


@dataclass(frozen=True)
class GridRun:
    """What :func:`execute_grid` did: the grid, where it ran, and how each cell ended."""

    grid: Grid
    device: str
    store: Path
    summary: RunSummary
    seconds: float
    cache: Path
    run_id: str


def load(grid: str | os.PathLike[str] | Mapping[str, Any] | Grid) -> Grid:
    """A validated, expanded grid from a shipped grid's name, a YAML file's path, or the parsed content of one."""
    from bench.grid import Grid, expand_grid, load_grid

    if isinstance(grid, Grid):
        return grid
    if isinstance(grid, Mapping):
        return expand_grid(grid, Path(str(grid.get("name") or "grid")))
    if isinstance(grid, str | os.PathLike):
        return load_grid(grid)
    raise BenchError(f"a grid is a name, a path or a mapping, got {type(grid).__name__}")


def resolve_device(requested: str) -> str:
    """``cpu`` or ``cuda`` for ``auto``, ``cpu`` or ``cuda``; a CUDA request without a GPU is refused."""
    if requested not in ("auto", "cpu", "cuda"):
        raise BenchError(f"device must be auto, cpu or cuda, got {requested!r}")
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BenchError("device cuda was requested but torch sees no CUDA GPU; use --device cpu "
                         "(device=\"cpu\" in Python) or auto")
    return requested


def execute_grid(
    grid: str | os.PathLike[str] | Mapping[str, Any] | Grid,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] = "results",
    workers: int = 1,
    device: str = "auto",
    force: bool = False,
    executor: str = "local",
    progress: bool = False,
    ray_address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    retries: int = 1,
    announce: bool = False,
    strict: bool = False,
    verbose: bool = False,
) -> GridRun:
    """Run every cell of a grid, writing the results store as cells finish; failures are reported, not raised.

    The parameters are those of :func:`run_grid`, plus the Ray executor's (``ray_address``, ``num_cpus``,
    ``num_gpus``, ``retries``), ``announce`` (print the grid's size, device, cache and store on stderr) and
    ``verbose`` (print each finished cell's seconds per stage on stderr; the store keeps them in ``stage_times``).
    With ``strict`` an unreadable or mismatched cache entry fails its cell instead of being set aside in
    ``<cache>/quarantine`` and recomputed (:attr:`bench.executors.RunSummary.healed` counts those).
    """
    from bench.cache import Cache, default_cache_dir
    from bench.executors import execute
    from bench.store import ResultsStore, RunRecord

    if workers < 1:
        raise BenchError(f"workers must be at least 1, got {workers}")
    if retries < 0 or num_cpus <= 0 or (num_gpus is not None and num_gpus < 0):
        raise BenchError("retries and num_gpus must be non-negative and num_cpus positive")
    if executor not in ("local", "ray"):
        raise BenchError(f"executor must be local or ray, got {executor!r}")
    grid = load(grid)
    device = resolve_device(device)
    if executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise BenchError("the ray executor needs Ray: pip install 'privbench[ray]' (or use the local executor)")
    cache = Cache(cache_dir or default_cache_dir())
    cache.check_writable()
    cache.clean_temporaries()
    store = ResultsStore(results)
    store.check_writable()
    if announce:
        print(f"grid {grid.name!r}: {len(grid.cells)} cells on {device}; cache {cache.root}; store {store.path}",
              file=sys.stderr)
    start = time.perf_counter()
    record = RunRecord.start(grid.name, str(grid.path))
    store.begin_run(record, len(grid.cells))
    def finished(result: CellResult) -> None:
        store.write_cell(result.rows, result.samples, record, result.timings)
        if verbose:
            from tqdm import tqdm

            tqdm.write(f"{result.cell.label}: {format_timings(result.timings)}", file=sys.stderr)

    status, summary = "failed", None
    try:
        summary = execute(
            grid.cells, finished,
            cache_dir=str(cache.root), force=force, device=device, workers=workers, executor=executor,
            progress=progress, ray_address=ray_address, num_cpus=num_cpus,
            num_gpus=num_gpus if num_gpus is not None else float(device == "cuda"), retries=retries, strict=strict,
        )
        status = "interrupted" if summary.interrupted is not None else "failed" if summary.failures else "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if summary is None:  # stopped at once (a second Ctrl-C) or broken: what the cells did is unknown
            store.end_run(record, status, 0, 0, {})
        else:
            store.end_run(record, status, summary.done, len(summary.failures), summary.computed)
    return GridRun(grid, device, store.path, summary, time.perf_counter() - start, cache.root, record.id)


def format_timings(timings: Mapping[str, StageTime]) -> str:
    """``models 12.3 s (1 computed), scores 4.1 s (6 computed, 2 read), ...; cell 17.0 s``: seconds per stage."""
    def one(stage: str, t: StageTime) -> str:
        counts = ", ".join(f"{n} {what}" for n, what in ((t.computed, "computed"), (t.read, "read")) if n)
        return f"{stage} {t.seconds:.1f} s" + (f" ({counts})" if counts else "")

    stages = [one(stage, t) for stage, t in timings.items() if stage != "cell"]
    total = timings.get("cell")
    return ", ".join(stages) + (f"; cell {total.seconds:.1f} s" if total is not None else "")


def run_grid(
    grid: str | os.PathLike[str] | Mapping[str, Any] | Grid,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    workers: int = 1,
    device: str = "auto",
    force: bool = False,
    executor: str = "local",
    progress: bool = False,
    strict: bool = False,
) -> pd.DataFrame:
    """Run a grid and return its rows: one per cell × attack × target, as :func:`read_store` gives them.

    Parameters
    ----------
    grid
        A shipped grid's name (``"smoke"``, ``"default"``, ...), the path of a YAML grid file, or the parsed
        content of one (a mapping with ``datasets``, ``architectures``, ``defenses``, ``attacks``, ...).
    cache_dir
        The artifact cache; every stage already in it is read, not computed (default: ``$PRIVBENCH_CACHE`` or
        ``~/.cache/privbench``).
    results
        Folder of the results store ``results.sqlite`` that the rows are added to; ``None`` keeps them in a
        temporary store that is deleted once they are read.
    workers
        Cells run at once, in local processes (or the CPUs of a local Ray with ``executor="ray"``).
    device
        ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"`` or ``"cuda"``.
    force
        Recompute every stage instead of reading the cache.
    executor
        ``"local"`` (this process, or a process pool with ``workers > 1``) or ``"ray"``.
    strict
        Fail a cell on an unreadable cache entry instead of setting it aside in ``<cache>/quarantine`` and
        recomputing it.
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        The rows this grid's cells and attacks produced (a store shared with other grids, or holding other attacks
        of the same cells from earlier runs, keeps those).

    Raises
    ------
    BenchError
        For an invalid grid or option, before anything runs.
    CellsFailed
        When cells failed; the finished ones are in the store.
    KeyboardInterrupt
        When SIGINT or SIGTERM stopped the run after its current stages (see :mod:`bench.stopping`).
    """
    from bench.store import read_store

    with tempfile.TemporaryDirectory(prefix="privbench-") as scratch:
        run = execute_grid(grid, cache_dir=cache_dir, results=scratch if results is None else results,
                           workers=workers, device=device, force=force, executor=executor, progress=progress,
                           strict=strict)
        if run.summary.interrupted is not None:
            raise KeyboardInterrupt(f"the run stopped after its current stages; {run.summary.done} finished cells "
                                    "are in the store and a rerun resumes from the cache")
        if run.summary.failures:
            raise CellsFailed(run.summary.failures)
        rows = read_store(run.store.parent)
    produced = {(cell.key, label) for cell in run.grid.cells
                for label in [*(a.label() for a in cell.attacks), *(u.label() for u in cell.unions)]}
    mine = [key in produced for key in zip(rows["cell_key"], rows["attack_key"], strict=True)]
    return rows[mine].reset_index(drop=True)


def audit(
    target_outputs: np.ndarray,
    target_membership: np.ndarray,
    labels: np.ndarray,
    reference_outputs: np.ndarray | None = None,
    reference_membership: np.ndarray | None = None,
    *,
    shadow_outputs: np.ndarray | None = None,
    shadow_labels: np.ndarray | None = None,
    shadow_membership: np.ndarray | None = None,
    population_target_outputs: np.ndarray | None = None,
    population_reference_outputs: np.ndarray | None = None,
    population_labels: np.ndarray | None = None,
    features: np.ndarray | None = None,
    population_features: np.ndarray | None = None,
    logits: bool = False,
    attacks: Sequence[str] | None = None,
    calibration_models: int | None = None,
) -> pd.DataFrame:
    """Attack a model from outputs computed elsewhere (no training), as ``python -m bench audit`` does.

    Parameters
    ----------
    target_outputs
        ``[N, C]`` the target's probabilities (or logits, with ``logits=True``) on the ``N`` audited records.
    target_membership
        ``[N]`` 1 where the record is in the target's training set, else 0.
    labels
        ``[N]`` true class of each record, integers in ``[0, C)``.
    reference_outputs, reference_membership
        Optional ``[R, N, C]`` and ``[R, N]``: ``R`` reference models' outputs on the same records, and which
        records each trained on (what LiRA, RMIA, BASE and BaVarIA compare each record with).
    shadow_outputs, shadow_labels, shadow_membership
        Optional ``[S, Ns, C]``, ``[Ns]`` and ``[S, Ns]``: the classic setting, ``S`` shadow models (``S = 1`` is
        fine) scored on their own ``Ns`` records, on which Song & Mittal's thresholds, LOSS's threshold, the privacy
        risk histograms and the NN attack are learned.
    population_target_outputs, population_reference_outputs, population_labels
        Optional ``[P, C]``, ``[R, P, C]`` and ``[P]``: outputs on ``P`` records no model trained on (RMIA, QMIA).
    features, population_features
        Optional ``[N, F]`` and ``[P, F]``: the records' input features (QMIA).
    logits
        The outputs are logits, not probabilities.
    attacks
        Attack labels, with parameters as grids print them (``"confidence(thresholds=global)"``); default: every
        attack whose attacker knows no part of the target's membership.
    calibration_models
        Reference models audited in the target's place to choose the threshold of attacks that learn none
        (default: 2, or ``R − 1`` with fewer than 3 references).

    Returns
    -------
    pandas.DataFrame
        One row per attack: what the attacker knows, where it learned its thresholds, AUC, balanced accuracy, TPR at
        FPR 0, 0.1 % and 1 %, the empirical ε lower bound, the thresholds by class, or why it was skipped.
    """
    from bench.audit import audit_table, outputs_audit

    arrays = {"target_outputs": target_outputs, "target_membership": target_membership, "labels": labels,
              "reference_outputs": reference_outputs, "reference_membership": reference_membership,
              "shadow_outputs": shadow_outputs, "shadow_labels": shadow_labels, "shadow_membership": shadow_membership,
              "population_target_outputs": population_target_outputs,
              "population_reference_outputs": population_reference_outputs, "population_labels": population_labels,
              "features": features, "population_features": population_features}
    return audit_table(outputs_audit(arrays, logits=logits, source="the arrays"), attacks, calibration_models)


def read_store(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The results store in folder ``path``: one row per cell × attack × target, with every metric and setting."""
    from bench.store import read_store as read

    return read(path)


def read_samples(path: str | os.PathLike[str], cell_key: str | None = None) -> pd.DataFrame:
    """The per-record scores of the store in folder ``path`` (optionally of one cell): score, membership, label."""
    from bench.store import read_samples as read

    return read(path, cell_key)


def leaderboard(
    results: str | os.PathLike[str] | pd.DataFrame = "results", *, out: str | os.PathLike[str] | None = None,
    grid: str | None = None,
) -> pd.DataFrame:
    """The leaderboard: one row per dataset × architecture × defense setting, seeds and targets pooled.

    Parameters
    ----------
    results
        Folder of a results store, or its rows (:func:`read_store`, :func:`run_grid`).
    out
        Also write ``LEADERBOARD.md`` and ``leaderboard.csv`` into this folder.
    grid
        Only the rows this grid (by name) wrote, when the store holds several grids' rows.

    Returns
    -------
    pandas.DataFrame
        Test utility; the strongest attack, chosen on the calibration audits of non-target models and scored on
        the targets, with its TPR at 0, 0.1 and 1 % FPR, AUC and balanced accuracy (95 % bootstrap CIs over
        target models); the bootstrap rank interval (``rank``, ``rank_ci_low``, ``rank_ci_high``); the paired
        test against ``none`` on the same targets (``leakage_p``, ``leakage_lower``, ``utility_p``,
        ``utility_lower``); ε; and whether the row is Pareto-optimal.
    """
    import pandas as pd

    from bench.leaderboard import build_leaderboard, read_rows, write_leaderboard
    from bench.settings import label_settings

    if isinstance(results, pd.DataFrame):
        if grid is not None:
            raise BenchError("grid= selects the rows of a store folder; pass the folder, or select the rows yourself")
        if results.empty:
            raise BenchError("the rows are empty; run a grid first")
        rows, source = label_settings(results), "the given rows"
    else:
        rows = read_rows(results, grid=grid)
        source = str(results) if grid is None else f"grid {grid!r} in {results}"
    board = build_leaderboard(rows)
    if out is not None:
        write_leaderboard(board, out, source=source)
    return board


def components(family: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The registered components, privbench's own and every installed plugin's, with parameters and tags.

    Parameters
    ----------
    family
        ``datasets``, ``architectures``, ``defenses``, ``attacks`` or ``engines``; ``None`` for all.

    Returns
    -------
    dict
        Family → one description per component (``name``, ``description``, ``params``, ``tags``), as
        ``python -m bench list --json`` prints them.
    """
    from privkernel.registry import REGISTRIES

    families = list(REGISTRIES)
    if family is not None:
        if family not in REGISTRIES:
            raise BenchError(f"unknown family {family!r}{did_you_mean(family, families)}; choose one of: "
                             f"{', '.join(families)}")
        families = [family]
    return {f: [REGISTRIES[f].get(name).describe() for name in REGISTRIES[f].names()] for f in families}


#: The sections of a grid file that hold options rather than components.
OPTION_SECTIONS = ("training", "protocol")


def options(section: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The options of a grid's ``training:`` and ``protocol:`` sections, with types, defaults and allowed values.

    Parameters
    ----------
    section
        ``training`` (optimizer, learning rate and schedule, epochs, batch size, engine and the engines' own
        settings) or ``protocol`` (models per cell, targets, test share, calibration models); ``None`` for both.

    Returns
    -------
    dict
        Section → one description per option (``name``, ``type``, ``default``, ``allowed``, ``help``), as
        ``python -m bench list training --json`` prints them.
    """
    from bench.spec import PROTOCOL_PARAMS
    from targets.training import training_options

    if section is not None and section not in OPTION_SECTIONS:
        raise BenchError(f"unknown section {section!r}{did_you_mean(section, OPTION_SECTIONS)}; choose one of: "
                         f"{', '.join(OPTION_SECTIONS)}")
    params = {"training": training_options, "protocol": lambda: PROTOCOL_PARAMS}
    return {name: [p.describe() for p in params[name]()] for name in OPTION_SECTIONS if section in (None, name)}
