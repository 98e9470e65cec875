"""A static HTML site of a results store: the leaderboard and one page per cell, with no server and no framework.

``python -m bench site`` writes, from the store alone (no training):

- ``index.html``: the leaderboard of :func:`bench.leaderboard.build_leaderboard`, one sortable table per dataset ×
  architecture group with the columns of ``LEADERBOARD.md`` (the marks ★ † ↓ ▽ and the rank intervals explained in
  the words of :func:`bench.leaderboard.to_markdown`), each group's accuracy–privacy frontier as inline SVG, and
  links to the cell pages;
- ``cells/<cell slug>.html``: one page per cell with its attacks' metrics, the ROC curves (log–log), the
  per-class exposure of its strongest attack, the privacy-risk histogram with the riskiest records (their indices,
  never their content) and the cell's full spec: every identity column of its store rows, the privbench version
  that wrote them and the code versions of its components;
- ``style.css`` (shared) and ``leaderboard.csv`` (the board as a table).

The figures are those of :mod:`bench.plots`, written as SVG into the pages. Links are relative, and nothing is
loaded from elsewhere, so the site works from the file system (``file://``) and from any static host. A few lines
of vanilla JavaScript sort a table when its header is clicked (numbers by the cell's ``data-value``); without
JavaScript the tables are still there, in the leaderboard's order.

The Markdown that :mod:`bench.leaderboard` writes (its explanations and the notes under each group) is turned into
HTML by :func:`markdown_html`, a converter of the few constructs these texts use, so that the site explains the
board in the same words.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench import __version__
from bench.leaderboard import (
    FPR_COLUMNS,
    NAIVE,
    OUTSIDER,
    THREATS,
    UTILITY_NAMES,
    _notes,
    _other_attackers,
    attack_summary,
    build_leaderboard,
    read_rows,
    threat_mask,
    to_markdown,
)
from bench.metrics import FPR_LEVELS, MINORITY_SHARE
from bench.plots import (
    detail_samples,
    frontier_figure,
    per_class_figure,
    per_class_series,
    plot_cells,
    pyplot,
    risk_figure,
    riskiest_records,
    roc_figure,
    slug,
)
from bench.rows import RUN, VERSION
from bench.settings import GROUP_COLUMNS, format_value
from bench.spec import PROTOCOL_PARAMS
from privkernel.errors import BenchError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

#: The site's shared style sheet, written beside ``index.html``.
STYLE_FILE = "style.css"
#: The folder of the cell pages.
CELLS_DIR = "cells"
#: How many riskiest records a cell page lists.
RISKIEST = 10

CSS = """\
:root { --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --band: #f6f8fa; --accent: #0550ae; --mark: #9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); margin: 0; background: #fff; }
main { max-width: 1320px; margin: 0 auto; padding: 16px 20px 48px; }
h1 { font-size: 1.6em; margin: 0.4em 0; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1em; margin-top: 1.6em; }
a { color: var(--accent); } code { font-size: 0.92em; background: var(--band); padding: 0 3px; border-radius: 3px; }
p, li { max-width: 110ch; } .muted, footer { color: var(--muted); } footer { margin-top: 3em; font-size: 0.9em; }
nav.crumbs { font-size: 0.95em; margin-bottom: 0.5em; }
details { margin: 0.8em 0; } summary { cursor: pointer; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 7px; text-align: left; vertical-align: top; }
thead th { background: var(--band); border-bottom: 2px solid var(--line); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; } th.num { text-align: right; }
.ci { display: block; color: var(--muted); font-size: 11px; white-space: nowrap; }
.mark { color: var(--mark); font-weight: 700; }
tr.pareto td:first-child { color: var(--mark); font-weight: 700; text-align: center; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th button { all: inherit; display: inline; border: 0; background: none; cursor: pointer;
                                 padding: 0; }
table.sortable thead th[aria-sort="ascending"] button::after { content: " \\25B2"; font-size: 0.8em; }
table.sortable thead th[aria-sort="descending"] button::after { content: " \\25BC"; font-size: 0.8em; }
table.spec td:first-child { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
figure { margin: 1em 0 2em; } figure svg { max-width: 100%; height: auto; display: block; }
figure svg text { white-space: pre; }  /* the figures align their monospace tables with spaces */
figcaption { color: var(--muted); font-size: 0.92em; max-width: 110ch; }
ul.cells { columns: 2; font-size: 0.92em; }
"""

#: Sorting of ``table.sortable``: a click on a header orders the rows by that column, numbers by ``data-value``
#: (missing values last either way), text by its letters; a second click reverses the order.
SORT_SCRIPT = """\
<script>
document.querySelectorAll("table.sortable thead th").forEach((th, column) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], up = th.getAttribute("aria-sort") !== "ascending";
  th.parentNode.querySelectorAll("th").forEach(other => other.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", up ? "ascending" : "descending");
  const key = row => { const cell = row.cells[column];
    return "value" in cell.dataset ? parseFloat(cell.dataset.value) : cell.textContent.trim().toLowerCase(); };
  const order = (a, b) => typeof a === "number" ? (isNaN(a) || isNaN(b) ? isNaN(a) - isNaN(b) : up ? a - b : b - a)
                                                : (up ? a.localeCompare(b) : b.localeCompare(a));
  body.append(...Array.from(body.rows).sort((x, y) => order(key(x), key(y))));
}));
</script>
"""


# --- HTML pieces ------------------------------------------------------------------------------------------------


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped too, so the result also fits an attribute)."""
    return html.escape(str(value), quote=True)


#: The footer of the site's pages.
SITE_FOOTER = "Written by privbench {version} from the results store alone; regenerate it with python -m bench site."


def page(title: str, body: str, root: str = "", script: str = "", inline_css: bool = False,
         footer: str = SITE_FOOTER) -> str:
    """A whole HTML page: ``root`` is the relative path from the page to the site's root (``""`` or ``"../"``);
    with ``inline_css`` the style sheet is written into the page (a single file that stands alone); ``footer`` is
    text (``{version}``: privbench's)."""
    style = f"<style>\n{CSS}</style>" if inline_css else f"<link rel=\"stylesheet\" href=\"{root}{STYLE_FILE}\">"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n{style}\n</head>\n<body>\n<main>\n"
        f"{body}\n<footer>{esc(footer.format(version=__version__))}</footer>\n</main>\n"
        f"{script}</body>\n</html>\n"
    )


