"""The static site in a real browser: Debian's chromium, headless, driven by Playwright with the system browser
(no browser is ever downloaded). A tiny grid is run, its site written with ``bench site`` and opened from the file
system: the leaderboard has its rows, a click on a header sorts them, a link leads to a cell page whose SVG
figures are drawn, and screenshots are taken. Where playwright or chromium is missing the tests are skipped with
the reason; with ``PRIVBENCH_BROWSER=required`` (as .ci/run sets it) they fail instead, so CI cannot pass them
without a browser."""

from __future__ import annotations

import os
import shutil

import pytest

from bench.cli import main
from bench.leaderboard import build_leaderboard, read_rows
from tests.conftest import TINY_GRID, write_grid

REQUIRED = os.environ.get("PRIVBENCH_BROWSER") == "required"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}, and PRIVBENCH_BROWSER=required")
    pytest.skip(reason)


try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

#: The tiny grid with three settings of one MLP (so that a sort has rows to order) and the privacy-risk attack
#: (so that a cell page has all three figures).
GRID = {**TINY_GRID, "name": "browser", "architectures": [{"name": "mlp", "params": {"width": 16, "depth": 1}}],
        "defenses": ["none", {"name": "l2", "params": {"weight_decay": [0.01, 0.1]}}],
        "attacks": ["loss", "privacy_risk"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    grid = write_grid(folder, GRID)
    assert main(["grid", "--grid", str(grid), "--cache-dir", str(folder / "cache"), "--results",
                 str(folder / "results"), "--quiet", "--no-report"]) == 0
    assert main(["site", "--results", str(folder / "results"), "--out", str(folder / "site")]) == 0
    return folder / "results", folder / "site"


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        _missing("playwright is not installed (pip install playwright; no `playwright install` is needed)")
    if CHROMIUM is None:
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A laptop-sized page that records script errors and every URL it requests."""
    opened = browser.new_page(viewport={"width": 1366, "height": 768})
    opened.errors, opened.requests = [], []
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.on("request", lambda request: opened.requests.append(request.url))
    yield opened
    opened.close()


def _column(page, table: int, header: str) -> list[float]:
    return page.evaluate(
        """([table, header]) => {
          const t = document.querySelectorAll("table.leaderboard")[table];
          const column = Array.from(t.tHead.rows[0].cells).findIndex(th => th.textContent.trim() === header);
          return Array.from(t.tBodies[0].rows, row => parseFloat(row.cells[column].dataset.value));
        }""", [table, header])


def test_the_leaderboard_opens_from_the_disk_with_its_rows(page, site, tmp_path):
    results, root = site
    board = build_leaderboard(read_rows(results))
    page.goto((root / "index.html").as_uri())
    tables = page.locator("table.leaderboard")
    assert tables.count() == board["group"].nunique() == 1
    assert tables.nth(0).locator("tbody tr").count() == len(board) == 3
    assert page.locator("figure[id^=frontier] svg").count() == 1
    # nothing but the site's own files is requested, and no script fails
    assert page.requests and all(url.startswith("file://") for url in page.requests), page.requests
    assert not page.errors
    # fits a laptop screen: no horizontal scrolling at 1366 px
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    assert (tmp_path / "index.png").stat().st_size > 20_000


def test_a_click_on_a_header_sorts_the_rows(page, site):
    _, root = site
    page.goto((root / "index.html").as_uri())
    header = page.locator("table.leaderboard th", has_text="TPR @ 0.1 % FPR").first
    header.click()
    ascending = _column(page, 0, "TPR @ 0.1 % FPR")
    assert ascending == sorted(ascending) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = _column(page, 0, "TPR @ 0.1 % FPR")
    assert descending == sorted(descending, reverse=True) and header.get_attribute("aria-sort") == "descending"
    # text columns sort by their letters
    page.locator("table.leaderboard th", has_text="defense").first.click()
    names = page.evaluate("""Array.from(document.querySelectorAll("table.leaderboard")[0].tBodies[0].rows,
                                        row => row.cells[1].textContent.trim().toLowerCase())""")
    assert names == sorted(names) and len(names) == 3
    assert not page.errors


def test_a_link_leads_to_a_cell_page_with_its_figures(page, site, tmp_path):
    _, root = site
    page.goto((root / "index.html").as_uri())
    page.locator("table.leaderboard a", has_text="seed 0").first.click()
    page.wait_for_load_state()
    assert "/cells/" in page.url and page.url.endswith(".html")
    figures = page.locator("figure svg")
    assert figures.count() == 3  # ROC, per-class exposure, privacy risk
    for i in range(3):
        box = figures.nth(i).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 150
        assert figures.nth(i).locator("path").count() > 10  # drawn, not an empty frame
    assert page.locator("h2", has_text="Spec").count() == 1
    assert page.locator("table.spec td", has_text="run.privbench").count() == 1
    assert all(url.startswith("file://") for url in page.requests) and not page.errors
    page.screenshot(path=str(tmp_path / "cell.png"), full_page=True)
    assert (tmp_path / "cell.png").stat().st_size > 20_000
    page.locator("nav a", has_text="Leaderboard").click()
    page.wait_for_load_state()
    assert page.url.endswith("index.html")
