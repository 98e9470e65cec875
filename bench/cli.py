"""Command line: ``python -m bench grid|list``.

Exit codes: 0 success, 1 a cell failed while running, 2 bad input (one line on stderr naming the problem and
the fix, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from bench import __version__
from bench.audit import OUTPUT_ARRAYS
from bench.errors import BenchError, did_you_mean


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="privbench: how much do trained models leak about their training data, and which defense "
        "buys the most privacy for the least accuracy?",
    )
    parser.add_argument("--version", action="version", version=f"privbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grid = sub.add_parser("grid", help="run a grid of cells (datasets × architectures × defenses × attacks)")
    grid.add_argument("--grid", default="default", metavar="NAME|PATH",
                      help="a grid name under results/grids/ or a YAML file (default: %(default)s)")
    grid.add_argument("--dry-run", action="store_true", help="print the cells and their count; run nothing")
    grid.add_argument("--cache-dir", metavar="DIR",
                      help="artifact cache (default: $PRIVBENCH_CACHE or ~/.cache/privbench)")
    grid.add_argument("--results", default="results", metavar="DIR",
                      help="folder of the results store results.sqlite (default: %(default)s)")
    grid.add_argument("--force", action="store_true", help="recompute every stage instead of reading the cache")
    grid.add_argument("--workers", type=int, default=1, metavar="N",
                      help="run cells in N local processes (default: 1, in this process)")
    grid.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                      help="where models train: cuda if available with auto (default: %(default)s)")
    grid.add_argument("--quiet", action="store_true", help="no progress bar")

    audit = sub.add_parser(
        "audit", help="attack outputs computed elsewhere (no training): one target and its reference models",
        description="Runs black-box attacks on the outputs in an .npz file and prints their metrics. Arrays: "
        + "; ".join(f"{k}{'' if req else ' (optional)'} {meaning}" for k, (req, meaning) in OUTPUT_ARRAYS.items()),
    )
    audit.add_argument("--outputs", required=True, metavar="FILE.npz", help="the arrays described above")
    audit.add_argument("--logits", action="store_true", help="the outputs are logits, not probabilities")
    audit.add_argument("--attacks", metavar="NAMES", help="comma-separated attack names (default: every attack)")
    audit.add_argument("--calibration-models", type=int, default=2, metavar="K",
                       help="reference models audited in the target's place to choose thresholds (default: 2)")
    audit.add_argument("--csv", metavar="PATH", help="also write the metric table as CSV")

    lst = sub.add_parser("list", help="list registered components with their parameters")
    lst.add_argument("family", nargs="?", metavar="FAMILY",
                     help="datasets, architectures, defenses or attacks (default: all)")
    lst.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from bench.registry import REGISTRIES

    families = list(REGISTRIES)
    if args.family is not None:
        if args.family not in REGISTRIES:
            raise BenchError(
                f"unknown family {args.family!r}{did_you_mean(args.family, families)}; choose one of: "
                f"{', '.join(families)}"
            )
        families = [args.family]
    described = {f: [REGISTRIES[f].get(n).describe() for n in REGISTRIES[f].names()] for f in families}
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for family, components in described.items():
        print(f"{family}:")
        for comp in components:
            print(f"  {comp['name']:<16} {comp['description']}")
            for p in comp["params"]:
                print(f"      {p['name']} ({p['type']}, default {p['default']!r}, {p['allowed']}): {p['help']}")
    return 0


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was requested but torch sees no CUDA GPU; use --device cpu (or auto)")
    return requested


def cmd_grid(args: argparse.Namespace) -> int:
    from bench.cache import Cache, default_cache_dir
    from bench.grid import load_grid

    grid = load_grid(args.grid)
    if args.dry_run:
        for i, cell in enumerate(grid.cells, 1):
            attacks = ", ".join(a.label() for a in cell.attacks)
            print(f"{i:4d}  {cell.label}  [{cell.key}]  attacks: {attacks}")
        print(f"{len(grid.cells)} cells in grid {grid.name!r} ({grid.path}); {grid.n_excluded} excluded")
        return 0
    if args.workers < 1:
        raise BenchError(f"--workers must be at least 1, got {args.workers}")

    from bench.executors import execute
    from bench.store import ResultsStore

    device = _device(args.device)
    cache = Cache(args.cache_dir or default_cache_dir())
    cache.check_writable()
    store = ResultsStore(args.results)
    store.check_writable()

    print(f"grid {grid.name!r}: {len(grid.cells)} cells on {device}; cache {cache.root}; store {store.path}",
          file=sys.stderr)
    start = time.perf_counter()
    summary = execute(
        grid.cells,
        lambda result: store.write_cell([{**row, "grid": grid.name} for row in result.rows], result.samples),
        cache_dir=str(cache.root), force=args.force, device=device, workers=args.workers,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    print(
        f"{summary.done} cells done ({summary.cached} entirely from the cache), {len(summary.failures)} failed, "
        f"in {elapsed:.1f} s; results in {store.path}",
        file=sys.stderr,
    )
    for _, exc in summary.failures:
        print(f"error: {exc}", file=sys.stderr)
    if any(isinstance(exc, BenchError) for _, exc in summary.failures):
        return 2
    return 1 if summary.failures else 0


def cmd_audit(args: argparse.Namespace) -> int:
    import pandas as pd

    from bench.audit import calibration_models, load_outputs, score_target, skip_reason, target_metrics
    from bench.registry import ATTACKS
    from bench.spec import ComponentSpec

    audit = load_outputs(args.outputs, logits=args.logits)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()] if args.attacks else ATTACKS.names()
    if not names:
        raise BenchError("--attacks names no attack; give comma-separated names from `python -m bench list attacks`")
    k = args.calibration_models
    if not 1 <= k <= audit.n_models - 1:
        raise BenchError(f"--calibration-models must be between 1 and the {audit.n_models - 1} reference models")
    calibration = calibration_models(audit.n_models, 0, k)
    rows = []
    for name in names:
        component = ATTACKS.get(name)
        row: dict = {"attack": name}
        reason = skip_reason(component, "probabilities", audit.population_outputs is not None, can_query=False)
        if reason:
            row["skipped"] = reason
        else:
            spec = ComponentSpec.make(name, component.validate({}), component.validate({}))
            row.update(target_metrics(score_target(spec, audit, 0, calibration), audit.keep, 0, calibration))
        rows.append(row)
    table = pd.DataFrame(rows)
    shown = [c for c in ("attack", "auc", "balanced_accuracy", "tpr_at_fpr_0", "tpr_at_fpr_0.1pct", "tpr_at_fpr_1pct",
                         "epsilon_lower_bound", "skipped") if c in table]
    print(f"audit of {args.outputs}: {audit.keep.shape[1]} records ({int(audit.keep[0].sum())} members), "
          f"{audit.n_models - 1} reference models")
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


COMMANDS = {"audit": cmd_audit, "grid": cmd_grid, "list": cmd_list}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are in the store; rerun to resume from the cache", file=sys.stderr)
        return 130