def number_value(value: object) -> str:
    """The ``data-value`` of a numeric cell: the number, or ``""`` where there is none (sorted last)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return repr(number) if np.isfinite(number) else ""


def cell_html(value: object, shown: str | None = None, ci: tuple[float, float] | None = None, digits: int = 3,
              mark: str = "") -> str:
    """A numeric ``<td>``: the value (or ``shown``), its interval below it in small type, and a mark after it."""
    number = number_value(value)
    text = shown if shown is not None else (f"{float(value):.{digits}f}" if number else "–")
    if mark:
        text += f" <span class=\"mark\">{esc(mark)}</span>"
    if ci is not None and number and all(np.isfinite(ci)):
        text += f"<span class=\"ci\">[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]</span>"
    return f"<td class=\"num\" data-value=\"{number}\">{text}</td>"


def table_html(header: Sequence[str], rows: Iterable[Sequence[str]], classes: str = "",
               row_classes: Sequence[str] | None = None) -> str:
    """A ``<table>`` from header texts (escaped here) and rows of ready ``<td>`` markup; the header of a column
    whose cells are all numeric (:func:`cell_html`) is aligned with its numbers."""
    rows = [list(row) for row in rows]
    sortable = "sortable" in classes.split()
    numeric = [bool(rows) and all(i < len(row) and row[i].startswith("<td class=\"num\"") for row in rows)
               for i in range(len(header))]
    opening, closing = ("<button type=button>", "</button>") if sortable else ("", "")
    heads = "".join(f"<th scope=\"col\"{' class=num' if num else ''}>{opening}{esc(h)}{closing}</th>"
                    for h, num in zip(header, numeric, strict=True))
    body = []
    for i, row in enumerate(rows):
        css = f" class=\"{row_classes[i]}\"" if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>{''.join(row)}</tr>")
    css = f" class=\"{classes}\"" if classes else ""
    return (f"<div class=\"scroll\"><table{css}>\n<thead><tr>{heads}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody>\n</table></div>")


def text_cell(content: str) -> str:
    """A ``<td>`` of text (escaped here)."""
    return f"<td>{esc(content)}</td>"


# --- Markdown of the leaderboard and the reports -----------------------------------------------------------------

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")


def _inline(text: str) -> str:
    """Inline Markdown of one block: `code`, **bold**, *emphasis*, [links](href); everything else escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{esc(part[1:-1])}</code>")
            continue
        part = esc(part.replace("\\|", "|"))
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", part)
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', part)
        out.append(part)
    return "".join(out)


