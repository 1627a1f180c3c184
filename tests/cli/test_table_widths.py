"""The terminal tables at 80, 100 and 160 columns: nothing cut, every row, within width.

Structure, not whole text, is compared: every line fits ``COLUMNS``, no cell holding a
digit is cut (``…``), every layer / stage / channel row is there, and the numbers that
matter most are shown at every width.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from cbr_cli.cli.batch_tables import bn_stats_table, failures_table, summary_table

runner = CliRunner()
WIDTHS = (80, 100, 160)

NET = """\
layers:
  - name: stem
    conv: {out_channels: 64, kernel_size: 7, stride: 2, padding: 3, bias: false}
    bn: batch
  - name: down
    conv: {out_channels: 128, kernel_size: [3, 5], stride: 2, padding: same, dilation: 2,
           padding_mode: reflect}
    activation: leaky_relu
  - name: wide
    conv: {out_channels: 256, kernel_size: 3, groups: 4, padding: 1}
"""


def cells(text: str) -> list[str]:
    """The cells of every table row (lines with vertical rules)."""
    return [
        cell.strip()
        for line in text.splitlines()
        if "│" in line or "┃" in line
        for cell in re.split("[│┃]", line)
    ]


def check_fits(text: str, columns: int) -> None:
    lines = text.splitlines()
    assert lines
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, too_wide
    cut = [cell for cell in cells(text) if "…" in cell and re.search(r"\d", cell)]
    assert not cut, cut


def first_column(text: str) -> list[str]:
    return [
        re.split("[│┃]", line)[1].strip()
        for line in text.splitlines()
        if line.startswith(("│", "┃")) and len(re.split("[│┃]", line)) > 2
    ]


@pytest.mark.parametrize("columns", WIDTHS)
def test_shape_fits_the_terminal(tmp_path: Path, columns: int) -> None:
    config = tmp_path / "net.yaml"
    config.write_text(NET)
    result = runner.invoke(
        app,
        ["shape", "-c", str(config), "--input", "3x2000x3000"],
        env={"COLUMNS": str(columns)},
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    check_fits(out, columns)
    names = first_column(out)
    for name in ("stem", "down", "wide", "total"):
        assert name in names
    for number in ("3x2000x3000", "-> 64x1000x1500", "-> 256x500x750", "9,536", "206,528"):
        assert number in out  # shapes and params at every width
    formula = "floor((2000 + 3 + 3 - 1*(7-1) - 1) / 2 + 1) = 1000"
    if columns >= 160:  # every column fits; the formula wraps at spaces in its own
        assert "Output size" in out and "RF / jump" in out and "Memory" in out
        assert "Not shown at this width" not in out
        assert "floor((2000 + 3 + 3 -" in out
    else:
        assert "Not shown at this width: Output size" in " ".join(out.split())
        assert formula not in out


def test_shape_verbose_puts_the_formula_under_a_narrow_table(tmp_path: Path) -> None:
    config = tmp_path / "net.yaml"
    config.write_text(NET)
    args = ["shape", "-c", str(config), "--input", "3x2000x3000"]
    result = runner.invoke(app, [*args, "--verbose"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    check_fits(result.stdout, 80)
    lines = result.stdout.splitlines()
    assert "  stem  H: floor((2000 + 3 + 3 - 1*(7-1) - 1) / 2 + 1) = 1000" in lines
    assert "  down  W: floor((1500 + 3 + 4 - 2*(5-1) - 1) / 2 + 1) = 750" in lines
    wide = runner.invoke(app, [*args, "-v"], env={"COLUMNS": "160"})
    assert "output size, filled in" not in wide.stdout  # it is in the table already


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("first", "second"):
        path = folder / f"{name}.png"
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


THREE_LAYERS = """\
layers:
  - conv: {out_channels: 12, kernel_size: 3, padding: 1}
  - conv: {out_channels: 40, kernel_size: 3}
    bn: running
    activation: leaky_relu
  - conv: {out_channels: 6, kernel_size: 3, bias: false}
    activation: none
"""


def apply(tmp_path: Path, images: list[str], columns: int, *extra: str):
    config = tmp_path / "net.yaml"
    config.write_text(THREE_LAYERS)
    result = runner.invoke(
        app,
        [
            "apply",
            *images,
            "-c",
            str(config),
            "-o",
            str(tmp_path / "out"),
            "--no-channel-pngs",
            *extra,
        ],
        env={"COLUMNS": str(columns)},
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("columns", WIDTHS)
def test_apply_prints_one_summary_row_per_stage(
    tmp_path: Path, two_images: list[str], columns: int
) -> None:
    out = apply(tmp_path, two_images, columns)
    check_fits(out, columns)
    assert out.count("statistics per stage") == 2  # one table per image
    rows = [c for c in first_column(out) if re.fullmatch(r"layer\d", c)]
    expected = ["layer1"] * 2 + ["layer2"] * 3 + ["layer3"]  # conv act, conv bn act, conv
    assert rows == expected * 2
    assert len(out.splitlines()) < 40  # not a table per stage and channel
    for header in ("stage", "dead", "zero%", "min", "max"):
        assert header in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_apply_verbose_prints_every_channel_within_the_width(
    tmp_path: Path, two_images: list[str], columns: int
) -> None:
    out = apply(tmp_path, two_images, columns, "--verbose")
    check_fits(out, columns)
    labels = first_column(out)
    for channel in [f"c{i}" for i in range(32)]:  # layer2 has 40: the first 32 are listed
        assert channel in labels
    assert "8 more channels (all of them in --json)" in " ".join(out.split())
    assert out.count("· bn · 40x38x38") == 2
    for header in ("min", "max"):
        assert header in out
    if columns >= 100:
        assert "bn mean" in out and "bn var" in out and "neg%" in out
        assert "not shown at this width" not in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_batch_tables_fit(columns: int) -> None:
    console = Console(width=columns, file=StringIO(), emoji=False)
    reason = (
        "layer 'layer1': the output would be empty: H: floor((12 + 0 + 0 - 1*(31-1) - 1) "
        "/ 1 + 1) = -18 for image 12x12345"
    )
    console.print(summary_table({"processed": 12_345, "failed": 2, "skipped": 0}))
    console.print(failures_table([("a-very-long-image-name-0123456789.png", reason)] * 2))
    console.print(bn_stats_table({"layer1": ([-0.123456, 12345.678], [0.000123, 98765.4])}))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    check_fits(out, columns)
    assert "12345" in out.replace(",", "")
    assert "-0.1235 .. 1.235e+04" in out
