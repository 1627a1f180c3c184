"""The HTML report of a small real run: structure, files, escaping, and a real browser."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from cbr_cli.io.render.report import render_index, render_report, url
from cbr_cli.io.render.report_context import (
    IndexContext,
    IndexEntry,
    Picture,
    Table,
    shape_table,
)
from tests.run.report_run import XSS_NAME, BuiltReport, build_report

CHROMIUM = shutil.which("chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltReport:
    return build_report(tmp_path_factory.mktemp("report"))


class Page(HTMLParser):
    """Every element's tag and attributes, the text, and the links to files."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def links(self) -> list[str]:
        found = []
        for _tag, attrs in self.tags:
            for key in ("src", "href"):
                value = attrs.get(key)
                if value and not value.startswith(("#", "data:")):
                    found.append(value)
        return found


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def test_every_referenced_file_exists_and_links_are_relative(built: BuiltReport) -> None:
    page = parse(built.html.read_text(encoding="utf-8"))
    links = page.links()
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    # input + kernels + 3 grids + filmstrip (input + 3 stages) x 8 channels + histogram
    assert len(images) == 2 * (1 + 1 + 3 + 8 * 4 + 1)
    for link in links:
        assert "://" not in link and not link.startswith("/"), link
        assert (built.out / unquote(link)).is_file(), link


def test_report_contents_in_reading_order(built: BuiltReport) -> None:
    html = built.html.read_text(encoding="utf-8")
    text = " ".join(parse(html).text)
    order = [
        "cbr apply",  # the command line
        "Pipeline, as resolved",
        "Package versions",
        "Warnings",
        "Shapes",
        "face",
        "layer1",
        "kernels",
        "Conv",
        "One channel through the layer",
        "Distributions",
        "Statistics",
    ]
    at = 0
    for word in order:  # each after the one before (the YAML also names layer1)
        at = text.index(word, at)
    assert "kernels: demo" not in text and "log:5:0.8" in text  # the bank names
    assert "numpy" in text and "conv -> bn -> act" in text
    page = parse(html)
    options = [a for tag, a in page.tags if tag == "option"]
    assert len(options) == 2 * 8  # a channel selector per filmstrip
    assert not any(tag in {"link", "script"} and a.get("src") for tag, a in page.tags)


def test_user_strings_are_escaped(built: BuiltReport) -> None:
    html = built.html.read_text(encoding="utf-8")
    assert XSS_NAME not in html  # never as markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # but shown as text
    page = parse(html)
    assert not any(tag == "img" and "onerror" in attrs for tag, attrs in page.tags)
    assert url(f"{XSS_NAME}/input.png") == "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/input.png"


def test_dead_and_clipped_channels_are_highlighted(tmp_path: Path) -> None:
    context = build_report(tmp_path, range_rule="max").context  # max: nothing clipped
    rows = context.images[0].layers[0].stages[-1].rows
    # Ranges that reach the data everywhere, then one channel dead and one clipped.
    changed = [
        r.__class__(**{**r.__dict__, "dead": i == 1, "vmin": r.min, "vmax": r.max})
        for i, r in enumerate(rows)
    ]
    changed[2] = changed[2].__class__(**{**changed[2].__dict__, "vmax": changed[2].max / 2})
    stage = context.images[0].layers[0].stages[-1]
    stage.rows[:] = changed
    html = render_report(context)
    page = parse(html)
    classes = [a.get("class", "") or "" for tag, a in page.tags if tag == "tr"]
    assert sum("dead" in c.split() for c in classes) == 1
    assert sum("clipped" in c.split() for c in classes) == 1


def test_shape_table_from_the_manifest(built: BuiltReport) -> None:
    table = built.context.shape_table
    assert table.columns[0] == "layer" and table.rows[0][0] == "layer1"
    assert table.rows[0][1:3] == ["3x72x96", "8x68x92"]
    assert shape_table([]) == Table(table.columns, [])


def test_index_page_escapes_and_links_relatively(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "input.png").write_bytes(b"")
    entries = [
        IndexEntry(XSS_NAME, f"{XSS_NAME}/report.html", Picture(f"{XSS_NAME}/input.png", "x")),
        IndexEntry("broken.png", message="broken.png: not an image (<b>bad</b>)"),
    ]
    html = render_index(
        IndexContext(
            title="cbr batch",
            command="cbr batch in/ --out out/",
            versions={"cbr-cli": "0.1.0", "matplotlib": None},
            warnings=[],
            entries=entries,
            aggregate=Table(["layer", "stage", "dead"], [["layer1", "act", "0"]]),
            failures=[entries[1]],
        )
    )
    assert XSS_NAME not in html and "<b>bad</b>" not in html
    page = parse(html)
    assert "not installed" in " ".join(page.text)
    links = page.links()
    assert f"{url(XSS_NAME)}/report.html" in links and f"{url(XSS_NAME)}/input.png" in links
    assert "Failures (1)" in " ".join(page.text)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs the Debian chromium package (CI installs it)")
def test_report_in_a_real_browser(built: BuiltReport, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            for width in (1280, 390):  # a laptop and a phone
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.on("console", lambda m: problems.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
                page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
                page.goto(built.html.as_uri())
                page.wait_for_load_state("load")
                broken = page.evaluate(
                    "Array.from(document.images)"
                    ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
                )
                assert broken == []
                count = page.evaluate("document.images.length")
                assert count == 2 * (1 + 1 + 3 + 8 * 4 + 1)
                # The filmstrip shows one channel at a time; the selector switches it.
                shown = "Array.from(document.querySelectorAll('.strip')).filter(s => !s.hidden)"
                assert page.evaluate(f"{shown}.length") == 2
                page.select_option("select[data-channel-select] >> nth=0", "3")
                assert page.evaluate(f"{shown}.map(s => s.dataset.channel)") == ["3", "0"]
                # Page width: nothing wider than the window (tables scroll inside their box).
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                page.screenshot(path=str(tmp_path / f"report-{width}.png"))
                # Click to enlarge: the full-size view opens with that picture.
                page.click("figure.stage a.zoom >> nth=0")
                assert page.evaluate("document.getElementById('zoom').open")
                page.close()
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / "report-1280.png").stat().st_size > 10_000