def _table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def markdown_html(text: str, images: Mapping[str, str] | None = None) -> str:
    """HTML of the Markdown that privbench writes: headings, paragraphs, ``- `` lists, pipe tables (the first row
    the header) and images alone on a line; an image named in ``images`` is replaced by that markup (an inline SVG),
    any other becomes an ``<img>``."""
    images = images or {}
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    out = []
    for block in blocks:
        first = block[0]
        if first.startswith("#"):
            level = min(len(first) - len(first.lstrip("#")), 6)
            out.append(f"<h{level}>{_inline(first[level:].strip())}</h{level}>")
            block = block[1:]
            if not block:
                continue
        if all(line.lstrip().startswith("|") for line in block):
            rows = [_table_cells(line) for line in block if not re.fullmatch(r"\s*\|(\s*:?-+:?\s*\|)+\s*", line)]
            out.append(table_html([html.unescape(_inline(h)) for h in rows[0]],
                                  [[f"<td>{_inline(c)}</td>" for c in row] for row in rows[1:]]))
        elif all(line.startswith("- ") or line.startswith("  ") for line in block):
            items, item = [], ""
            for line in block:
                if line.startswith("- "):
                    if item:
                        items.append(item)
                    item = line[2:]
                else:
                    item += " " + line.strip()
            items.append(item)
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        elif len(block) == 1 and _IMAGE.match(first):
            alt, src = _IMAGE.match(first).groups()
            out.append(f"<figure>{images[src]}</figure>" if src in images
                       else f"<figure><img src=\"{esc(src)}\" alt=\"{esc(alt)}\"></figure>")
        else:
            out.append(f"<p>{_inline(' '.join(line.strip() for line in block))}</p>")
    return "\n".join(out)


# --- figures as inline SVG ---------------------------------------------------------------------------------------


def svg_text(fig: plt.Figure) -> str:
    """``fig`` as an SVG document, drawn as :func:`bench.plots.save` draws its SVG files; the figure is closed."""
    buffer = io.StringIO()
    try:
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    finally:
        pyplot().close(fig)
    return buffer.getvalue()


def inline_svg(text: str, prefix: str) -> str:
    """An SVG document (:func:`svg_text`) as an ``<svg>`` element to write into a page: without its XML prologue,
    every ``id`` prefixed with ``prefix`` so that several figures on one page keep distinct ids."""
    text = text[text.index("<svg"):]
    text = re.sub(r'(\bid="|href="#|url\(#)', lambda m: f"{m.group(1)}{prefix}-", text)
    return text.replace("<svg ", f"<svg role=\"img\" aria-label=\"{esc(prefix)}\" ", 1)


def figure_html(fig: plt.Figure | None, prefix: str, caption: str) -> str:
    """A ``<figure>`` with ``fig`` inline and its caption ("" when there is no figure)."""
    if fig is None:
        return ""
    svg = inline_svg(svg_text(fig), prefix)
    return f"<figure id=\"{esc(prefix)}\">\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>"


# --- the cells ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellPage:
    """One cell of the site: its store key, its label (with its options where cells share a label), the setting
    it belongs to and the page's path relative to the site's root."""

    key: str
    label: str
    setting: str
    seed: int
    path: str


