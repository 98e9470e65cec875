"""Executors: run cells in this process or in a local process pool; the driver alone writes the store."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from bench import stopping
from bench.pipeline import CellFailed, CellResult, run_cell
from bench.spec import Cell
from privkernel.errors import BenchError


@dataclass
class RunSummary:
    """What happened to the cells of one run."""

    done: int = 0
    cached: int = 0
    healed: int = 0  # unreadable cache entries set aside and recomputed
    failures: list[tuple[Cell, Exception]] = field(default_factory=list)
    #: The signal that stopped the run after its current stages (SIGINT, SIGTERM), or None.
    interrupted: int | None = None
    #: Cells that stopped midway or never started because of it (their finished stages are cached).
    unfinished: int = 0
    #: Cache entries the finished cells computed, by stage (the rest were read).
    computed: Counter[str] = field(default_factory=Counter)
    #: Seconds of the finished cells' own work per stage (``cell``: the cells' whole time).
    seconds: Counter[str] = field(default_factory=Counter)
    #: Each distinct warning the finished cells raised, and in how many cells.
    warnings: Counter[str] = field(default_factory=Counter)


def _init_worker(threads: int) -> None:
    """A pool worker takes its share of the cores: torch's threads and those of the OpenMP and BLAS libraries
    (scikit-learn's, NumPy's), so that the workers together do not oversubscribe the machine."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    stopping.install_in_worker()


Outcome = tuple[Cell, "CellResult | Exception"]
#: Seconds between two redraws of the progress bar for the stages of a cell.
STAGE_REFRESH = 0.5


def _in_process(cells: Sequence[Cell], run: dict[str, Any], *, on_stage: Callable[[Cell, str], None],
                **_: Any) -> Iterator[Outcome]:
    for cell in cells:
        if stopping.received() is not None:
            return
        try:
            yield cell, run_cell(cell, **run, on_stage=lambda stage, cell=cell: on_stage(cell, stage))
        except (CellFailed, BenchError, stopping.Interrupted) as exc:
            yield cell, exc


def _process_pool(cells: Sequence[Cell], run: dict[str, Any], *, workers: int, **_: Any) -> Iterator[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(run_cell, cell, **run): cell for cell in cells}
        for future in as_completed(futures):
            if stopping.received() is not None:  # cells not started yet are dropped; running ones stop soon
                for pending in futures:
                    pending.cancel()
            try:
                yield futures[future], future.result()
            except CancelledError:
                continue
            except (CellFailed, BenchError, stopping.Interrupted) as exc:
                yield futures[future], exc


def _ray(
    cells: Sequence[Cell], run: dict[str, Any], *, workers: int, ray_address: str | None,
    num_cpus: float, num_gpus: float, retries: int, **_: Any,
) -> Iterator[Outcome]:
    """Cells as Ray tasks asking for ``num_cpus``/``num_gpus``; a failed task is retried ``retries`` times."""
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'privbench[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if ray_address and ray_address != "auto":
            _check_reachable(ray_address)
        try:
            if ray_address:
                ray.init(address=ray_address, log_to_driver=False)
            else:  # a private local instance bound to localhost
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BenchError(
                f"cannot reach the Ray cluster at {ray_address!r} ({exc}); check --ray-address or omit it "
                "to start a local Ray"
            ) from None
    try:
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=retries, retry_exceptions=True)(run_cell)
        pending = {task.remote(cell, **run): cell for cell in cells}
        while pending:
            if stopping.received() is not None:  # Ray's workers are not ours to signal: cancel what is left
                for ref in pending:
                    ray.cancel(ref)
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if not ready:
                continue
            (ref,) = ready
            cell = pending.pop(ref)
            try:
                yield cell, ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, (CellFailed, BenchError)) else CellFailed(str(exc))
                yield cell, cause
            except ray.exceptions.RayError as exc:  # a worker or node died more often than the retries allow
                yield cell, CellFailed(f"cell {cell.label} failed on Ray: {type(exc).__name__}: {exc}")
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast with a clear message when nothing listens at a ``host:port`` Ray address."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise BenchError(
            f"cannot reach the Ray cluster at {address!r} ({exc}); check --ray-address (host:port of the head "
            "node) or omit it to start a local Ray"
        ) from None


#: ``--executor`` choices; ``local`` with ``--workers N > 1`` is the process pool.
EXECUTORS = {"local": _in_process, "processes": _process_pool, "ray": _ray}


def execute(
    cells: Sequence[Cell],
    on_result: Callable[[CellResult], None],
    *,
    cache_dir: str,
    force: bool = False,
    device: str = "cpu",
    workers: int = 1,
    executor: str = "local",
    progress: bool = True,
    ray_address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    retries: int = 1,
    strict: bool = False,
) -> RunSummary:
    """Run ``cells``, calling ``on_result`` in this (the driver) process as each one finishes.

    A failing cell is recorded in the summary and the others go on; finished cells are never lost. Executors:
    ``local`` runs in this process, or with ``workers > 1`` in a pool of spawned processes sharing torch's threads
    evenly; ``ray`` runs each cell as a Ray task (on a cluster at ``ray_address``, else a local Ray), every
    worker reading and writing the shared ``cache_dir``.
    """
    if executor == "local" and workers > 1:
        executor = "processes"
    run = {"cache_dir": cache_dir, "force": force, "device": device, "strict": strict}
    summary = RunSummary()
    bar = tqdm(total=len(cells), unit="cell", desc="cells", disable=not progress, dynamic_ncols=True)
    try:
        shown = [0.0]  # when the bar was last redrawn for a stage

        def on_stage(cell: Cell, stage: str) -> None:
            """This process's cells: the bar names the stage running, redrawn at most every STAGE_REFRESH seconds
            (a cell reads hundreds of cached stages in a second) and always for training, the long one."""
            now = time.monotonic()
            redraw = stage == "models" or now - shown[0] >= STAGE_REFRESH
            bar.set_postfix_str(f"{cell.label}: {stage}", refresh=redraw)
            if redraw:
                shown[0] = now

        with stopping.stop_after_stage():
            outcomes = EXECUTORS[executor](cells, run, workers=workers, ray_address=ray_address, num_cpus=num_cpus,
                                           num_gpus=num_gpus, retries=retries, on_stage=on_stage)
            for cell, outcome in outcomes:
                if isinstance(outcome, stopping.Interrupted):
                    continue
                if isinstance(outcome, Exception):
                    summary.failures.append((cell, outcome))
                else:
                    on_result(outcome)
                    summary.done += 1
                    summary.cached += outcome.cached
                    summary.healed += outcome.healed
                    summary.computed.update(outcome.computed)
                    summary.seconds.update({stage: t.seconds for stage, t in outcome.timings.items()})
                    summary.warnings.update(outcome.warnings)
                bar.set_postfix(cached=summary.cached, failed=len(summary.failures), refresh=False)
                bar.update()
            summary.interrupted = stopping.received()
    finally:
        bar.close()
    if summary.interrupted is not None:
        summary.unfinished = len(cells) - summary.done - len(summary.failures)
    return summary
