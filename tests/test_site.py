"""The static site (bench/site.py) on the hand-made store, read back with the standard library's HTML parser:
the leaderboard rows equal build_leaderboard's, every link resolves, nothing is loaded from elsewhere, each cell
page has its figures and full spec, and the Markdown converter turns the leaderboard's texts into HTML."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from bench.cli import main
from bench.leaderboard import build_leaderboard, read_rows
from bench.site import CELLS_DIR, cell_pages, markdown_html, write_site
from tests.test_leaderboard import SETTINGS, make_store

#: Three settings of the hand-made store, one seed: an undefended and a DP-SGD MLP, and an undefended logreg.
DPSGD = ("mlp", {"width": 64}, "dpsgd", {"epsilon": 8.0}, 0.88, SETTINGS[1][5], 8.0)
SITE_SETTINGS = [SETTINGS[0], DPSGD, SETTINGS[5]]


class Page(HTMLParser):
    """What a test reads from a page: its tables (class, rows of cells: text and data-value), links, ids."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.svgs = 0
        self._cell: dict | None = None
        self._in_head = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(attributes["id"] or "")
        for name in ("href", "src"):
            if attributes.get(name) and tag not in ("use",):
                self.links.append(attributes[name] or "")
        if tag == "svg":
            self.svgs += 1
        elif tag == "table":
            self.tables.append({"class": attributes.get("class") or "", "head": [], "rows": []})
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self.tables and not self._in_head:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = {"text": "", "value": attributes.get("data-value")}

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self._cell["text"] = " ".join(self._cell["text"].split())
            if self._in_head:
                self.tables[-1]["head"].append(self._cell["text"])
            elif self.tables[-1]["rows"]:
                self.tables[-1]["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    make_store(folder / "results", settings=SITE_SETTINGS, seeds=(0,))
    written = write_site(folder / "results", folder / "site")
    return folder / "results", folder / "site", written


def _read(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def test_the_leaderboard_rows_are_build_leaderboards(site):
    results, root, _ = site
    board = build_leaderboard(read_rows(results))
    tables = [t for t in _read(root / "index.html").tables if "leaderboard" in t["class"]]
    assert len(tables) == board["group"].nunique() == 2
    for table, (_, group) in zip(tables, board.groupby("group", sort=False), strict=True):
        assert table["head"][:4] == ["★", "defense", "test accuracy", "strongest attack"]
        assert len(table["rows"]) == len(group)
        # the defense column starts with the setting's defense, the ★ column holds the Pareto mark
        assert [r[1]["text"].split(" seed")[0] for r in table["rows"]] == list(group["defense"])
        assert [r[0]["text"] == "★" for r in table["rows"]] == list(group["pareto"])
        assert [r[3]["text"] for r in table["rows"]] == list(group["strongest_attack"])
        # the numbers sort on data-value, which holds the board's values exactly
        tpr = table["head"].index("TPR @ 0.1 % FPR")
        assert [float(r[tpr]["value"]) for r in table["rows"]] == pytest.approx(list(group["tpr_at_fpr_0.1pct"]))
        rank = table["head"].index("rank [95 % interval]")
        assert [float(r[rank]["value"]) for r in table["rows"]] == pytest.approx(list(group["rank"]))
        assert all(f"[{low:g}, {high:g}]" in r[rank]["text"]
                   for r, low, high in zip(table["rows"], group["rank_ci_low"], group["rank_ci_high"], strict=True))


def test_the_marks_are_explained_in_the_leaderboards_words(site):
    _, root, _ = site
    text = (root / "index.html").read_text(encoding="utf-8")
    assert "★ marks the Pareto-optimal settings of each group" in text
    assert "values marked † below, where the FPR &lt; 1/n" in text
    # the hand-made audits have 20 non-members: the † note under each group, and the marks in the TPR columns
    assert "† Some targets are audited on only 20 non-members" in text
    assert text.count("class=\"mark\">†") >= 2
    assert text.count("<figure id=\"frontier-") == 2


def test_every_link_resolves_and_nothing_is_loaded_from_elsewhere(site):
    _, root, written = site
    pages = [p for p in written if p.suffix == ".html"]
    assert len(pages) == 1 + 3
    for path in pages:
        page = _read(path)
        assert page.links, path
        for link in page.links:
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc, f"{path.name} loads {link}"
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            assert target.is_file(), f"{path.name} links to a missing {link}"
            if parts.fragment:
                assert parts.fragment in _read(target).ids, f"{path.name}: no #{parts.fragment} in {target.name}"


def test_a_cell_page_has_its_figures_tables_and_full_spec(site):
    results, root, _ = site
    rows = read_rows(results)
    cell = next(c for c in cell_pages(rows) if "/ none /" in c.label and "mlp" in c.label)
    page = _read(root / cell.path)
    assert page.svgs == 3  # ROC, per-class, privacy risk
    attacks, per_class, riskiest, spec = page.tables
    assert {r[0]["text"] for r in attacks["rows"]} == {"lira", "loss", "privacy_risk"}
    assert [r[3]["text"] for r in per_class["rows"]] == ["minority", ""]  # class 0 is the 30 % minority
    assert len(riskiest["rows"]) == 10
    assert all(r[0]["text"].isdigit() for r in riskiest["rows"])  # indices, nothing else about the records
    values = {r[0]["text"]: r[1]["text"] for r in spec["rows"]}
    first = rows[rows["cell_key"] == cell.key].iloc[0]
    identity = [c for c in rows.columns if c.startswith(("dataset.", "architecture.", "defense.", "training."))
                and rows.loc[rows["cell_key"] == cell.key, c].notna().any()]
    for column in [*identity, "n_models", "n_targets", "test_fraction", "calibration_models", "seed"]:
        assert column in values, column
    assert values["defense"] == "none" and values["seed"] == "0" and values["cell_key"] == cell.key
    assert values["training.epochs"] == str(int(first["training.epochs"]))


def test_figures_keep_distinct_ids_on_a_page(site):
    _, root, _ = site
    text = (root / "index.html").read_text(encoding="utf-8")
    ids = [part.split("\"", 1)[0] for part in text.split(" id=\"")[1:]]
    assert len(ids) == len(set(ids))


def test_stale_cell_pages_are_removed_and_the_site_is_the_same_when_regenerated(tmp_path, capsys):
    make_store(tmp_path / "results", settings=[SETTINGS[5]], seeds=(0,))  # one cell
    first = write_site(tmp_path / "results", tmp_path / "first")
    again = tmp_path / "again"
    (again / CELLS_DIR).mkdir(parents=True)
    (again / CELLS_DIR / "gone.html").write_text("an old cell")
    assert main(["site", "--results", str(tmp_path / "results"), "--out", str(again)]) == 0
    assert "1 cell page " in capsys.readouterr().out
    assert not (again / CELLS_DIR / "gone.html").exists()
    for path in first:
        assert (again / path.relative_to(tmp_path / "first")).read_bytes() == path.read_bytes(), path.name


def test_an_empty_store_is_one_line_exit_2(tmp_path, capsys):
    make_store(tmp_path / "results", settings=[], seeds=(0,))
    assert main(["site", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "site")]) == 2
    assert "error:" in capsys.readouterr().err


def test_markdown_html_converts_what_the_leaderboard_writes():
    text = ("## a · b\n\nOne **bold** and *em* with `co|de` and a [link](x.html#y) & <tag>.\n\n"
            "| a | b \\| c |\n|---|---|\n| 1 | **2** |\n\n- one\n  more\n- two\n\n![figure](roc.svg)\n")
    out = markdown_html(text, images={"roc.svg": "<svg>drawn</svg>"})
    assert "<h2>a · b</h2>" in out
    assert ("<p>One <strong>bold</strong> and <em>em</em> with <code>co|de</code> and a "
            "<a href=\"x.html#y\">link</a> &amp; &lt;tag&gt;.</p>") in out
    page = Page(out)
    assert page.tables[0]["head"] == ["a", "b | c"] and [c["text"] for c in page.tables[0]["rows"][0]] == ["1", "2"]
    assert "<ul><li>one more</li><li>two</li></ul>" in out
    assert "<figure><svg>drawn</svg></figure>" in out
    assert "<img src=\"other.svg\"" in markdown_html("![x](other.svg)")


def test_numbers_missing_from_the_board_sort_last(site):
    _, root, _ = site
    table = [t for t in _read(root / "index.html").tables if "leaderboard" in t["class"]][-1]  # toy / mlp
    epsilon = table["head"].index("ε (accountant)")
    values = [r[epsilon]["value"] for r in table["rows"]]
    assert "" in values and any(v for v in values)  # "" (no accountant) sorts last; the DP row has a number
    assert all(np.isfinite(float(v)) for v in values if v)
