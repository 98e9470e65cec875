"""The pixels of the figures: on a crowded board (19 settings at one accuracy) no two texts of the frontier overlap,
every point gets its number and a row in the legend table, the random-guess lines are drawn, one frontier is
written per dataset × architecture group, and the ROC figure is log–log with the random-guess diagonal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.leaderboard import PRIVACY_FPR, build_leaderboard, read_rows
from bench.plots import frontier_figure, frontier_points, make_plots, place_labels, pyplot, roc_figure, slug
from tests.test_leaderboard import make_store


def _attacks(tpr: float, auc: float) -> dict:
    return {"lira": (tpr, auc, auc - 0.05), "loss": (tpr / 2, auc - 0.01, auc - 0.06),
            "privacy_risk": (0.0, 0.5, 0.5)}


#: 19 settings of toy / mlp at accuracy 0.9, many with the same TPR (three at 0: drawn at the log floor), and two
#: settings of toy / logreg.
CROWDED = [
    ("mlp", {"width": 64}, "none", {}, 0.90, _attacks(0.08, 0.66), None),
    *[("mlp", {"width": 64}, "l2", {"weight": w}, 0.90, _attacks(0.05, 0.60), None) for w in (0.01, 0.02, 0.03)],
    *[("mlp", {"width": 64}, "l2", {"weight": w}, 0.90, _attacks(0.04, 0.59), None) for w in (0.04, 0.05)],
    *[("mlp", {"width": 64}, "dropout", {"rate": r}, 0.90, _attacks(0.05, 0.60), None) for r in (0.1, 0.2, 0.3)],
    *[("mlp", {"width": 64}, "dropout", {"rate": r}, 0.90, _attacks(0.0, 0.52), None) for r in (0.4, 0.5)],
    *[("mlp", {"width": 64}, "memguard", {"budget": b}, 0.90, _attacks(0.02, 0.55), None) for b in (0.25, 0.5)],
    ("mlp", {"width": 64}, "memguard", {"budget": 1.0}, 0.90, _attacks(0.0, 0.51), None),
    *[("mlp", {"width": 64}, "dp_sgd", {"noise_multiplier": n}, 0.90, _attacks(0.02 / n, 0.53), 8 / n)
      for n in (0.5, 1.0, 2.0, 4.0)],
    ("mlp", {"width": 64}, "rounding", {"decimals": 1}, 0.90, _attacks(0.06, 0.61), None),
    ("logreg", {}, "none", {}, 0.95, _attacks(0.03, 0.55), None),
    ("logreg", {}, "l2", {"weight": 0.1}, 0.93, _attacks(0.01, 0.52), None),
]
N_CROWDED = 19


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crowded") / "results"
    make_store(folder, settings=CROWDED, seeds=(0,), samples=False)
    rows = read_rows(folder)
    return rows, build_leaderboard(rows)


@pytest.fixture(scope="module")
def figure(crowded):
    _, board = crowded
    fig = frontier_figure(board[board["group"] == "toy / mlp"])
    fig.canvas.draw()
    yield fig
    pyplot().close(fig)


def drawn_texts(fig):
    """Every non-empty text the figure draws (tick labels only of the ticks inside the axes' view)."""
    from matplotlib.text import Text

    hidden = set()
    for ax in fig.axes:
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not min(low, high) <= tick.get_loc() <= max(low, high):
                    hidden |= {id(tick.label1), id(tick.label2)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def _overlapping(boxes):
    pairs = []
    for i, (a, ta) in enumerate(boxes):
        for b, tb in boxes[i + 1:]:
            if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                pairs.append((ta, tb))
    return pairs


def test_the_board_is_crowded(crowded):
    _, board = crowded
    mlp = board[board["group"] == "toy / mlp"]
    assert len(mlp) == N_CROWDED and mlp["utility"].round(9).nunique() == 1
    assert mlp["tpr_at_fpr_0.1pct"].round(9).value_counts().max() >= 5  # five settings on one point


def test_no_two_texts_of_the_crowded_frontier_overlap(figure):
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()
    texts = drawn_texts(figure)
    # Text.get_window_extent: the text alone (an Annotation's own method adds its leader line)
    boxes = [(Text.get_window_extent(t, renderer), t.get_text()) for t in texts]
    assert len(boxes) > 2 * N_CROWDED + N_CROWDED  # numbers in both panels, table rows, titles, ticks, legend
    assert _overlapping(boxes) == []


def test_every_point_gets_its_number_in_both_panels(figure):
    tpr, auc = figure.axes
    for ax in (tpr, auc):
        numbers = sorted(int(t.get_text()) for t in ax.texts)
        assert numbers == list(range(1, N_CROWDED + 1))
    # the numbers stay inside the axes
    renderer = figure.canvas.get_renderer()
    from matplotlib.text import Text

    for ax in (tpr, auc):
        frame = ax.get_window_extent(renderer)
        for t in ax.texts:
            box = Text.get_window_extent(t, renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_random_guess_lines_log_axis_and_floor_named(figure):
    from matplotlib.lines import Line2D

    tpr, auc = figure.axes
    assert tpr.get_yscale() == "log" and auc.get_yscale() == "linear"
    guess = [line for line in tpr.get_lines() if np.allclose(line.get_ydata(), PRIVACY_FPR)]
    assert len(guess) == 1 and guess[0].get_label() == "random guess (TPR = FPR = 0.1 %)"
    assert any(isinstance(line, Line2D) and np.allclose(line.get_ydata(), 0.5) for line in auc.get_lines())
    legend = {t.get_text() for legend in figure.legends for t in legend.get_texts()}
    assert {"random guess (TPR = FPR = 0.1 %)", "random guess (AUC = 0.5)", "Pareto frontier (staircase)"} <= legend
    # three settings have TPR 0: drawn at the log floor, which the axis label names
    assert "0 drawn at 0.0005" in tpr.get_ylabel()


def test_the_legend_table_maps_numbers_to_settings(crowded, figure):
    from matplotlib.text import Annotation

    _, board = crowded
    points = frontier_points(board[board["group"] == "toy / mlp"], "tpr")
    table = [a for a in figure.artists if isinstance(a, Annotation)]
    numbers = [a for a in table if a.get_text().strip().isdigit()]
    rows = [a.get_text() for a in table if not a.get_text().strip().isdigit()]
    assert [int(a.get_text()) for a in numbers] == points["number"].tolist()
    # the number in the table has the colour of its point; the undefended is black
    assert numbers[0].get_color() == "#000000" and points["undefended"].iloc[0]
    labels = points["label"].tolist()
    # the defense labels of the leaderboard's table, so that the figure and the table name settings alike
    assert labels[:4] == ["none", "dp_sgd(noise_multiplier=0.5)", "dp_sgd(noise_multiplier=1.0)",
                          "dp_sgd(noise_multiplier=2.0)"]
    assert len(set(labels)) == N_CROWDED
    for label, row in zip(labels, rows[2:], strict=True):  # after the note and the header
        assert row.startswith(label + " ") and "0.900 [" in row
    dp = rows[2 + 1]
    assert dp.rstrip().endswith("16")  # the accountant ε of dp_sgd(noise_multiplier=0.5)


def test_one_frontier_per_group(crowded, tmp_path):
    rows, board = crowded
    written = make_plots(rows, board, None, tmp_path)
    expected = {f"frontier_{slug(group)}.{fmt}" for group in ("toy / mlp", "toy / logreg") for fmt in ("png", "svg")}
    assert {p.name for p in written} == expected == {p.name for p in tmp_path.iterdir()}


def test_place_labels_separates_coincident_points():
    from matplotlib.text import Text

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    n = 25
    x, y = np.full(n, 0.5), np.full(n, 0.5)
    labels = place_labels(ax, x, y, [str(i) for i in range(n)], ["black"] * n, np.full(n, 4.0))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert all(label is not None for label in labels)
    assert _overlapping([(Text.get_window_extent(t, renderer), t.get_text()) for t in labels]) == []
    assert sum(label.arrow_patch is not None for label in labels) >= n - 8  # moved away: a leader line
    plt.close(fig)


def _roc_samples(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    member = np.arange(n) % 2 == 0
    return pd.concat([pd.DataFrame({"attack_key": attack, "target": 0, "member": member,
                                    "score": rng.normal(size=n) + shift * member})
                      for attack, shift in (("lira", 1.0), ("loss", 0.0))], ignore_index=True)


@pytest.mark.parametrize("n", [40, 2000])
def test_roc_figure_is_log_log_with_the_random_guess_diagonal(n):
    fig = roc_figure(_roc_samples(n), "toy / mlp / none / seed=0")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    diagonal = [line for line in ax.get_lines() if line.get_label() == "random guess (TPR = FPR)"]
    assert len(diagonal) == 1 and np.array_equal(diagonal[0].get_xdata(), diagonal[0].get_ydata())
    assert diagonal[0].get_xdata()[0] == ax.get_xlim()[0] and diagonal[0].get_xdata()[-1] == 1
    # the 0.1 % FPR line where 1000 non-members resolve it, none left of the axis with 20
    fpr_line = [line for line in ax.get_lines() if np.allclose(line.get_xdata(), PRIVACY_FPR)]
    assert len(fpr_line) == (n > 1000)
    pyplot().close(fig)
