"""The report through the commands: ``--range``, ``--no-report``, ``report.html`` and
``index.html`` on real runs, every link resolving, stale pages removed."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, cbr, ok, one_line_error

SAMPLES = REPO / "samples"
REPORT_FILES = {"layer1_kernels.png", "layer1_hist.png"}


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value and not value.startswith(("#", "data:")):
                self.links.append(value)


def links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def assert_links_resolve(page: Path) -> list[str]:
    found = links(page)
    assert found
    for link in found:
        assert "://" not in link and not link.startswith("/"), link  # relative, offline
        assert (page.parent / unquote(link)).is_file(), link
    return found


@pytest.fixture
def crops(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    with Image.open(SAMPLES / "astronaut.png") as image:
        image.crop((170, 40, 266, 112)).save(folder / "face.png")
        image.crop((300, 300, 396, 372)).save(folder / "suit.png")
    return folder


def test_apply_writes_a_report_whose_links_all_resolve(tmp_path: Path, crops: Path) -> None:
    out = tmp_path / "out"
    result = cbr("apply", crops / "face.png", crops / "suit.png", "-o", out, "--json")
    ok(result)
    data = json.loads(result.stdout)
    assert data["report"] == str(out / "report.html")
    found = assert_links_resolve(out / "report.html")
    for name in ("face", "suit"):
        assert f"{name}/layer1_kernels.png" in found and f"{name}/layer1_hist.png" in found
        assert f"{name}/layer1_bn_grid.png" in found and f"{name}/layer1_act_c07.png" in found
    with Image.open(out / "face" / "layer1_hist.png") as figure:
        assert figure.size == (1100, 340)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["report"] == "report.html"
    assert {"face/layer1_kernels.png", "face/layer1_hist.png"} <= set(manifest["files"])


def test_no_report_writes_none_and_removes_the_earlier_page(tmp_path: Path, crops: Path) -> None:
    out = tmp_path / "out"
    ok(cbr("apply", crops / "face.png", "-o", out))
    assert (out / "report.html").is_file()
    (out / "notes.html").write_text("mine")  # a user's file: never touched
    result = cbr("apply", crops / "face.png", "-o", out, "--no-report")
    ok(result)
    assert "report.html" not in result.stdout
    assert not (out / "report.html").exists()
    assert not REPORT_FILES & {p.name for p in (out / "face").iterdir()}
    assert (out / "notes.html").read_text() == "mine"


def test_range_max_reaches_the_extremes_and_p99_5_clips(tmp_path: Path, crops: Path) -> None:
    runs = {}
    for rule in ("max", "p99.5"):
        out = tmp_path / rule
        args = ["--normalize", "per-stage", "--range", rule, "--save-npy", "--json"]
        result = cbr("apply", crops / "face.png", "-o", out, *args)
        ok(result)
        runs[rule] = json.loads(result.stdout)["images"][0]["stages"]
    for stage_max, stage_p in zip(runs["max"], runs["p99.5"], strict=True):
        data = np.load(stage_max["files"]["npy"]).astype(np.float64)
        signed = stage_max["stage"] != "act"
        values = np.abs(data) if signed else data
        top = stage_max["channels"][0]["vmax"]
        assert top == pytest.approx(values.max(), rel=1e-6)
        assert not any(c["clipped"] for c in stage_max["channels"])
        robust = stage_p["channels"][0]["vmax"]
        assert robust == pytest.approx(np.percentile(values, 99.5), rel=1e-6)
        assert robust < top and any(c["clipped"] for c in stage_p["channels"])
        with Image.open(stage_p["files"]["grid"]) as grid:
            assert grid.text["cbr:range"] == "p99.5"


@pytest.mark.parametrize("value", ["p0", "p101", "q99", "", "99"])
def test_a_bad_range_is_one_line_naming_the_flag(tmp_path: Path, crops: Path, value: str) -> None:
    result = cbr("apply", crops / "face.png", "-o", tmp_path / "out", "--range", value)
    one_line_error(result, "--range", "pNN", repr(value))
    assert not (tmp_path / "out").exists()


def test_batch_writes_a_gallery_and_a_page_per_image(tmp_path: Path, crops: Path) -> None:
    (crops / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = cbr("batch", crops, "-o", out, "-j", "1")
    assert result.exit_code == 1  # one image failed
    index = out / "index.html"
    found = assert_links_resolve(index)
    assert {"face/report.html", "suit/report.html"} <= set(found)
    assert "face/layer1_act_grid.png" in found
    html = index.read_text(encoding="utf-8")
    assert "broken.png" in html and "Failures (1)" in html
    for name in ("face", "suit"):
        page = out / name / "report.html"
        page_links = assert_links_resolve(page)
        assert "layer1_hist.png" in page_links and "input.png" in page_links

    # --no-report: the pages and pictures go (they are recorded), the gallery too.
    ok_or_failed = cbr("batch", crops, "-o", out, "-j", "1", "--no-report")
    assert ok_or_failed.exit_code == 1
    assert not index.exists()
    for name in ("face", "suit"):
        left = {p.name for p in (out / name).iterdir()}
        assert not ({"report.html"} | REPORT_FILES) & left, left


@pytest.mark.slow
def test_batch_gallery_in_a_real_browser(tmp_path: Path, crops: Path) -> None:
    from tests.run.test_report import CHROMIUM, LAUNCH_ARGS

    if CHROMIUM is None:
        pytest.skip("needs the Debian chromium package (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    out = tmp_path / "out"
    ok(cbr("batch", crops, "-o", out, "-j", "1"))
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.goto((out / "index.html").as_uri())
            page.wait_for_load_state("load")
            broken = page.evaluate(
                "Array.from(document.images)"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            )
            assert broken == [] and page.evaluate("document.images.length") == 2
            page.screenshot(path=str(tmp_path / "index.png"))
            page.click("text=face.png")  # the card's link opens the image's page
            page.wait_for_load_state("load")
            assert page.url.endswith("/face/report.html")
            assert page.evaluate(
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
            )
        finally:
            browser.close()
    assert problems == []
