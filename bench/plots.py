"""Figures from the results store: accuracy–privacy frontiers, ROC curves, per-class vulnerability, privacy risk.

Each figure has a function that computes what it plots (tested on hand-made stores) and one that draws it with
matplotlib's Agg backend, writing a PNG and an SVG:

- ``frontier_<dataset>__<architecture>``: per dataset × architecture group, the privacy of the strongest attack
  against test accuracy, one curve per defense through its settings (labelled with the swept parameter), the
  undefended point (a star), DP-SGD points labelled with the accountant's ε, and the Pareto staircase; left panel
  TPR at 0.1 % FPR on a log axis, right panel the AUC of the attack with the highest AUC;
- ``roc_<cell>``: ROC curves of every attack of a cell on log–log axes with the random-guess diagonal;
- ``per_class_<cell>``: AUC and TPR at FPR = 0 of the cell's strongest attack on each class, minority classes
  flagged (:func:`bench.metrics.per_class_metrics`);
- ``risk_<cell>``: histogram of the ``privacy_risk`` attack's scores (members vs non-members) and the riskiest
  records, also written to ``risk_<cell>.txt``.

matplotlib is imported when the first figure is drawn (:func:`pyplot`), not with this module, so that the
computing functions need none of it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.leaderboard import (
    PRIVACY,
    PRIVACY_FPR,
    UTILITY_NAMES,
    attack_summary,
    mean_ci,
    pareto_mask,
    strongest,
)
from bench.metrics import per_class_metrics, roc_curve, trapezoid
from bench.settings import format_value, matches
from privkernel.errors import BenchError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

#: The privacy axes of a frontier: leaderboard column of the value, of its CI bounds, and the axis label.
FRONTIER_METRICS = {
    "tpr": (PRIVACY, "TPR at 0.1 % FPR of the strongest attack (log scale)"),
    "auc": ("strongest_auc", "AUC of the strongest attack (by AUC)"),
}
UNDEFENDED = "none"
RISK_ATTACK = "privacy_risk"
FORMATS = ("png", "svg")

#: matplotlib settings of every figure, applied by :func:`pyplot`.
STYLE = {
    "svg.hashsalt": "privbench",  # stable ids: the same figure gives the same SVG
    "svg.fonttype": "none",  # text as text, not glyph paths: smaller, searchable SVGs
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.dpi": 100,
}


@functools.cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend with :data:`STYLE`, imported on the first call (the first figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def slug(label: str) -> str:
    """A file-name part from a label: ``breast_cancer / mlp(width=256)`` → ``breast_cancer__mlp_width-256``."""
    text = label.replace(" / ", "__").replace("=", "-")
    return re.sub(r"_{3,}", "__", re.sub(r"[^A-Za-z0-9._-]+", "_", text)).strip("_")


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``fig`` as ``name.png`` and ``name.svg`` (without timestamps, so reruns give the same files)."""
    plt = pyplot()
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(path, format=fmt, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


# --- frontier -------------------------------------------------------------------------------------------------


def _strength_key(row: pd.Series, columns: list[str]) -> tuple:
    key = []
    for column in columns:
        value = row.get(column)
        if isinstance(value, (int, float, np.number)) and np.isfinite(value):
            key.append((0, float(value), ""))
        elif value is None or (isinstance(value, float) and np.isnan(value)):
            key.append((2, 0.0, ""))
        else:
            key.append((1, 0.0, str(value)))
    return (*key, row["strength"], row["setting"])


def frontier_points(board: pd.DataFrame, metric: str = "tpr") -> pd.DataFrame:
    """The points of one group's frontier (``board``: its leaderboard rows) for the privacy ``metric``
    (``"tpr"`` or ``"auc"``): columns ``defense_name``, ``strength``, ``utility`` with its CI, ``privacy`` with
    its CI, ``pareto`` (on this metric), ``undefended``, ``dp`` (an accountant ε is known) and ``epsilon``;
    sorted by defense (the undefended first) and, within a defense, by its swept parameters."""
    column, _ = FRONTIER_METRICS[metric]
    utility = board["utility_metric"].iloc[0] if len(board) else "test_accuracy"
    params = sorted(c for c in board.columns if c.startswith("defense."))
    points = pd.DataFrame({
        "setting": board["setting"], "defense": board["defense"], "defense_name": board["defense_name"],
        "strength": board["strength"].fillna(""),
        "utility": board["utility"],
        "utility_ci_low": board.get(f"{utility}_ci_low", board["utility"]),
        "utility_ci_high": board.get(f"{utility}_ci_high", board["utility"]),
        "privacy": board[column],
        "privacy_ci_low": board.get(f"{column}_ci_low", board[column]),
        "privacy_ci_high": board.get(f"{column}_ci_high", board[column]),
        "epsilon": board.get("epsilon", pd.Series(np.nan, index=board.index)),
    })
    for c in params:
        points[c] = board[c]
    points["undefended"] = points["defense_name"] == UNDEFENDED
    points["dp"] = points["epsilon"].notna()
    points["pareto"] = pareto_mask(points["utility"], points["privacy"])
    keys = {i: (not row["undefended"], row["defense_name"], _strength_key(row, params)) for i, row in points.iterrows()}
    order = sorted(points.index, key=lambda i: keys[i])
    return points.loc[order].drop(columns=params).reset_index(drop=True)


def pareto_staircase(utility: Iterable[float], privacy: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the Pareto staircase: the least leakage attainable at each utility or more.

    From the Pareto-optimal points sorted by utility, the line rises at each point's utility to that point's
    leakage and runs flat to the next point: ``(u1, p1), (u1, p2), (u2, p2), (u2, p3), (u3, p3), ...``.
    """
    utility, privacy = np.asarray(list(utility), dtype=float), np.asarray(list(privacy), dtype=float)
    optimal = pareto_mask(utility, privacy)
    u, p = utility[optimal], privacy[optimal]
    order = np.lexsort((p, u))
    u, p = u[order], p[order]
    xs, ys = [], []
    for i in range(len(u)):
        if i:
            xs.append(u[i - 1])
            ys.append(p[i])
        xs.append(u[i])
        ys.append(p[i])
    return np.array(xs), np.array(ys)


def log_floor(values: Iterable[float]) -> float:
    """Where zeros are drawn on a log axis: half the smallest positive value (at most half of 0.1 %)."""
    values = np.asarray(list(values), dtype=float)
    positive = values[np.isfinite(values) & (values > 0)]
    return float(min(positive.min() if len(positive) else PRIVACY_FPR, PRIVACY_FPR) / 2)


def _defense_colors(names: Iterable[str]) -> dict[str, str]:
    others = sorted({n for n in names if n != UNDEFENDED})
    palette = pyplot().get_cmap("tab10").colors
    from matplotlib.colors import to_hex

    colors = {n: to_hex(palette[i % len(palette)]) for i, n in enumerate(others)}
    colors[UNDEFENDED] = "#000000"
    return colors


def _point_label(row: pd.Series) -> str:
    """The swept parameters (or, for a defense with one setting, the parameters of its label) and DP's ε."""
    params = row["defense"][len(row["defense_name"]) + 1:-1] if row["defense"].endswith(")") else ""
    strength = row["strength"] or params.replace(",", ", ")
    parts = [strength] if strength else []
    if row["dp"]:
        parts.append(f"ε={row['epsilon']:.2g}")
    if row["undefended"] and not parts:
        return "undefended"
    return ", ".join(parts)


def _draw_frontier(ax: plt.Axes, points: pd.DataFrame, metric: str, colors: dict[str, str]) -> None:
    log = metric == "tpr"
    privacy = points["privacy"].to_numpy(dtype=float)
    floor = log_floor(np.r_[privacy, points["privacy_ci_low"].to_numpy(dtype=float)]) if log else None
    shown = np.where(privacy <= 0, floor, privacy) if log else privacy

    def clip(values: np.ndarray) -> np.ndarray:
        return np.maximum(values, floor) if log else values

    for name, rows in points.groupby("defense_name", sort=False):
        idx = rows.index.to_numpy()
        x, y = rows["utility"].to_numpy(dtype=float), shown[idx]
        color = colors[name]
        label = "undefended" if name == UNDEFENDED else name + (" (DP, accountant ε)" if rows["dp"].any() else "")
        if len(rows) > 1:
            ax.plot(x, y, "-", color=color, lw=2 if rows["dp"].any() else 1.3, alpha=0.8, zorder=2)
        xerr = np.abs(np.vstack([x - rows["utility_ci_low"], rows["utility_ci_high"] - x]))
        yerr = np.abs(np.vstack([y - clip(rows["privacy_ci_low"].to_numpy(dtype=float)),
                                 clip(rows["privacy_ci_high"].to_numpy(dtype=float)) - y]))
        ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="none", ecolor=color,
                    alpha=0.35, lw=0.8, zorder=1)
        zero = privacy[idx] <= 0
        marker, size = ("*", 220) if name == UNDEFENDED else ("D" if rows["dp"].any() else "o", 55)
        ax.scatter(x[~zero], y[~zero], marker=marker, s=size, color=color, edgecolor="white", linewidth=0.6,
                   zorder=4, label=label)
        if zero.any():
            ax.scatter(x[zero], y[zero], marker=marker, s=size, facecolor="white", edgecolor=color, linewidth=1.2,
                       zorder=4, label=None if (~zero).any() else label)
        for xi, yi, (_, row) in zip(x, y, rows.iterrows(), strict=True):
            text = _point_label(row)
            if text:
                ax.annotate(text, (xi, yi), xytext=(5, 5), textcoords="offset points", fontsize=7, color=color)

    sx, sy = pareto_staircase(points["utility"], privacy)
    if len(sx):
        ax.plot(sx, clip(sy) if log else sy, drawstyle="default", color="0.4", ls="--", lw=1, zorder=3,
                label="Pareto frontier (staircase)")
        pareto = points["pareto"].to_numpy()
        ax.scatter(points["utility"][pareto], shown[pareto], s=260, facecolor="none", edgecolor="0.4", lw=1,
                   zorder=3, label="Pareto-optimal")
    if log:
        ax.set_yscale("log")
        ax.axhline(PRIVACY_FPR, color="tab:red", ls=":", lw=1, label="random guess (TPR = FPR = 0.1 %)")
        if (privacy <= 0).any():
            ax.axhline(floor, color="0.6", ls=":", lw=0.8, label="TPR = 0 (hollow markers, drawn here)")
        top = np.nanmax(np.r_[shown, clip(points["privacy_ci_high"].to_numpy(dtype=float)), PRIVACY_FPR])
        ax.set_ylim(floor / 1.6, min(1.0, top * 2.5))
    else:
        ax.axhline(0.5, color="tab:red", ls=":", lw=1, label="random guess (AUC = 0.5)")
    ax.grid(True, which="major", alpha=0.3)


def plot_frontier(board: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure for one group's leaderboard rows: TPR panel (log) and AUC panel."""
    group = board["group"].iloc[0]
    utility = board["utility_metric"].iloc[0] or "test_accuracy"
    colors = _defense_colors(board["defense_name"])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, metric in zip(axes, FRONTIER_METRICS, strict=True):
        _draw_frontier(ax, frontier_points(board, metric), metric, colors)
        ax.set_xlabel(f"{UTILITY_NAMES.get(utility, utility)} (mean over target models, 95 % CI)")
        ax.set_ylabel(FRONTIER_METRICS[metric][1])
        ax.set_title("leakage at low FPR (TPR @ 0.1 % FPR)" if metric == "tpr" else "leakage on average (AUC)")
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[1].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for h, label in zip(h2, l2, strict=True):
        seen.setdefault(label, h)
    # below the axes; savefig's tight bounding box takes it in (cheaper than tight_layout on a slow machine)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.12, wspace=0.22)
    fig.legend(seen.values(), seen.keys(), loc="upper center", ncol=min(4, len(seen)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.02))
    note = ""
    resolvable = board["min_resolvable_fpr"].max()
    if np.isfinite(resolvable) and resolvable > PRIVACY_FPR:
        note = (f"\nthe audit resolves FPR ≥ {100 * resolvable:.2g} % only: TPR at 0.1 % FPR equals TPR at FPR = 0 "
                "(members scored above every non-member)")
    fig.suptitle(f"{group}: accuracy–privacy frontier (lower-right is better; privacy of the strongest attack "
                 f"per setting){note}", fontsize=10)
    return save(fig, out_dir, f"frontier_{slug(group)}")


# --- per-cell figures -----------------------------------------------------------------------------------------


def roc_series(samples: pd.DataFrame, per_target: bool = False) -> list[dict]:
    """ROC curves of one cell's samples: per attack, pooled over its targets (or one per target), each a dict
    with ``attack``, ``target`` (None when pooled), ``fpr``, ``tpr``, ``auc``, ``n_nonmembers`` and
    ``tpr_at_fpr_0.1pct``."""
    curves = []
    keys = ["attack_key", "target"] if per_target else ["attack_key"]
    for key, rows in samples.groupby(keys, sort=True):
        member = rows["member"].to_numpy(dtype=bool)
        if member.all() or not member.any():
            continue
        fpr, tpr, _ = roc_curve(rows["score"].to_numpy(dtype=float), member)
        curves.append({
            "attack": key[0] if isinstance(key, tuple) else key,
            "target": int(key[1]) if per_target else None,
            "fpr": fpr, "tpr": tpr, "auc": float(trapezoid(tpr, fpr)),
            "n_nonmembers": int((~member).sum()),
            PRIVACY: float(tpr[fpr <= PRIVACY_FPR + 1e-12].max()),
        })
    return curves


def plot_roc(samples: pd.DataFrame, cell: str, out_dir: Path, per_target: bool = False) -> list[Path]:
    curves = roc_series(samples, per_target)
    if not curves:
        return []
    curves.sort(key=lambda c: (-c[PRIVACY], -c["auc"], c["attack"], c["target"] or 0))
    floor = 0.5 / max(c["n_nonmembers"] for c in curves)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 6))
    cmap = plt.get_cmap("tab20")
    attacks = sorted({c["attack"] for c in curves})
    for curve in curves:
        color = cmap(attacks.index(curve["attack"]) % 20)
        name = curve["attack"] + ("" if curve["target"] is None else f" (target {curve['target']})")
        ax.plot(np.maximum(curve["fpr"], floor), np.maximum(curve["tpr"], floor), color=color, lw=1.3,
                label=f"{name}: AUC {curve['auc']:.3f}, TPR@0.1% {curve[PRIVACY]:.3f}")
    ax.plot([floor, 1], [floor, 1], color="0.3", ls="--", lw=1, label="random guess (TPR = FPR)")
    ax.axvline(PRIVACY_FPR, color="tab:red", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    pooled = "one curve per target" if per_target else "pooled over the cell's target models"
    ax.set_xlabel(f"false-positive rate (log; FPR = 0 drawn at the left edge, {1 / (2 * floor):.0f} non-members)")
    ax.set_ylabel("true-positive rate (log)")
    ax.set_title(f"ROC curves, {cell}\n({pooled}; legend sorted by TPR at 0.1 % FPR, red line)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    return save(fig, out_dir, f"roc_{slug(cell)}")


def is_classification(labels: np.ndarray, max_classes: int = 50) -> bool:
    labels = np.asarray(labels, dtype=float)
    return bool(np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
                and len(np.unique(labels)) <= max_classes)


def per_class_series(samples: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per class of one attack's samples of one cell: ``per_class_metrics`` of each target, then the mean over
    targets with a bootstrap CI of ``auc`` and ``tpr_at_fpr_0``; class size, share and the minority flag."""
    per_target = []
    for target, rows in samples.groupby("target", sort=True):
        for entry in per_class_metrics(rows["score"].to_numpy(dtype=float), rows["member"].to_numpy(dtype=bool),
                                       rows["label"].to_numpy()):
            per_target.append({**entry, "target": target})
    table = pd.DataFrame(per_target)
    out = []
    for label, rows in table.groupby("label", sort=True):
        entry = {"label": label, "n": int(rows["n"].iloc[0]), "share": float(rows["share"].mean()),
                 "minority": bool(rows["minority"].any())}
        for metric in ("auc", "tpr_at_fpr_0"):
            mean, low, high = mean_ci(rows[metric], n_boot, seed)
            entry.update({metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        out.append(entry)
    return pd.DataFrame(out)


def plot_per_class(samples: pd.DataFrame, attack: str, cell: str, out_dir: Path) -> list[Path]:
    if samples.empty or not is_classification(samples["label"].to_numpy()):
        return []
    table = per_class_series(samples)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(table) + 4), 4.4))
    x = np.arange(len(table))
    ticks = [f"class {format_value(r['label'])}\nn={r['n']} ({100 * r['share']:.0f} %)"
             + ("\nMINORITY" if r["minority"] else "") for _, r in table.iterrows()]
    colors = ["tab:orange" if m else "tab:blue" for m in table["minority"]]
    for ax, metric, title, chance in (
        (axes[0], "auc", "AUC per class", 0.5),
        (axes[1], "tpr_at_fpr_0", "TPR at FPR = 0 per class", None),
    ):
        mean = table[metric].to_numpy(dtype=float)
        err = np.nan_to_num(np.abs(np.vstack([mean - table[f"{metric}_ci_low"], table[f"{metric}_ci_high"] - mean])))
        bars = ax.bar(x, np.nan_to_num(mean), color=colors, yerr=err, capsize=4, edgecolor="black", lw=0.5)
        for bar, minority in zip(bars, table["minority"], strict=True):
            if minority:
                bar.set_hatch("//")
        if chance is not None:
            ax.axhline(chance, color="tab:red", ls=":", lw=1, label="random guess")
            ax.set_ylim(min(0.4, np.nanmin(np.r_[mean, 0.5]) - 0.05), max(0.7, np.nanmax(np.r_[mean, 0.5]) + 0.05))
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        ax.set_xticks(x, ticks)
        for tick, minority in zip(ax.get_xticklabels(), table["minority"], strict=True):
            if minority:
                tick.set_color("tab:orange")
        ax.set_ylabel(f"{title.split(' per')[0]} (mean over targets, 95 % CI)")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Per-class vulnerability to {attack}, {cell}\n(hatched orange: minority class, share < 1/classes)",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, f"per_class_{slug(cell)}")


def riskiest_records(samples: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The ``k`` records with the highest mean privacy-risk score over the targets that trained on them (ties by
    record id): ``record``, ``label``, ``mean_risk_as_member``, ``n_as_member``, ``mean_risk_as_nonmember``."""
    rows = samples.assign(member=samples["member"].astype(bool))
    as_member = rows[rows["member"]].groupby("record").agg(label=("label", "first"),
                                                           mean_risk_as_member=("score", "mean"),
                                                           n_as_member=("score", "size"))
    as_non = rows[~rows["member"]].groupby("record")["score"].mean().rename("mean_risk_as_nonmember")
    table = as_member.join(as_non, how="left").reset_index()
    rank = table.assign(rank=table["mean_risk_as_member"].round(12))  # equal means computed in another order tie
    return rank.sort_values(["rank", "record"], ascending=[False, True]).head(k).drop(columns="rank") \
        .reset_index(drop=True)


def plot_risk(samples: pd.DataFrame, cell: str, out_dir: Path, k: int = 10) -> list[Path]:
    if samples.empty:
        return []
    scores = samples["score"].to_numpy(dtype=float)
    member = samples["member"].to_numpy(dtype=bool)
    top = riskiest_records(samples, k)
    plt = pyplot()
    fig, (ax, text_ax) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [2.2, 1]})
    bins = np.histogram_bin_edges(scores[np.isfinite(scores)], bins=40)
    ax.hist(scores[member], bins=bins, histtype="stepfilled", alpha=0.45, color="tab:red",
            label=f"members ({member.sum()})")
    ax.hist(scores[~member], bins=bins, histtype="stepfilled", alpha=0.45, color="tab:blue",
            label=f"non-members ({(~member).sum()})")
    ax.set_xlabel("privacy risk score (Song & Mittal 2021: estimated P(member | output))")
    ax.set_yscale("log")
    ax.set_ylabel("records × target models (log)")
    ax.set_title(f"Privacy risk scores, {cell}\n(pooled over the cell's target models)")
    ax.legend(frameon=False)
    ax.grid(True, alpha=0.3)
    text_ax.axis("off")
    lines = [f"riskiest {len(top)} records", "(risk: mean score over the n", " target models trained on it)", "",
             f"{'record':>7} {'label':>5} {'risk':>6} {'n':>3}"]
    lines += [f"{int(r.record):>7d} {format_value(r.label):>5} {r.mean_risk_as_member:>6.3f} {int(r.n_as_member):>3d}"
              for r in top.itertuples(index=False)]
    text_ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8, transform=text_ax.transAxes)
    fig.tight_layout()
    paths = save(fig, out_dir, f"risk_{slug(cell)}")
    txt = out_dir / f"risk_{slug(cell)}.txt"
    txt.write_text(
        f"# riskiest records of {cell} by the privacy_risk attack: mean score over the target models that trained "
        "on them\n" + riskiest_records(samples, max(k, 20)).assign(label=lambda t: t["label"].map(format_value))
        .to_string(index=False, float_format="%.4f") + "\n"
    )
    return [*paths, txt]


