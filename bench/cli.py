"""Command line: ``python -m bench grid|audit|list|leaderboard|plot|check``.

Exit codes: 0 success, 1 a cell failed while running (``check``: a metric regressed), 2 bad input (one line on
stderr naming the problem and the fix, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import __version__
from bench.audit import OUTPUT_ARRAYS
from privkernel.errors import BenchError, did_you_mean


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``, refused at parse time (so also with --dry-run)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _memory_size(text: str) -> int:
    """An argparse type: a memory size such as ``512M`` or ``4G`` (:func:`privkernel.memory.parse_size`)."""
    from privkernel.memory import parse_size

    try:
        return parse_size(text)
    except BenchError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("memory budget ")) from None


def _number_above(low: float, inclusive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number above ``low`` (or equal to it when ``inclusive``), refused at parse time."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'at least' if inclusive else 'above'} {low:g}, got {text}")
        return value

    return parse


GRID_FILTER_HELP = "only the rows of this grid (by name), when the store holds several grids' rows (see `bench store`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="privbench: how much do trained models leak about their training data, and which defense "
        "buys the most privacy for the least accuracy?",
    )
    parser.add_argument("--version", action="version", version=f"privbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    running = argparse.ArgumentParser(add_help=False)
    at_least_one, at_least_zero = _int_at_least(1), _int_at_least(0)
    positive, non_negative = _number_above(0, inclusive=False), _number_above(0, inclusive=True)
    running.add_argument("--cache-dir", metavar="DIR",
                         help="artifact cache (default: $PRIVBENCH_CACHE or ~/.cache/privbench)")
    running.add_argument("--results", default="results", metavar="DIR",
                         help="folder of the results store results.sqlite (default: %(default)s)")
    running.add_argument("--force", action="store_true", help="recompute every stage instead of reading the cache")
    running.add_argument("--strict", action="store_true",
                         help="stop a cell on an unreadable cache entry (exit 2) instead of setting it aside in "
                         "<cache>/quarantine and recomputing it")
    running.add_argument("--workers", type=at_least_one, default=1, metavar="N",
                         help="cells run at once: local processes, or the CPUs of a local Ray (default: 1)")
    running.add_argument("--executor", default="local", choices=("local", "ray"),
                         help="local: this process or a process pool; ray: Ray tasks (default: %(default)s)")
    running.add_argument("--ray-address", metavar="HOST:PORT",
                         help="an existing Ray cluster's head (default: start a local Ray bound to localhost)")
    running.add_argument("--num-cpus", type=positive, default=1.0, metavar="N",
                         help="CPUs per Ray task, above 0 (default: 1)")
    running.add_argument("--num-gpus", type=non_negative, default=None, metavar="N",
                         help="GPUs per Ray task (default: 1 with --device cuda, else 0)")
    running.add_argument("--retries", type=at_least_zero, default=1, metavar="N",
                         help="retries of a failed Ray task before it is reported (default: 1)")
    running.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                         help="where models train: cuda if available with auto (default: %(default)s)")
    running.add_argument("--memory-budget", type=_memory_size, metavar="SIZE",
                         help="memory that one cell's largest computations (per-sample gradients of DP-SGD, model "
                         "outputs) are chunked to fit, e.g. 2G; results agree to float rounding whatever it is "
                         "(default: half of the available memory, at most 1G, or of the GPU's with --device cuda)")
    running.add_argument("--quiet", action="store_true", help="no progress bar")
    running.add_argument("--verbose", action="store_true",
                         help="print each finished cell's seconds per stage, and the run's totals per stage")

    grid = sub.add_parser("grid", parents=[running],
                          help="run a grid of cells (datasets × architectures × defenses × attacks)")
    grid.add_argument("--grid", default="default", metavar="NAME|PATH",
                      help="a shipped grid (default, smoke, molecules, threats) or a YAML file (default: %(default)s)")
    grid.add_argument("--dry-run", action="store_true", help="print the cells and their count; run nothing")
    grid.add_argument("--no-report", action="store_true",
                      help="do not regenerate LEADERBOARD.md, leaderboard.csv and the figures in the results folder, "
                      "nor print the summary table, at the end of the run")

    report = sub.add_parser(
        "report", parents=[running],
        help="write a report: `report molecules` runs the molecule study's grid (from the cache when it can); "
        "`report model` writes a one-model privacy report from a grid cell (--cell) or bench audit's arrays "
        "(--outputs)",
    )
    report.add_argument("study", choices=("molecules", "model"),
                        help="molecules: the drug-discovery study; model: a one-model privacy report")
    report.add_argument("--grid", metavar="NAME|PATH",
                        help="molecules: the study's grid (default: molecules); model: only the rows of this grid "
                        "(by name) when several grids share the store")
    report.add_argument("--csv", metavar="FILE", help="run the study on your molecules: a CSV of SMILES and labels")
    report.add_argument("--smiles-col", default="smiles", metavar="COL",
                        help="SMILES column of --csv (default: %(default)s)")
    report.add_argument("--label-col", default="label", metavar="COL", help="label column of --csv (default: label)")
    report.add_argument("--out", metavar="DIR", help="where REPORT.md and plots go (default: RESULTS/molecules; "
                        "model: RESULTS/reports/<cell or file name>)")
    report.add_argument("--cell", metavar="FILTER",
                        help="model: the grid cell to report on, a substring of its label 'dataset / architecture / "
                        "defense / seed=N' or a shell pattern, selecting exactly one cell of the store")
    report.add_argument("--outputs", metavar="FILE.npz",
                        help="model: report on these outputs instead (the arrays of `bench audit`)")
    report.add_argument("--logits", action="store_true", help="model, --outputs: the outputs are logits")
    report.add_argument("--attacks", metavar="LABELS",
                        help="model, --outputs: comma-separated attack labels (default: as `bench audit`)")

    audit = sub.add_parser(
        "audit", help="attack outputs computed elsewhere (no training): a target, with reference or shadow models",
        description="Runs black-box attacks on the outputs in an .npz file and prints their metrics. Give reference "
        "models' outputs on the target's own records (LiRA, RMIA, BASE, BaVarIA), or shadow models' outputs on their "
        "own records (the classic setting: Song & Mittal's thresholds, LOSS, privacy risk, NN attack), or both. "
        "Arrays: "
        + "; ".join(f"{k}{'' if req else ' (optional)'} {meaning}" for k, (req, meaning) in OUTPUT_ARRAYS.items()),
    )
    audit.add_argument("--outputs", required=True, metavar="FILE.npz", help="the arrays described above")
    audit.add_argument("--logits", action="store_true", help="the outputs are logits, not probabilities")
    audit.add_argument("--attacks", metavar="LABELS",
                       help="comma-separated attack labels, with parameters as grids print them, e.g. "
                       "'loss,confidence(thresholds=global),rmia(mode=offline)' (default: every attack whose "
                       "attacker knows no part of the target's membership)")
    audit.add_argument("--calibration-models", type=int, default=None, metavar="K",
                       help="reference models audited in the target's place to choose the thresholds of attacks that "
                       "learn none of their own (default: 2, or R - 1 with R < 3 references)")
    audit.add_argument("--verbose", action="store_true", help="also print the per-class thresholds attacks learned")
    audit.add_argument("--csv", metavar="PATH", help="also write the metric table, thresholds included, as CSV")

    board = sub.add_parser(
        "leaderboard", help="write LEADERBOARD.md and leaderboard.csv from the results store (no training)",
        description="One row per dataset × architecture × defense setting (every seed and target pooled): test "
        "accuracy, the strongest attack (chosen on the calibration audits of non-target models: highest mean TPR at "
        "0.1 %% FPR, ties by AUC) scored on the targets, with its TPR at 0, 0.1 and 1 %% FPR and AUC (95 %% bootstrap "
        "CIs over target models), a bootstrap rank interval, a paired test against `none` on the same targets, "
        "accountant and empirical ε, Pareto-optimal rows marked.",
    )
    board.add_argument("--results", default="results", metavar="DIR",
                       help="folder of the results store results.sqlite (default: %(default)s)")
    board.add_argument("--out", metavar="DIR", help="where to write the two files (default: the --results folder)")
    board.add_argument("--grid", metavar="NAME", help=GRID_FILTER_HELP)

    plot = sub.add_parser(
        "plot", help="draw accuracy–privacy frontiers, ROC curves, per-class and privacy-risk figures (PNG + SVG)",
        description="Per dataset × architecture: the frontier of the strongest attack against test accuracy. Per "
        "cell (every cell --cells selects; without it the first seed of each setting): ROC curves, per-class "
        "vulnerability of the strongest attack, privacy-risk histogram with the riskiest records.",
    )
    plot.add_argument("--results", default="results", metavar="DIR",
                      help="folder of the results store results.sqlite (default: %(default)s)")
    plot.add_argument("--out", metavar="DIR", help="where to write the figures (default: <results>/plots)")
    plot.add_argument("--grid", metavar="NAME", help=GRID_FILTER_HELP)
    plot.add_argument("--cells", metavar="FILTER",
                      help="cells to plot: comma-separated substrings of the cell label 'dataset / architecture / "
                      "defense / seed=N', or shell patterns with * and ? matched against the whole label")
    plot.add_argument("--detail", metavar="FILTER",
                      help="cells that get ROC, per-class and risk figures (same syntax as --cells; default: "
                           "--cells, else the first seed of every setting); frontiers always show every setting")
    plot.add_argument("--per-target", action="store_true", help="one ROC curve per target instead of pooled")

    site = sub.add_parser(
        "site", help="write a static HTML site of the results store: the leaderboard and one page per cell",
        description="index.html: the leaderboard per dataset × architecture (sortable columns, rank intervals, "
        "the frontier figures); cells/*.html: per cell its attacks, ROC curves, per-class exposure, privacy risk "
        "and full spec. Plain HTML and CSS with relative links: open index.html from the disk or serve the folder "
        "from any static host.",
    )
    site.add_argument("--results", default="results", metavar="DIR",
                      help="folder of the results store results.sqlite (default: %(default)s)")
    site.add_argument("--out", metavar="DIR", help="folder of the site (default: <results>/site)")
    site.add_argument("--grid", metavar="NAME", help=GRID_FILTER_HELP)

    check = sub.add_parser(
        "check", help="compare the results store with a committed baseline; exit 1 on a regression",
        description="Per setting × attack: mean test accuracy and mean AUC, TPR at 0.1 %% FPR and balanced accuracy. "
        "A metric regresses when its new mean lies outside the baseline's 95 %% bootstrap CI widened by --slack, in "
        "the bad direction (leakage up, utility down). Exit 0: no regression; 1: regressions (printed); 2: bad input.",
    )
    check.add_argument("--baseline", required=True, metavar="CSV", help="the baseline file (e.g. results/baseline.csv)")
    check.add_argument("--results", default="results", metavar="DIR",
                       help="folder of the results store results.sqlite (default: %(default)s)")
    check.add_argument("--grid", metavar="NAME", help=GRID_FILTER_HELP)
    check.add_argument("--update-baseline", action="store_true",
                       help="rewrite the baseline from the store (with --cells: only the selected settings' rows)")
    check.add_argument("--cells", metavar="FILTER",
                       help="settings to check: comma-separated substrings of 'dataset / architecture / defense "
                       "[options]', or shell patterns with * and ?")
    check.add_argument("--slack", type=non_negative, default=0.01, metavar="X",
                       help="absolute slack added to the baseline's CI (default: %(default)s)")

    compare = sub.add_parser(
        "compare", help="compare two results stores metric for metric; exit 1 when any number differs",
        description="Matches rows on (cell, attack, target) and samples on (cell, attack, target, record), and lists "
        "missing rows, missing columns and every column whose values differ beyond --rtol (relative to 1 + |old|). "
        "Use it to show that a change of the code moved no number. Exit 0: identical; 1: differences; 2: bad input.",
    )
    compare.add_argument("old", metavar="OLD_DIR", help="folder of the reference store results.sqlite")
    compare.add_argument("new", metavar="NEW_DIR", help="folder of the store to compare with it")
    compare.add_argument("--rtol", type=float, default=1e-6, metavar="X",
                         help="relative tolerance of numbers (default: %(default)s)")

    migrate = sub.add_parser(
        "migrate", help="upgrade a results store written by an older privbench to the current columns, in place",
        description="Renames the facts that components report to their prefixed columns (epsilon → fact.epsilon, "
        "lira_k_in → attack_fact.lira_k_in, ...), adds the label.* display columns and records the schema version. "
        "Metric values are not touched; a store already current is left as it is.",
    )
    migrate.add_argument("--results", default="results", metavar="DIR",
                         help="folder of the results store results.sqlite (default: %(default)s)")

    store = sub.add_parser(
        "store", help="list the runs that wrote a results store, or prune runs' rows on request",
        description="`store` (or `store list`) lists every run with its id, grid, start, status and the rows it last "
        "wrote. `store prune --run ID` deletes the rows (and per-record samples) that run last wrote; nothing is "
        "ever deleted otherwise.",
    )
    store.add_argument("action", nargs="?", default="list", choices=("list", "prune"), help="default: list")
    store.add_argument("--results", default="results", metavar="DIR",
                       help="folder of the results store results.sqlite (default: %(default)s)")
    store.add_argument("--run", action="append", default=[], metavar="ID",
                       help="prune: a run id from `store list` (repeat for several)")
    store.add_argument("--dry-run", action="store_true", help="prune: say what would be deleted; delete nothing")

    cache = sub.add_parser(
        "cache", help="show the cache's size per stage, or prune entries no run has used for N days",
        description="`cache` (or `cache show`) prints entries, size and last use per stage. `cache prune "
        "--older-than DAYS` deletes the entries no run has read or written for that long (a rerun recomputes "
        "them); the quarantine is pruned the same way.",
    )
    cache.add_argument("action", nargs="?", default="show", choices=("show", "prune"), help="default: show")
    cache.add_argument("--cache-dir", metavar="DIR",
                       help="artifact cache (default: $PRIVBENCH_CACHE or ~/.cache/privbench)")
    cache.add_argument("--older-than", type=non_negative, metavar="DAYS",
                       help="prune: entries unused for at least this many days (required with prune)")
    cache.add_argument("--dry-run", action="store_true", help="prune: say what would be deleted; delete nothing")

    lst = sub.add_parser("list", help="list registered components with their parameters, and the training and "
                         "protocol options of a grid")
    lst.add_argument("family", nargs="?", metavar="FAMILY",
                     help="datasets, architectures, defenses, attacks or engines (default: all five), or a grid's "
                     "training or protocol options")
    lst.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from bench.api import OPTION_SECTIONS, components, options
    from privkernel.registry import REGISTRIES

    families = [*REGISTRIES, *OPTION_SECTIONS]
    if args.family is not None and args.family not in families:
        raise BenchError(
            f"unknown family {args.family!r}{did_you_mean(args.family, families)}; choose one of: "
            f"{', '.join(families)}"
        )
    # every component family by default; a grid's `training:` and `protocol:` options when named
    described = components(args.family) if args.family in (None, *REGISTRIES) else {}
    settings = options(args.family) if args.family in OPTION_SECTIONS else {}
    if args.json:
        print(json.dumps({**described, **settings}, indent=2))
        return 0
    for family, entries in described.items():
        print(f"{family}:")
        for comp in entries:
            print(f"  {comp['name']:<16} {comp['description']}")
            for p in comp["params"]:
                print(f"      {p['name']} ({p['type']}, default {p['default']!r}, {p['allowed']}): {p['help']}")
            for t in comp["tags"]:
                if family == "attacks" and t["name"] == "requires":  # a hook of the params: show what it asks for
                    from attacks.requirements import requirements_of

                    asked = requirements_of(REGISTRIES[family].get(comp["name"]))
                    print(f"      requires (at the defaults): {', '.join(map(repr, asked))}")
                elif t["set"]:
                    shown = "a function of the params; at the defaults " if t["per_params"] else ""
                    print(f"      tag {t['name']} ({t['type']}): {shown}{t['value']!r}")
    for family, params in settings.items():
        print(f"{family}:")
        for p in params:
            print(f"  {p['name']:<16} ({p['type']}, default {p['default']!r}, {p['allowed']}): {p['help']}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from bench.api import load

    grid = load(args.grid)
    if args.dry_run:
        for i, cell in enumerate(grid.cells, 1):
            attacks = ", ".join(a.label() for a in cell.attacks)
            print(f"{i:4d}  {cell.label}  [{cell.key}]  attacks: {attacks}")
        print(f"{len(grid.cells)} cells in grid {grid.name!r} ({grid.path}); {grid.n_excluded} excluded")
        return 0
    code = _run_grid(grid, args)
    if code == 0 and not args.no_report:
        _answer(grid, Path(args.results))
    return code


#: A third-party warning that cells raise, and what it means for the results (printed beside it once).
KNOWN_WARNINGS = {
    "Optimal order is the largest alpha": "DP-SGD's RDP accountant found its best order at the largest it tries: the "
    "ε it reports (fact.epsilon) is a valid upper bound, possibly looser than the tightest one",
}


def _answer(grid, results: Path) -> None:
    """End a run with its answer: regenerate the grid's LEADERBOARD.md, leaderboard.csv and figures in ``results``
    and print the compact table (:func:`bench.leaderboard.compact_summary`)."""
    from bench.leaderboard import build_leaderboard, compact_summary, read_rows, write_leaderboard
    from bench.plots import make_plots
    from bench.store import read_samples

    rows = read_rows(results, grid=grid.name)
    board = build_leaderboard(rows)
    markdown, _ = write_leaderboard(board, results, source=f"grid {grid.name!r} in {results}")
    samples = read_samples(results)
    written = make_plots(rows, board, samples[samples["cell_key"].isin(set(rows["cell_key"]))], results / "plots")
    print("\n".join(compact_summary(board)))
    print(f"full leaderboard: {markdown} (and leaderboard.csv); {len(written)} figures in {results / 'plots'}")


def _run_grid(grid, args: argparse.Namespace) -> int:
    """Run every cell of ``grid`` with the run options of ``args``, writing the store as cells finish."""
    from bench.api import execute_grid

    run = execute_grid(
        grid, cache_dir=args.cache_dir, results=args.results, workers=args.workers, device=args.device,
        force=args.force, executor=args.executor, progress=not args.quiet, ray_address=args.ray_address,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, retries=args.retries, announce=True, strict=args.strict,
        verbose=args.verbose,
    )
    summary = run.summary
    if summary.interrupted is not None:
        name = signal.Signals(summary.interrupted).name
        print(f"stopped by {name} after the current stages: {summary.done} finished cells are in {run.store} (run "
              f"{run.run_id}), every finished stage of the {summary.unfinished} unfinished ones is in the cache "
              f"{run.cache}; rerun the same command to resume", file=sys.stderr)
        return 128 + summary.interrupted
    healed = (f"; {summary.healed} corrupted cache entr{'y' if summary.healed == 1 else 'ies'} set aside in "
              f"{run.cache / 'quarantine'} and recomputed" if summary.healed else "")
    print(
        f"{summary.done} cells done ({summary.cached} entirely from the cache), {len(summary.failures)} failed, "
        f"in {run.seconds:.1f} s; results in {run.store}{healed}",
        file=sys.stderr,
    )
    if args.verbose and summary.seconds:
        per_stage = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in summary.seconds.items()
                              if stage != "cell")
        print(f"seconds per stage, all cells: {per_stage}; cells {summary.seconds['cell']:.1f} s "
              f"(table stage_times of {run.store}, run {run.run_id})", file=sys.stderr)
    for message, cells in summary.warnings.items():
        meaning = next((m for known, m in KNOWN_WARNINGS.items() if known in message), "")
        print(f"warning, in {cells} cell{'s' * (cells > 1)}: {message}" + (f" ({meaning})" if meaning else ""),
              file=sys.stderr)
    for _, exc in summary.failures:
        print(f"error: {exc}", file=sys.stderr)
    if any(isinstance(exc, BenchError) for _, exc in summary.failures):
        return 2
    return 1 if summary.failures else 0


def _split_labels(text: str) -> list[str]:
    """Comma-separated labels, where commas inside a label's parentheses separate its parameters."""
    labels, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            labels.append(current)
            current = ""
        else:
            current += char
    return [label.strip() for label in [*labels, current] if label.strip()]