def cell_pages(df: pd.DataFrame) -> list[CellPage]:
    """A page for every cell of the labelled rows ``df``, ordered by setting and seed; file names from the cell
    labels (:func:`bench.plots.slug`), made unique with the cell key where two labels give the same name."""
    cells = plot_cells(df, "*")
    firsts = df.drop_duplicates("cell_key").set_index("cell_key")
    names = [slug(label) for label in cells["cell"]]
    counts = pd.Series(names).value_counts()
    pages = []
    for (key, label), name in zip(cells[["cell_key", "cell"]].itertuples(index=False), names, strict=True):
        if counts[name] > 1:
            name = f"{name}__{key}"
        first = firsts.loc[key]
        pages.append(CellPage(key, label, str(first["setting"]), int(first["seed"]), f"{CELLS_DIR}/{name}.html"))
    return pages


def spec_rows(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The full spec of one cell from its store rows: every identity column (component names and parameters,
    training options, the protocol, the seed, the cell key), the provenance columns ``run.*`` (``run.privbench``:
    the version that wrote the rows) and the components' code versions ``version.*`` (the attacks' versions are on
    the attack table). A column whose rows disagree shows every value."""

    def shown(column: str) -> str:
        values = [format_value(v) for v in rows[column].dropna().unique()]
        return ", ".join(sorted(values))

    out = [("cell_key", shown("cell_key"))]
    for family in ("dataset", "architecture", "defense"):
        name = f"{family}_name" if f"{family}_name" in rows else family
        out.append((family, shown(name)))
        out += [(c, shown(c)) for c in sorted(rows.columns) if c.startswith(f"{family}.") and rows[c].notna().any()]
    out += [(c, shown(c)) for c in sorted(rows.columns) if c.startswith("training.") and rows[c].notna().any()]
    out += [(p.name, shown(p.name)) for p in PROTOCOL_PARAMS if p.name in rows and rows[p.name].notna().any()]
    out.append(("seed", shown("seed")))
    out += [(c, shown(c)) for c in sorted(rows.columns) if c.startswith(RUN) and rows[c].notna().any()]
    out += [(c, shown(c)) for c in sorted(rows.columns)
            if c.startswith(VERSION) and c != f"{VERSION}attack" and rows[c].notna().any()]
    return out


def attack_table(rows: pd.DataFrame) -> str:
    """The metrics of every attack of one cell, means over its targets with 95 % bootstrap intervals, by attacker
    (the outsider first), strongest first by mean TPR at 0.1 % FPR; then the attacks that were skipped, and why."""
    entries = []
    for name, (access, knowledge) in {"outsider": OUTSIDER, **THREATS}.items():
        threat_rows = rows[threat_mask(rows, access, knowledge)]
        summary = attack_summary(threat_rows)
        summary = summary.sort_values(["tpr_at_fpr_0.1pct", "auc", "attack"], ascending=[False, False, True])
        for _, entry in summary.iterrows():
            versions = threat_rows.loc[threat_rows["attack_key"] == entry["attack"], f"{VERSION}attack"] \
                if f"{VERSION}attack" in threat_rows else pd.Series(dtype=object)
            entries.append([
                text_cell(entry["attack"]), text_cell(name),
                *[cell_html(entry[m], ci=(entry[f"{m}_ci_low"], entry[f"{m}_ci_high"])) for m, _ in FPR_COLUMNS],
                cell_html(entry["auc"], ci=(entry["auc_ci_low"], entry["auc_ci_high"])),
                cell_html(entry["balanced_accuracy"]), cell_html(entry["epsilon_lower_bound"], digits=2),
                cell_html(entry["n"], shown=str(entry["n"])),
                text_cell(", ".join(sorted(map(format_value, versions.dropna().unique())))),
            ])
    html_out = table_html(["attack", "attacker", *[title for _, title in FPR_COLUMNS], "AUC", "balanced accuracy",
                           "ε lower bound", "targets", "version"], entries, "sortable")
    skipped = rows[rows["skipped"].notna()] if "skipped" in rows else rows.iloc[0:0]
    if len(skipped):
        reasons = skipped.drop_duplicates("attack_key")
        html_out += "<p>Not run on this cell:</p><ul>" + "".join(
            f"<li><code>{esc(r['attack_key'])}</code>: {esc(r['skipped'])}</li>" for _, r in reasons.iterrows()
        ) + "</ul>"
    return html_out


def per_class_table(samples: pd.DataFrame) -> str:
    """Per class of one attack's samples: records, share, the minority flag, AUC and TPR at FPR = 0 with their
    intervals over the targets (:func:`bench.plots.per_class_series`)."""
    table = per_class_series(samples)
    entries = [[
        text_cell(format_value(r["label"])), cell_html(r["n"], shown=str(r["n"])),
        cell_html(r["share"], shown=f"{100 * r['share']:.1f} %"), text_cell("minority" if r["minority"] else ""),
        cell_html(r["auc"], ci=(r["auc_ci_low"], r["auc_ci_high"])),
        cell_html(r["tpr_at_fpr_0"], ci=(r["tpr_at_fpr_0_ci_low"], r["tpr_at_fpr_0_ci_high"])),
    ] for _, r in table.iterrows()]
    return table_html(["class", "records", "share", "minority", "AUC", "TPR @ 0 % FPR"], entries, "sortable")


def riskiest_table(samples: pd.DataFrame, k: int = RISKIEST) -> str:
    """The ``k`` riskiest records of a cell (:func:`bench.plots.riskiest_records`): indices and scores only."""
    top = riskiest_records(samples, k)
    entries = [[cell_html(r.record, shown=str(int(r.record))), cell_html(r.mean_risk_as_member),
                cell_html(r.n_as_member, shown=str(int(r.n_as_member))), cell_html(r.mean_risk_as_nonmember)]
               for r in top.itertuples(index=False)]
    return table_html(["record (index in the dataset)", "mean risk as a member", "targets that trained on it",
                       "mean risk as a non-member"], entries)


def cell_body(cell: CellPage, rows: pd.DataFrame, samples: pd.DataFrame | None, group_anchor: str) -> str:
    """The content of one cell's page."""
    parts = [f"<nav class=\"crumbs\"><a href=\"../index.html\">Leaderboard</a> › "
             f"<a href=\"../index.html#{group_anchor}\">{esc(rows['group'].iloc[0])}</a></nav>",
             f"<h1>{esc(cell.label)}</h1>",
             f"<p class=\"muted\">Setting <strong>{esc(cell.setting)}</strong>, seed {cell.seed}: "
             f"{rows['target'].nunique()} target models audited. Means over the targets with 95 % bootstrap "
             "intervals; TPR at a fixed FPR as the leaderboard reads it.</p>",
             "<h2>Attacks</h2>", attack_table(rows)]
    if samples is None or samples.empty:
        parts.append("<p>The store holds no per-record samples of this cell: no ROC, per-class or risk figures.</p>")
    else:
        parts += ["<h2>ROC curves</h2>", figure_html(
            roc_figure(samples, cell.label), "roc",
            "Every attack of the cell, pooled over its targets, on log–log axes: the low-FPR region is where an "
            "attacker's confident claims live. The dashed diagonal is random guessing (TPR = FPR).") or
            "<p>No attack has both members and non-members to draw.</p>"]
        best, best_samples, risk = detail_samples(rows, cell.key, samples)
        figure = per_class_figure(best_samples, best, cell.label) if best is not None else None
        parts.append("<h2>Per-class exposure</h2>")
        if figure is None:
            parts.append("<p>No per-class figure: a regression target, or no attack with samples.</p>")
        else:
            parts += [figure_html(figure, "per-class",
                                  f"The strongest attack of the cell ({esc(best)}) on the records of each class. A "
                                  f"class whose share of the audited records is below {MINORITY_SHARE:g}/C is a "
                                  "minority class (hatched orange)."), per_class_table(best_samples)]
        parts.append("<h2>Privacy risk</h2>")
        figure = risk_figure(risk, cell.label, RISKIEST)
        if figure is None:
            parts.append("<p>This cell ran no <code>privacy_risk</code> attack (Song &amp; Mittal's risk score), so "
                         "there is no risk histogram.</p>")
        else:
            parts += [figure_html(figure, "risk",
                                  "Song &amp; Mittal's privacy risk score of every audited record, members against "
                                  "non-members, pooled over the targets."),
                      "<h3>Riskiest records</h3><p>By their mean risk score over the target models that trained on "
                      "them: indices into the dataset only, never the records' content.</p>", riskiest_table(risk)]
    parts += ["<h2>Spec</h2>",
              "<p>Every identity column of the cell's store rows, the run that wrote them (<code>run.privbench</code>: "
              "the privbench version) and the code versions of its components.</p>",
              table_html(["column", "value"], [[text_cell(k), text_cell(v)] for k, v in spec_rows(rows)], "spec")]
    return "\n".join(parts)


