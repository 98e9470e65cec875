"""Figures from the results store: accuracy–privacy frontiers, ROC curves, per-class vulnerability, privacy risk.

Each figure has a function that computes what it plots (tested on hand-made stores) and one that draws it with
matplotlib's Agg backend, writing a PNG and an SVG:

- ``frontier_<dataset>__<architecture>``: one per dataset × architecture group, the privacy of the strongest
  attack against utility (test accuracy, or test R²) with 95 % CIs as error bars, one curve per defense through
  its settings, the undefended point (a star), DP-SGD points as diamonds, the Pareto staircase and the
  random-guess line; left panel TPR at 0.1 % FPR on a log axis (zeros drawn at :func:`log_floor`, as the axis
  label says), right panel the AUC of the attack with the highest AUC. Points carry numbers, not labels: small
  numbers in the defense's colour placed where they overlap no other number (:func:`place_labels`, leader lines
  where a number had to move away), and a legend table below the axes maps each number to the setting, its
  utility, TPR, AUC and accountant ε (:func:`legend_rows`);
- ``roc_<cell>``: ROC curves of every attack of a cell on log–log axes with the random-guess diagonal
  TPR = FPR and, where the non-members resolve it, the 0.1 % FPR line;
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
from bench.metrics import MINORITY_SHARE, per_class_metrics, roc_curve, trapezoid
from bench.settings import format_value, matches
from privkernel.errors import BenchError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.text import Annotation

#: The privacy axes of a frontier: leaderboard column of the value (its CI bounds: ``<column>_ci_low/high``) and
#: the axis label.
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


def _option_items(options: str) -> list[str]:
    return [item for item in str(options or "").split(", ") if item]


def setting_labels(board: pd.DataFrame) -> pd.Series:
    """Short labels of one group's settings for the frontier's legend table: the defense's label as the
    leaderboard shows it (``dpsgd(epsilon=8.0)``: the parameters that differ from their defaults, so a parameter
    that a setting does not use, such as DP-SGD's ``noise_multiplier`` beside a target ``epsilon``, is not shown),
    then, in brackets, the options in which the setting differs from the group's most common options
    (:func:`common_options`).
    """
    common = set(_option_items(common_options(board)))
    labels = pd.Series("", index=board.index, dtype=object)
    for index, row in board.iterrows():
        extra = [item for item in _option_items(row.get("options", "")) if item not in common]
        labels[index] = str(row["defense"]) + (f" [{', '.join(extra)}]" if extra else "")
    return labels


def common_options(board: pd.DataFrame) -> str:
    """The options label most of the group's settings share (the first in order on a tie; "" without options)."""
    options = board["options"].fillna("") if "options" in board else pd.Series("", index=board.index)
    counts = options.value_counts(sort=False)
    return str(counts.index[int(np.argmax(counts.to_numpy()))]) if len(counts) else ""


def frontier_points(board: pd.DataFrame, metric: str = "tpr") -> pd.DataFrame:
    """The points of one group's frontier (``board``: its leaderboard rows) for the privacy ``metric``
    (``"tpr"`` or ``"auc"``): columns ``number`` (1, 2, ...: the marker number, the same for both metrics),
    ``label`` (:func:`setting_labels`), ``defense_name``, ``strength``, ``utility`` with its CI, ``privacy`` with
    its CI, ``pareto`` (on this metric), ``undefended``, ``dp`` (an accountant ε is known) and ``epsilon``;
    sorted by defense (the undefended first) and, within a defense, by its swept parameters."""
    column, _ = FRONTIER_METRICS[metric]
    utility = board["utility_metric"].iloc[0] if len(board) else "test_accuracy"
    params = sorted(c for c in board.columns if c.startswith("defense."))
    points = pd.DataFrame({
        "setting": board["setting"], "label": setting_labels(board), "defense": board["defense"],
        "defense_name": board["defense_name"], "strength": board["strength"].fillna(""),
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
    points = points.loc[order].drop(columns=params).reset_index(drop=True)
    points.insert(0, "number", np.arange(1, len(points) + 1))
    return points


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


# --- label placement --------------------------------------------------------------------------------------------

#: Pixels kept free around every placed label (its box grows by this on each side before the overlap test).
LABEL_PAD = 2.0
#: Rings searched past the first free place that covers a marker before that place is taken.
PATIENCE = 3


def _ring(center: np.ndarray, radius: float, spacing: float) -> np.ndarray:
    """Points on a circle around ``center``, at most ``spacing`` apart: east first, then alternately above and
    below, west last."""
    n = max(8, int(np.ceil(2 * np.pi * radius / spacing)))
    steps = np.array(sorted(range(-((n - 1) // 2), n // 2 + 1), key=lambda k: (abs(k), -k)))
    angles = steps * (2 * np.pi / n)
    return center + radius * np.column_stack([np.cos(angles), np.sin(angles)])


def _boxes(centers: np.ndarray, width: float, height: float) -> np.ndarray:
    return np.column_stack([centers[:, 0] - width / 2, centers[:, 1] - height / 2,
                            centers[:, 0] + width / 2, centers[:, 1] + height / 2])


def _hits(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Which of ``boxes`` (x0, y0, x1, y1 rows) intersect any of ``others``."""
    if not len(others):
        return np.zeros(len(boxes), dtype=bool)
    a, b = boxes[:, None, :], others[None, :, :]
    return np.any((a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3])
                  & (b[..., 1] < a[..., 3]), axis=1)


def free_spot(center: np.ndarray, size: tuple[float, float], clearance: float, frame: np.ndarray,
              labels: np.ndarray, markers: np.ndarray) -> np.ndarray | None:
    """Where to centre a label box of ``size`` (pixels, padded) for the point at ``center``.

    Parameters
    ----------
    center
        The point, in display pixels.
    size
        Width and height of the label box.
    clearance
        The marker's radius: the first ring of candidate places lies just outside it.
    frame
        ``(x0, y0, x1, y1)`` the box must stay inside (the axes).
    labels, markers
        ``(n, 4)`` boxes of the labels already placed (never overlapped) and of the markers (avoided where a free
        place is found within :data:`PATIENCE` rings of the first place that covers one).

    Returns
    -------
    The centre of the label box, or None where no place in the frame is free of ``labels``. Candidates lie on
    rings of growing radius around the point, out to the frame's diagonal, no further apart than half the box,
    so a free place of the size of the box is found wherever there is one (at this resolution).
    """
    width, height = size
    step = min(width, height) / 2
    reach = np.hypot(frame[2] - frame[0], frame[3] - frame[1])
    fallback, since = None, 0
    radius = clearance + max(width, height) / 2
    while radius <= reach + step:
        spots = _ring(center, radius, step)
        boxes = _boxes(spots, width, height)
        inside = ((boxes[:, 0] >= frame[0]) & (boxes[:, 1] >= frame[1]) & (boxes[:, 2] <= frame[2])
                  & (boxes[:, 3] <= frame[3]))
        free = inside & ~_hits(boxes, labels)
        clear = free & ~_hits(boxes, markers)
        if clear.any():
            return spots[np.argmax(clear)]
        if fallback is None and free.any():
            fallback = spots[np.argmax(free)]
        if fallback is not None:
            since += 1
            if since > PATIENCE:
                break
        radius += step
    return fallback


def place_labels(ax: plt.Axes, x: np.ndarray, y: np.ndarray, texts: list[str], colors: list[str],
                 radii: np.ndarray, fontsize: float = 7.0) -> list[Annotation | None]:
    """Draw each ``texts[i]`` next to the point ``(x[i], y[i])`` (data coordinates) so that no two labels overlap.

    Greedy: points are taken from the top of the axes down; each label goes to the first place on rings around
    its point (:func:`free_spot`) whose box, grown by :data:`LABEL_PAD`, meets no label placed before it and
    stays inside the axes, preferring places that cover no marker (``radii``: marker radii in points). A label
    away from its marker gets a leader line. The axes' limits and position must be final: the places are
    computed in display space (offsets in points, so the PNG and the SVG agree).

    Returns the annotations, None for a point that is not finite or found no free place (its row in the
    legend table still names it).
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    centers = ax.transData.transform(np.column_stack([x, y]))
    radii = np.asarray(radii, dtype=float) * px
    finite = np.all(np.isfinite(centers), axis=1)
    markers = np.column_stack([centers[:, 0] - radii, centers[:, 1] - radii,
                               centers[:, 0] + radii, centers[:, 1] + radii])[finite]
    bounds = ax.get_window_extent(renderer)
    frame = np.array([bounds.x0, bounds.y0, bounds.x1, bounds.y1])
    font = {"fontsize": fontsize, "fontweight": "bold"}
    from matplotlib.patheffects import withStroke

    placed: list[np.ndarray] = []
    out: list[Annotation | None] = [None] * len(texts)
    for i in sorted(np.flatnonzero(finite), key=lambda i: (-centers[i, 1], centers[i, 0], i)):
        probe = ax.text(0, 0, texts[i], **font)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        size = (extent.width + 2 * LABEL_PAD, extent.height + 2 * LABEL_PAD)
        spot = free_spot(centers[i], size, radii[i], frame, np.array(placed).reshape(-1, 4), markers)
        if spot is None:
            continue
        placed.append(_boxes(spot[None], *size)[0])
        offset = spot - centers[i]
        leader = np.hypot(*offset) > radii[i] + max(size) / 2 + 1
        arrow = {"arrowstyle": "-", "color": colors[i], "lw": 0.6, "alpha": 0.8, "shrinkA": 0,
                 "shrinkB": radii[i] / px} if leader else None
        out[i] = ax.annotate(texts[i], (x[i], y[i]), xytext=tuple(offset / px), textcoords="offset points",
                             ha="center", va="center", color=colors[i], zorder=6, annotation_clip=False,
                             arrowprops=arrow, path_effects=[withStroke(linewidth=2.2, foreground="white")],
                             **font)
    return out


# --- the frontier figure ------------------------------------------------------------------------------------------

#: Marker radius in points: undefended (star), others; the Pareto ring around an optimal point.
MARKER_RADIUS = {"star": np.sqrt(220) / 2, "point": np.sqrt(55) / 2, "pareto": np.sqrt(260) / 2}


def _draw_frontier(ax: plt.Axes, points: pd.DataFrame, metric: str,
                   colors: dict[str, str]) -> tuple[np.ndarray, float | None]:
    """Draw one panel's points, CIs, curves, staircase and random-guess line and fix its limits. Returns where
    each point was drawn on the y axis and, on the log axis, where zeros are drawn (:func:`log_floor`)."""
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
            ax.plot(x, y, "-", color=color, lw=2 if rows["dp"].any() else 1.3, alpha=0.6, zorder=2)
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

    sx, sy = pareto_staircase(points["utility"], privacy)
    if len(sx) > 1:  # a staircase of one point is no line
        ax.plot(sx, clip(sy) if log else sy, color="0.4", ls="--", lw=1, zorder=3, label="Pareto frontier (staircase)")
    if len(sx):
        pareto = points["pareto"].to_numpy()
        ax.scatter(points["utility"][pareto], shown[pareto], s=260, facecolor="none", edgecolor="0.4", lw=1,
                   zorder=3, label="Pareto-optimal")
    high = np.r_[clip(points["privacy_ci_high"].to_numpy(dtype=float)), shown]
    if log:
        ax.set_yscale("log")
        ax.axhline(PRIVACY_FPR, color="tab:red", ls=":", lw=1.2, label="random guess (TPR = FPR = 0.1 %)")
        if (privacy <= 0).any():
            ax.axhline(floor, color="0.6", ls=":", lw=0.8, label="TPR = 0 (hollow markers, drawn here)")
        ax.set_ylim(floor / 1.6, min(1.0, np.nanmax(np.r_[high, PRIVACY_FPR]) * 2.5))
    else:
        ax.axhline(0.5, color="tab:red", ls=":", lw=1.2, label="random guess (AUC = 0.5)")
        bottom = np.nanmin(np.r_[points["privacy_ci_low"].to_numpy(dtype=float), shown, 0.5])
        top = np.nanmax(np.r_[high, 0.5])
        pad = 0.08 * max(top - bottom, 0.02)
        ax.set_ylim(bottom - pad, top + pad)
    # room for the numbers on both sides of the outermost points
    utility = points[["utility", "utility_ci_low", "utility_ci_high"]].to_numpy(dtype=float).ravel()
    utility = utility[np.isfinite(utility)]
    if len(utility):
        pad = 0.08 * max(utility.max() - utility.min(), 0.01)
        ax.set_xlim(utility.min() - pad, utility.max() + pad)
    ax.grid(True, which="major", alpha=0.3)
    return shown, floor


def _fmt_ci(mean: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def legend_rows(tpr: pd.DataFrame, auc: pd.DataFrame, utility: str) -> tuple[str, list[str]]:
    """The legend table of a frontier as monospace text: the header and one row per point of
    ``frontier_points(board, "tpr")`` (``tpr``) and ``frontier_points(board, "auc")`` (``auc``, in the same
    order): number, setting label, utility, TPR at 0.1 % FPR, AUC (★: Pareto-optimal on that metric) and the
    accountant's ε."""
    columns = [
        ("#", [str(n) for n in tpr["number"]]),
        ("setting", list(tpr["label"])),
        (f"{UTILITY_NAMES.get(utility, utility)} [95 % CI]",
         [_fmt_ci(r.utility, r.utility_ci_low, r.utility_ci_high, 3) for r in tpr.itertuples()]),
        ("TPR @ 0.1 % FPR [95 % CI]",
         [_fmt_ci(r.privacy, r.privacy_ci_low, r.privacy_ci_high, 4) + (" ★" if r.pareto else "")
          for r in tpr.itertuples()]),
        ("AUC (by AUC) [95 % CI]",
         [_fmt_ci(r.privacy, r.privacy_ci_low, r.privacy_ci_high, 3) + (" ★" if r.pareto else "")
          for r in auc.itertuples()]),
    ]
    if tpr["dp"].any():
        columns.append(("ε (accountant)", [f"{e:.3g}" if np.isfinite(e) else "" for e in tpr["epsilon"]]))
    widths = [max(len(head), *(len(v) for v in values)) for head, values in columns]

    def line(cells: list[str]) -> str:
        first = cells[0].rjust(widths[0])
        return "  ".join([first, *(c.ljust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    header = line([head for head, _ in columns])
    rows = [line([values[i] for _, values in columns]) for i in range(len(tpr))]
    return header, rows


def _draw_table(fig: plt.Figure, anchor: Artist, header: str, rows: list[str], colors: list[str],
                note: str, fontsize: float = 7.0) -> None:
    """The legend table below ``anchor`` (the figure legend), one text per row, ``rows[i]``'s number coloured
    ``colors[i]``; rows are spaced by the measured height of the tallest so that none overlaps the next."""
    from matplotlib.text import Annotation

    renderer = fig.canvas.get_renderer()
    font = {"family": "monospace", "fontsize": fontsize}
    probe = fig.text(0, 0, header + "".join(rows) + "Ág|★ε", **font)
    line = probe.get_window_extent(renderer).height * 72 / fig.dpi + 1.5
    probe.set_text("0" * 40)
    char = probe.get_window_extent(renderer).width * 72 / fig.dpi / 40  # the advance of one character
    probe.remove()
    digits = len(str(len(rows)))

    def text(content: str, row: int, color: str = "black", weight: str = "normal", column: int = 0) -> None:
        fig.add_artist(Annotation(content, xy=(0.06, 0), xycoords=("figure fraction", anchor),
                                  xytext=(column * char, -6 - row * line), textcoords="offset points",
                                  ha="left", va="top", color=color, fontweight=weight, annotation_clip=False,
                                  **font))

    text(note, 0, color="0.3")
    text(header, 1, weight="bold")
    for i, (row, color) in enumerate(zip(rows, colors, strict=True)):
        text(row[:digits], i + 2, color=color, weight="bold")
        text(row[digits + 2:], i + 2, column=digits + 2)  # after the two spaces between the columns


def frontier_figure(board: pd.DataFrame) -> plt.Figure:
    """The frontier figure of one group's leaderboard rows (see the module docstring)."""
    group = board["group"].iloc[0]
    utility = board["utility_metric"].iloc[0] or "test_accuracy"
    colors = _defense_colors(board["defense_name"])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.4))
    # fixed layout (the labels are placed in display space): savefig's tight bounding box takes in the legend
    # and the table below the axes
    fig.subplots_adjust(left=0.06, right=0.98, top=0.87, bottom=0.1, wspace=0.18)
    panels = {}
    for ax, metric in zip(axes, FRONTIER_METRICS, strict=True):
        points = frontier_points(board, metric)
        shown, floor = _draw_frontier(ax, points, metric, colors)
        ax.set_xlabel(f"{UTILITY_NAMES.get(utility, utility)} (mean over target models, 95 % CI)")
        label = FRONTIER_METRICS[metric][1]
        if floor is not None and ((points["privacy"] <= 0) | (points["privacy_ci_low"] <= 0)).any():
            label = label.replace("(log scale)", f"(log scale; 0 drawn at {floor:.2g})")
        ax.set_ylabel(label)
        ax.set_title("leakage at low FPR (TPR @ 0.1 % FPR)" if metric == "tpr" else "leakage on average (AUC)")
        radii = np.where(points["pareto"], MARKER_RADIUS["pareto"],
                         np.where(points["undefended"], MARKER_RADIUS["star"], MARKER_RADIUS["point"]))
        place_labels(ax, points["utility"].to_numpy(dtype=float), shown, [str(n) for n in points["number"]],
                     [colors[n] for n in points["defense_name"]], radii)
        panels[metric] = points
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[1].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for h, label in zip(h2, l2, strict=True):
        seen.setdefault(label, h)
    legend = fig.legend(seen.values(), seen.keys(), loc="upper center", ncol=min(4, len(seen)), fontsize=8,
                        frameon=False, bbox_to_anchor=(0.5, 0.02))
    header, rows = legend_rows(panels["tpr"], panels["auc"], utility)
    common = common_options(board)
    note = ("numbers: the points of both panels, coloured by defense; ★ Pareto-optimal on that metric"
            + (f"; options {common} unless noted in [ ]" if common else ""))
    _draw_table(fig, legend, header, rows, [colors[n] for n in panels["tpr"]["defense_name"]], note)
    note = ""
    resolvable = board["min_resolvable_fpr"].max()
    if np.isfinite(resolvable) and resolvable > PRIVACY_FPR:
        note = (f"\nthe audit resolves FPR ≥ {100 * resolvable:.2g} % only: TPR at 0.1 % FPR equals TPR at FPR = 0 "
                "(members scored above every non-member)")
    fig.suptitle(f"{group}: accuracy–privacy frontier (lower-right is better; privacy of the strongest attack "
                 f"per setting){note}", fontsize=10)
    return fig


def plot_frontier(board: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``frontier_<group slug>`` (PNG and SVG) for one group's leaderboard rows (:func:`frontier_figure`)."""
    return save(frontier_figure(board), out_dir, f"frontier_{slug(board['group'].iloc[0])}")


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


def roc_figure(samples: pd.DataFrame, cell: str, per_target: bool = False) -> plt.Figure | None:
    """ROC curves of one cell's samples (:func:`roc_series`) on log–log axes with the random-guess diagonal
    TPR = FPR and, where there are 500 non-members or more, the 0.1 % FPR line; None when no attack has both
    members and non-members."""
    curves = roc_series(samples, per_target)
    if not curves:
        return None
    curves.sort(key=lambda c: (-c[PRIVACY], -c["auc"], c["attack"], c["target"] or 0))
    floor = 0.5 / max(c["n_nonmembers"] for c in curves)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 6))
    attacks = sorted({c["attack"] for c in curves})
    # ten distinct colours, then the same colours dash-dotted (tab20's light and dark pairs look alike)
    palette, styles = plt.get_cmap("tab10").colors, ("-", "-.", (0, (1, 1)))
    for curve in curves:
        index = attacks.index(curve["attack"])
        name = curve["attack"] + ("" if curve["target"] is None else f" (target {curve['target']})")
        ax.plot(np.maximum(curve["fpr"], floor), np.maximum(curve["tpr"], floor), color=palette[index % 10],
                ls=styles[index // 10 % len(styles)], lw=1.3,
                label=f"{name}: AUC {curve['auc']:.3f}, TPR@0.1% {curve[PRIVACY]:.3f}")
    # above the curves: an attack no better than guessing runs along it and would hide it
    ax.plot([floor, 1], [floor, 1], color="0.2", ls="--", lw=1, zorder=3, label="random guess (TPR = FPR)")
    if floor < PRIVACY_FPR:  # with fewer than 500 non-members 0.1 % FPR lies left of the axis
        ax.axvline(PRIVACY_FPR, color="tab:red", ls=":", lw=0.8, label="FPR = 0.1 %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    pooled = "one curve per target" if per_target else "pooled over the cell's target models"
    ax.set_xlabel(f"false-positive rate (log; FPR = 0 drawn at the left edge, {1 / (2 * floor):.0f} non-members)")
    ax.set_ylabel("true-positive rate (log)")
    ax.set_title(f"ROC curves, {cell}\n({pooled}; legend sorted by TPR at 0.1 % FPR)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    return fig


def plot_roc(samples: pd.DataFrame, cell: str, out_dir: Path, per_target: bool = False) -> list[Path]:
    """Write ``roc_<cell slug>`` (PNG and SVG, :func:`roc_figure`); nothing when there is no curve."""
    fig = roc_figure(samples, cell, per_target)
    return [] if fig is None else save(fig, out_dir, f"roc_{slug(cell)}")


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


def per_class_figure(samples: pd.DataFrame, attack: str, cell: str) -> plt.Figure | None:
    """AUC and TPR at FPR = 0 of one attack's samples of one cell on each class (:func:`per_class_series`),
    minority classes hatched; None for a regression target or no samples."""
    if samples.empty or not is_classification(samples["label"].to_numpy()):
        return None
    table = per_class_series(samples)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(table) + 4), 4.4))
    x = np.arange(len(table))
    if len(table) <= 4:
        ticks = [f"class {format_value(r['label'])}\nn={r['n']} ({100 * r['share']:.0f} %)"
                 + ("\nMINORITY" if r["minority"] else "") for _, r in table.iterrows()]
    else:  # narrow bars: the class and its count only (the minority shows by hatch and colour)
        ticks = [f"{format_value(r['label'])}\n{r['n']}" for _, r in table.iterrows()]
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
    fig.suptitle(f"Per-class vulnerability to {attack}, {cell}\n(hatched orange: minority class, share < "
                 f"{MINORITY_SHARE:g}/classes" + ("; ticks: class and records" if len(table) > 4 else "") + ")",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_per_class(samples: pd.DataFrame, attack: str, cell: str, out_dir: Path) -> list[Path]:
    """Write ``per_class_<cell slug>`` (PNG and SVG, :func:`per_class_figure`); nothing for a regression target."""
    fig = per_class_figure(samples, attack, cell)
    return [] if fig is None else save(fig, out_dir, f"per_class_{slug(cell)}")


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


def risk_figure(samples: pd.DataFrame, cell: str, k: int = 10) -> plt.Figure | None:
    """Histogram of one cell's ``privacy_risk`` scores (members vs non-members) beside its ``k`` riskiest records
    (:func:`riskiest_records`); None without samples."""
    if samples.empty:
        return None
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
    from matplotlib.ticker import LogFormatter

    # counts as plain numbers (1, 2, 3, 10), not 2×10⁰; minor ticks labelled only where few decades are shown
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
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
    return fig


def plot_risk(samples: pd.DataFrame, cell: str, out_dir: Path, k: int = 10) -> list[Path]:
    """Write ``risk_<cell slug>`` (PNG and SVG, :func:`risk_figure`) and the riskiest records as text."""
    fig = risk_figure(samples, cell, k)
    if fig is None:
        return []
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
        best, best_samples, risk = detail_samples(df, cell["cell_key"], cell_samples)
        if best is not None:
            written += plot_per_class(best_samples, best, cell["cell"], out)
        written += plot_risk(risk, cell["cell"], out)
    return written


def detail_samples(df: pd.DataFrame, cell_key: str,
                   samples: pd.DataFrame) -> tuple[str | None, pd.DataFrame, pd.DataFrame]:
    """What the per-class and risk figures of one cell read.

    Parameters
    ----------
    df
        Labelled store rows (at least the cell's).
    cell_key
        The cell.
    samples
        The cell's samples.

    Returns
    -------
    attack, attack_samples, risk_samples
        The cell's strongest attack (:func:`bench.leaderboard.strongest` of its rows; None without one) and its
        samples, and the samples of the cell's :data:`RISK_ATTACK` (empty without one).
    """
    best = strongest(attack_summary(df[df["cell_key"] == cell_key]))
    attack = None if best is None else str(best["attack"])
    chosen = samples[samples["attack_key"] == attack] if attack is not None else samples.iloc[0:0]
    risk_keys = sorted(df.loc[(df["cell_key"] == cell_key) & (df["attack"] == RISK_ATTACK), "attack_key"].unique())
    risk = samples[samples["attack_key"] == risk_keys[0]] if risk_keys else samples.iloc[0:0]
    return attack, chosen, risk