def cmd_audit(args: argparse.Namespace) -> int:
    from bench.audit import AUDIT_COLUMNS, audit_table, load_outputs

    audit = load_outputs(args.outputs, logits=args.logits)
    names = _split_labels(args.attacks) if args.attacks is not None else None
    table = audit_table(audit, names, args.calibration_models)
    shown = [c for c in AUDIT_COLUMNS if c in table and (c != "knowledge" or (table[c] != "references").any())]
    parts = [f"{audit.n_models - 1} reference models"]
    if "shadow_outputs" in audit.shared:
        shadow = audit.shared["shadow_outputs"]
        parts.append(f"{len(shadow)} shadow model{'s' * (len(shadow) > 1)} on {shadow.shape[1]} shadow records "
                     f"({int(audit.shared['shadow_keep'].sum())} members)")
    print(f"audit of {args.outputs}: {audit.keep.shape[1]} records ({int(audit.keep[0].sum())} members), "
          + ", ".join(parts))
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    print("balanced_accuracy: at the thresholds an attack learned itself (learned_on), else at one chosen on the "
          "calibration audits; '-' where neither exists")
    if (table["knowledge"] != "references").any():
        print("knowledge 'leaked': the attacker was told part of the target's membership and is scored on the rest; "
              "it is not a black-box attacker")
    if args.verbose and "class_thresholds" in table:
        for _, row in table.dropna(subset=["class_thresholds"]).iterrows():
            print(f"{row['attack']} thresholds by class (class:threshold): {row['class_thresholds']}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from bench.store import list_runs, prune_runs, store_path

    if args.action == "prune":
        if not args.run:
            raise BenchError("store prune deletes only the runs named with --run ID; list them with "
                             f"`python -m bench store --results {args.results}`")
        counts = prune_runs(args.results, args.run, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {counts['rows']} rows and {counts['samples']} samples of {counts['runs']} run(s) from "
              f"{store_path(args.results)}")
        return 0
    if args.run:
        raise BenchError("--run selects runs to prune; use `store prune --run ID`")
    runs = list_runs(args.results)
    shown = runs[["id", "grid", "started", "finished", "status", "done", "failed", "cells", "rows"]]
    print(shown.to_string(index=False, na_rep="-"))
    print(f"{len(runs)} runs in {store_path(args.results)}; `rows`: the rows each run last wrote (a rerun takes over "
          "the rows it recomputes)")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from bench.cache import cache_usage, default_cache_dir, prune_unused

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.action == "prune":
        if args.older_than is None:
            raise BenchError("cache prune needs --older-than DAYS: entries no run has used for that many days")
        count, size = prune_unused(root, args.older_than, dry_run=args.dry_run)
        print(f"{'would delete' if args.dry_run else 'deleted'} {count} entries ({size / 1e6:.1f} MB) unused for "
              f"{args.older_than:g} days from {root}")
        return 0
    if args.older_than is not None:
        raise BenchError("--older-than selects entries to prune; use `cache prune --older-than DAYS`")
    usage = cache_usage(root)
    print(f"{'stage':<14} {'entries':>8} {'MB':>10}  last used")
    for stage in usage:
        days = "-" if stage.newest is None else \
            f"{(time.time() - stage.oldest) / 86400:.1f} to {(time.time() - stage.newest) / 86400:.1f} days ago"
        print(f"{stage.stage:<14} {stage.entries:>8} {stage.bytes / 1e6:>10.1f}  {days}")
    total = sum(s.bytes for s in usage)
    print(f"{sum(s.entries for s in usage)} files, {total / 1e6:.1f} MB in {root}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from bench.store import SCHEMA_VERSION, migrate_store, store_path

    changes = migrate_store(args.results)
    if not changes:
        print(f"{store_path(args.results)} is already at schema version {SCHEMA_VERSION}; nothing to do")
        return 0
    print(f"migrated {store_path(args.results)}:")
    for change in changes:
        print(f"  {change}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.api import leaderboard

    out = args.out or args.results
    board = leaderboard(args.results, out=out, grid=args.grid)
    print(f"wrote {Path(out) / 'LEADERBOARD.md'} and {Path(out) / 'leaderboard.csv'}: {len(board)} settings in "
          f"{board['group'].nunique()} dataset × architecture groups, {int(board['pareto'].sum())} Pareto-optimal")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard, read_rows
    from bench.settings import filter_cells
    from bench.store import read_samples

    rows = filter_cells(read_rows(args.results, grid=args.grid), args.cells)
    try:
        samples = read_samples(args.results)
        samples = samples[samples["cell_key"].isin(set(rows["cell_key"]))]
    except BenchError:  # a store without the samples table: frontiers only
        samples = None
    if samples is not None and samples.empty:
        samples = None
    from bench.plots import make_plots

    out = Path(args.out) if args.out else Path(args.results) / "plots"
    written = make_plots(rows, build_leaderboard(rows), samples, out, cells=args.detail or args.cells,
                         per_target=args.per_target)
    size = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} files ({size / 1e6:.2f} MB) in {out}"
          + ("" if samples is not None else "; the store has no per-record samples: frontiers only"))
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from bench.site import write_site

    out = Path(args.out) if args.out else Path(args.results) / "site"
    written = write_site(args.results, out, grid=args.grid)
    size, cells = sum(p.stat().st_size for p in written), len(written) - 3
    print(f"wrote {out / 'index.html'} and {cells} cell page{'s' * (cells != 1)} ({size / 1e6:.2f} MB in all); "
          "open it in a browser, no server needed")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import compare_stores

    diff = compare_stores(args.old, args.new, rtol=args.rtol)
    if diff.identical:
        print(f"identical: every row, column and sample of {args.new} equals {args.old} (rtol {args.rtol:g})")
        return 0
    print("\n".join(diff.lines()))
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    from bench.check import (
        check_same_cells,
        compare,
        format_report,
        n_settings,
        read_baseline,
        select,
        summarize,
        updated_baseline,
        write_baseline,
    )
    from bench.leaderboard import read_rows
    from bench.settings import filter_cells

    current = summarize(filter_cells(read_rows(args.results, grid=args.grid), args.cells, column="setting"))
    if args.update_baseline:
        table = updated_baseline(current, args.baseline, args.cells)
        path = write_baseline(table, args.baseline)
        print(f"wrote {path}: {len(table)} metrics of {n_settings(table)} settings")
        return 0
    baseline = select(read_baseline(args.baseline), args.cells)
    check_same_cells(baseline, current, args.baseline)
    table = compare(baseline, current, args.slack)
    bad = table[table["status"].isin(["regression", "unmeasured"])]
    improved = table[table["status"] == "improvement"]
    settings = n_settings(table)
    if len(bad):
        print(f"{len(bad)} regression(s) against {args.baseline} (new mean outside the baseline's 95 % CI widened "
              f"by {args.slack:g}, in the bad direction):")
        print(format_report(bad))
        return 1
    print(f"no regression: {len(table)} metrics of {settings} settings within tolerance of {args.baseline} "
          f"(baseline 95 % CI ± {args.slack:g})"
          + (f"; {len(improved)} improved beyond it (consider --update-baseline)" if len(improved) else ""))
    return 0


def cmd_report_model(args: argparse.Namespace) -> int:
    """A one-model privacy report, from a cell of the store (--cell) or from bench audit's arrays (--outputs)."""
    from bench.model_report import default_folder, from_outputs, from_store, write_report

    if (args.cell is None) == (args.outputs is None):
        raise BenchError("report model needs one of --cell FILTER (a grid cell of the store in --results) or "
                         "--outputs FILE.npz (the arrays of `bench audit`)")
    if args.outputs is not None:
        attacks = _split_labels(args.attacks) if args.attacks is not None else None
        audit = from_outputs(args.outputs, logits=args.logits, attacks=attacks)
        name = Path(args.outputs).stem
    else:
        audit = from_store(args.results, args.cell, grid=args.grid)
        name = audit.title
    report, written = write_report(audit, Path(args.out) if args.out else default_folder(args.results, name))
    tpr = report.identified["tpr_at_fpr_0.1pct"]
    print(f"at 0.1 % FPR the strongest attack ({report.strongest}) identifies about {tpr} of {report.members} "
          f"training records audited; wrote {written[0]} and {written[1]}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The molecule study: run its grid (on --csv molecules if given), then write the report from the store."""
    if args.study == "model":
        return cmd_report_model(args)
    from bench.grid import expand_grid, read_grid, resolve_grid_path
    from bench.store import read_samples, read_store
    from bench.study import molecule_study, write_report

    path = resolve_grid_path(args.grid or "molecules")
    raw = read_grid(path)
    if not isinstance(raw, dict):
        raise BenchError(f"grid {path}: a study's grid is a mapping with datasets, architectures, defenses and "
                         "attacks; see bench/grids/molecules.yaml")
    title = "Molecule study: ChEMBL activity (RDKit's CHEMBL2321810 assay)"
    if args.csv:
        if not Path(args.csv).is_file():
            raise BenchError(f"no CSV file {args.csv}; give the path of a CSV with SMILES and labels")
        datasets = raw.get("datasets")
        first = datasets[0] if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict) else {}
        params = first.get("params") if isinstance(first.get("params"), dict) else {}
        features = params.get("features", ["ecfp4"])  # the study grid's featurization, applied to the CSV
        raw["datasets"] = [{"name": "csv", "params": {"path": str(Path(args.csv).resolve()), "task": "classification",
                                                      "smiles_col": args.smiles_col, "label_col": args.label_col,
                                                      "features": features}}]
        raw["name"] = f"molecules-{Path(args.csv).stem}"
        title = f"Molecule study: {Path(args.csv).name}"
    grid = expand_grid(raw, path)
    code = _run_grid(grid, args)
    if code != 0:
        return code
    keys = {cell.key for cell in grid.cells}
    rows = read_store(args.results)
    rows = rows[rows["cell_key"].isin(keys)]
    samples = read_samples(args.results)
    study = molecule_study(rows, samples[samples["cell_key"].isin(keys)])
    out = Path(args.out) if args.out else Path(args.results) / ("molecules" if not args.csv else raw["name"])
    report = write_report(study, out, title)
    for finding in study.findings:
        print(f"{'HOLDS' if finding.holds else 'DOES NOT HOLD'}: {finding.claim}")
    print(f"wrote {report}")
    return 0


def _plugin_problems() -> list[str]:
    """Print, one line each, the installed plugins that could not be loaded (the other components did load)."""
    from privkernel.registry import plugin_problems

    lines = [problem.line() for problem in plugin_problems()]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return lines


COMMANDS = {
    "audit": cmd_audit, "cache": cmd_cache, "check": cmd_check, "compare": cmd_compare, "grid": cmd_grid,
    "leaderboard": cmd_leaderboard, "list": cmd_list, "migrate": cmd_migrate, "plot": cmd_plot, "report": cmd_report,
    "site": cmd_site, "store": cmd_store,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "memory_budget", None) is not None:  # read where chunks are sized, in this process or a worker
        from privkernel.memory import ENV

        os.environ[ENV] = str(args.memory_budget)
    try:
        problems = _plugin_problems()
        if problems and args.command != "list":  # `list` still shows what loaded, then exits 2
            return 2
        code = COMMANDS[args.command](args)
        return 2 if problems else code
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped early (`bench list | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit flush fails quietly
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished cells are in the store; rerun to resume from the cache", file=sys.stderr)
        return 130