# --- the index ---------------------------------------------------------------------------------------------------


def group_anchor(group: str) -> str:
    return "group-" + slug(group)


def _dagger(row: pd.Series, metric: str) -> bool:
    """Whether ``row``'s TPR at ``metric``'s FPR lies below what its audits resolve (the † of the board)."""
    resolvable, level = row.get("min_resolvable_fpr", np.nan), FPR_LEVELS[metric]
    return bool(np.isfinite(resolvable) and resolvable > level and level > 0)


def leaderboard_table(rows: pd.DataFrame, pages: Sequence[CellPage], common: str) -> str:
    """One group's leaderboard rows as a sortable table with the columns of ``LEADERBOARD.md`` and links to the
    setting's cell pages."""
    utility = rows["utility_metric"].iloc[0] or "test_accuracy"
    by_setting: dict[str, list[CellPage]] = {}
    for cell in pages:
        by_setting.setdefault(cell.setting, []).append(cell)
    entries, classes = [], []
    for _, row in rows.iterrows():
        links = " ".join(f"<a href=\"{esc(c.path)}\">seed&nbsp;{c.seed}</a>"
                         for c in by_setting.get(row["setting"], []))
        name = row["defense"] + (f" [{row['options']}]" if row["options"] and not common else "")
        tprs = []
        for metric, _ in FPR_COLUMNS:
            mark = "†" if _dagger(row, metric) else ""
            if metric == FPR_COLUMNS[1][0] and row.get("leakage_lower", False):
                mark = f"{mark} ↓".strip()
            tprs.append(cell_html(row[metric], ci=(row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]), mark=mark))
        bound = row["epsilon_lower_bound"]
        attack = (row["strongest_attack"] or "–") + (" (naive)" if row["strongest_attack_selection"] == NAIVE else "")
        rank = row["rank"]
        entries.append([
            f"<td data-value=\"{int(bool(row['pareto']))}\">{'★' if row['pareto'] else ''}</td>",
            f"<td>{esc(name)} <span class=\"ci\">{links}</span></td>",
            cell_html(row[utility], ci=(row[f"{utility}_ci_low"], row[f"{utility}_ci_high"]),
                      mark="▽" if row.get("utility_lower", False) else ""),
            text_cell(attack), *tprs,
            cell_html(row["auc"], ci=(row["auc_ci_low"], row["auc_ci_high"])),
            cell_html(rank, shown=None if not np.isfinite(rank) else
                      f"{rank:g}<span class=\"ci\">[{row['rank_ci_low']:g}, {row['rank_ci_high']:g}]</span>"),
            cell_html(row["epsilon"], digits=2),
            cell_html(bound, digits=2) if not (row["epsilon_lower_bound_attack"] and bound > 0) else
            cell_html(bound, shown=f"{bound:.2f}<span class=\"ci\">{esc(row['epsilon_lower_bound_attack'])}</span>"),
            cell_html(row["target_models"], shown=f"{row['target_models']} ({row['seeds']} "
                                                  f"seed{'s' * (row['seeds'] > 1)})"),
        ])
        classes.append("pareto" if row["pareto"] else "")
    header = ["★", "defense", UTILITY_NAMES.get(utility, utility), "strongest attack",
              *[title for _, title in FPR_COLUMNS], "AUC", "rank [95 % interval]", "ε (accountant)", "ε lower bound",
              "target models"]
    return table_html(header, entries, "sortable leaderboard", classes)