# --- everything ------------------------------------------------------------------------------------------------


def plot_cells(df: pd.DataFrame, cells: str | None) -> pd.DataFrame:
    """The cells that get per-cell figures: every cell the ``--cells`` filter selected, or without a filter the
    first seed of each setting. Returns one row per cell: ``cell_key``, ``cell`` — the cell's label, followed by
    its options (``[engine=federated, ...]``) where cells that differ only in their training share a label."""
    per_cell = df.drop_duplicates("cell_key").sort_values(["setting", "seed", "cell_key"])
    if cells is None:
        per_cell = per_cell.drop_duplicates("setting")
    else:
        per_cell = per_cell[matches(per_cell["cell"].astype(str), cells)]
    per_cell = per_cell[["cell_key", "cell", "options"]].reset_index(drop=True)
    shared = per_cell["cell"].duplicated(keep=False) & (per_cell["options"] != "")
    per_cell.loc[shared, "cell"] = per_cell.loc[shared, "cell"] + " [" + per_cell.loc[shared, "options"] + "]"
    return per_cell[["cell_key", "cell"]]


def make_plots(df: pd.DataFrame, board: pd.DataFrame, samples: pd.DataFrame | None, out_dir: Path | str,
               cells: str | None = None, per_target: bool = False) -> list[Path]:
    """Every figure for the labelled store rows ``df`` (already filtered), their leaderboard ``board`` and the
    store's ``samples`` (None when the store has none: per-cell figures are then skipped)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot write plots into {out} ({exc}); pass a writable folder with --out") from None
    written: list[Path] = []
    for _, group in board.groupby("group", sort=False):
        written += plot_frontier(group, out)
    if samples is None or samples.empty:
        return written
    by_cell = dict(tuple(samples.groupby("cell_key", sort=False)))
    for _, cell in plot_cells(df, cells).iterrows():
        cell_samples = by_cell.get(cell["cell_key"])
        if cell_samples is None:
            continue
        written += plot_roc(cell_samples, cell["cell"], out, per_target)
        best = strongest(attack_summary(df[df["cell_key"] == cell["cell_key"]]))
        if best is not None:
            written += plot_per_class(cell_samples[cell_samples["attack_key"] == best["attack"]], best["attack"],
                                      cell["cell"], out)
        risk_keys = sorted(df.loc[(df["cell_key"] == cell["cell_key"]) & (df["attack"] == RISK_ATTACK), "attack_key"]
                           .unique())
        risk = cell_samples[cell_samples["attack_key"] == risk_keys[0]] if risk_keys else cell_samples.iloc[0:0]
        written += plot_risk(risk, cell["cell"], out)
    return written
