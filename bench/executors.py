"""Executors: run cells in this process or in a local process pool; the driver alone writes the store."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from bench.errors import BenchError
from bench.pipeline import CellFailed, CellResult, run_cell
from bench.spec import Cell


@dataclass
class RunSummary:
    """What happened to the cells of one run."""

    done: int = 0
    cached: int = 0
    failures: list[tuple[Cell, Exception]] = field(default_factory=list)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def execute(
    cells: Sequence[Cell],
    on_result: Callable[[CellResult], None],
    *,
    cache_dir: str,
    force: bool = False,
    device: str = "cpu",
    workers: int = 1,
    progress: bool = True,
) -> RunSummary:
    """Run ``cells``, calling ``on_result`` in this (the driver) process as each one finishes.

    A failing cell is recorded in the summary and the others go on; finished cells are never lost.
    With ``workers > 1`` the cells run in a pool of spawned processes sharing ``torch``'s threads evenly.
    """
    summary = RunSummary()
    bar = tqdm(total=len(cells), unit="cell", desc="cells", disable=not progress, dynamic_ncols=True)

    def finished(result: CellResult) -> None:
        on_result(result)
        summary.done += 1
        summary.cached += result.cached
        bar.set_postfix(cached=summary.cached, failed=len(summary.failures), refresh=False)
        bar.update()

    def failed(cell: Cell, exc: Exception) -> None:
        summary.failures.append((cell, exc))
        bar.set_postfix(cached=summary.cached, failed=len(summary.failures), refresh=False)
        bar.update()

    try:
        if workers <= 1:
            for cell in cells:
                try:
                    result = run_cell(cell, cache_dir, force, device)
                except (CellFailed, BenchError) as exc:
                    failed(cell, exc)
                else:
                    finished(result)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
            ) as pool:
                futures = {pool.submit(run_cell, cell, cache_dir, force, device): cell for cell in cells}
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except (CellFailed, BenchError) as exc:
                        failed(futures[future], exc)
                    else:
                        finished(result)
    finally:
        bar.close()
    return summary