def _intro_markdown(board: pd.DataFrame, source: str) -> str:
    """The leaderboard's explanations as :func:`bench.leaderboard.to_markdown` writes them, less its title and its
    note on where the files are (the site says that itself)."""
    text = to_markdown(board.iloc[0:0], source)
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "\n\n".join(p for p in paragraphs if not p.startswith(("# ", "Regenerated from", "Figures (")))


def index_body(board: pd.DataFrame, pages: Sequence[CellPage], source: str) -> str:
    """The content of ``index.html``: the explanations, then per group its frontier figure and table."""
    groups = list(board.groupby(list(GROUP_COLUMNS), sort=False))
    toc = "".join(f"<li><a href=\"#{group_anchor(rows['group'].iloc[0])}\">{esc(rows['group'].iloc[0])}</a> "
                  f"({len(rows)} setting{'s' * (len(rows) != 1)})</li>" for _, rows in groups)
    parts = [
        "<h1>privbench leaderboard</h1>",
        f"<p>{len(board)} settings in {len(groups)} dataset × architecture group{'s' * (len(groups) != 1)}, "
        f"{len(pages)} cell{'s' * (len(pages) != 1)}, from the "
        f"store <code>{esc(source)}</code>. Click a column header to sort by it; <a href=\"leaderboard.csv\">"
        "leaderboard.csv</a> holds every column (balanced accuracy and p-values included). Each setting links to "
        "the page of each of its cells (one per seed): ROC curves, per-class exposure, privacy risk and the full "
        "spec.</p>",
        f"<ul>{toc}</ul>",
        "<details><summary>How to read the board</summary>", markdown_html(_intro_markdown(board, source)),
        "</details>",
    ]
    for _, rows in groups:
        group = rows["group"].iloc[0]
        common = rows["options"].iloc[0] if rows["options"].nunique() == 1 else ""
        parts.append(f"<h2 id=\"{group_anchor(group)}\">{esc(group)}</h2>")
        if common:
            parts.append(f"<p>Options: {esc(common)}.</p>")
        parts.append(leaderboard_table(rows, pages, common))
        parts.append(markdown_html("\n".join(_notes(rows, common) + _other_attackers(rows, common))))
        parts.append(figure_html(frontier_figure(rows), f"frontier-{slug(group)}",
                                 "Accuracy–privacy frontier of the group: each setting's utility against the TPR at "
                                 "0.1 % FPR (left, log scale) and the AUC (right) of its strongest attack, with 95 % "
                                 "intervals and the Pareto staircase; the numbers are keyed to the table below the "
                                 "axes."))
    return "\n".join(parts)


# --- everything --------------------------------------------------------------------------------------------------


def write_site(results: Path | str, out: Path | str, grid: str | None = None) -> list[Path]:
    """Write the site of the store in ``results`` (with ``grid``: that grid's rows only) into ``out``.

    Parameters
    ----------
    results
        Folder of the results store.
    out
        Folder of the site; cell pages of an earlier site that this one has no cell for are removed.
    grid
        Only the rows this grid wrote, when several grids share the store.

    Returns
    -------
    list of pathlib.Path
        The files written: ``index.html``, ``style.css``, ``leaderboard.csv`` and ``cells/*.html``.
    """
    from bench.store import read_samples

    rows = read_rows(results, grid=grid)
    board = build_leaderboard(rows)
    try:
        samples = read_samples(results)
        samples = samples[samples["cell_key"].isin(set(rows["cell_key"]))]
    except BenchError:  # a store without the samples table: no per-record figures
        samples = None
    by_cell = dict(tuple(samples.groupby("cell_key", sort=False))) if samples is not None else {}
    pages = cell_pages(rows)
    root = Path(out)
    try:
        (root / CELLS_DIR).mkdir(parents=True, exist_ok=True)
        written = [root / STYLE_FILE, root / "leaderboard.csv"]
        written[0].write_text(CSS, encoding="utf-8")
        board.to_csv(written[1], index=False)
        for cell in pages:
            cell_rows = rows[rows["cell_key"] == cell.key]
            body = cell_body(cell, cell_rows, by_cell.get(cell.key), group_anchor(cell_rows["group"].iloc[0]))
            path = root / cell.path
            path.write_text(page(f"{cell.label} · privbench", body, root="../", script=SORT_SCRIPT),
                            encoding="utf-8")
            written.append(path)
        index = root / "index.html"
        index.write_text(page("privbench leaderboard", index_body(board, pages, str(results)),
                              script=SORT_SCRIPT), encoding="utf-8")
        written.append(index)
        kept = set(written)
        for stale in (root / CELLS_DIR).glob("*.html"):
            if stale not in kept:
                stale.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write the site into {root} ({exc}); pass a writable folder with --out") from None
    return written
