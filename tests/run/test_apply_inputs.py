"""``cbr apply`` on every kind of input file, and on broken ones.

Each readable file runs through one ``identity`` kernel per channel with ``--groups`` set
to the channel count (so each output channel sees one input channel), ``--padding same``,
``--bn off`` and ``--activation none``: the saved conv output *is* the pipeline's input,
and its shape and values show how the file was read. Expected values follow the documented
conventions (cbr_cli/io/images.py): samples divided by the full scale of their stored type,
float samples as stored.

Broken files must give exit code 2, one ``error: cannot read image 'PATH': ...`` line,
no traceback, and leave nothing behind (all images are read before anything is written).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.cli.app import app

runner = CliRunner()


def run_identity(path: Path, out: Path, *extra: str, channels: int = 1) -> tuple[dict, np.ndarray]:
    """Run the identity pipeline; return (the image's JSON record, the saved conv output)."""
    identity = ["-k", "identity"] * channels + ["--groups", str(channels), "--padding", "same"]
    args = ["apply", str(path), "-o", str(out), *identity, "--bn", "off", "--activation", "none"]
    args += ["--save-npy", "--no-channel-pngs"]
    result = runner.invoke(app, [*args, "--json", *extra])
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert result.stderr == ""
    (image,) = json.loads(result.stdout)["images"]
    assert [s["stage"] for s in image["stages"]] == ["conv"]
    return image, np.load(image["stages"][0]["files"]["npy"])


# ------------------------------------------------------------------ input modes


def test_16_bit_gray_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    samples = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(samples).save(path)  # mode I;16: a 16-bit gray PNG
    image, data = run_identity(path, tmp_path / "out")
    assert image["source"]["bit_depth"] == 16
    assert image["source"]["max_value"] == 65535
    expected = (samples.astype(np.float64) / 65535).astype(np.float32)[None]
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=0)
    assert len(np.unique(data)) == samples.size  # 255 and 256 stay apart


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.fromarray(indices, "P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    im.save(path, transparency=0)
    image, data = run_identity(path, tmp_path / "out", channels=3)
    assert image["source"]["mode"] == "P"
    assert "palette transparency dropped" in image["source"]["notes"]
    palette = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(data, np.moveaxis(palette[indices], -1, 0))


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(path)
    image, data = run_identity(path, tmp_path / "out", channels=3)
    assert image["source"]["channels"] == 3
    assert "alpha channel dropped" in image["source"]["notes"]
    np.testing.assert_allclose(data, np.moveaxis(rgba[..., :3], -1, 0) / np.float32(255))


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (9, 6), (0, 255, 255, 0)).save(path, quality=100)  # pure red
    image, data = run_identity(path, tmp_path / "out", channels=3)
    assert (image["source"]["format"], image["source"]["mode"]) == ("JPEG", "CMYK")
    assert data.shape == (3, 6, 9)
    assert data[0].min() > 0.9
    assert data[1:].max() < 0.1


def test_bilevel_png(tmp_path: Path) -> None:
    path = tmp_path / "bits.png"
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    Image.fromarray(bits).save(path)
    image, data = run_identity(path, tmp_path / "out")
    assert (image["source"]["mode"], image["source"]["bit_depth"]) == ("1", 1)
    np.testing.assert_array_equal(data, bits[None].astype(np.float32))


def test_float_tiff_keeps_its_values(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    values = np.array([[-0.5, 0.0, 0.25], [1.0, 1.5, 3.0]], dtype=np.float32)
    Image.fromarray(values, "F").save(path)
    image, data = run_identity(path, tmp_path / "out")
    assert (image["source"]["format"], image["source"]["mode"]) == ("TIFF", "F")
    assert any("outside [0, 1]" in note for note in image["source"]["notes"])
    np.testing.assert_array_equal(data, values[None])


def test_exif_rotated_jpeg_is_shown_upright(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    stored = np.zeros((6, 10), dtype=np.uint8)
    stored[:, :3] = 255  # a bright band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(stored, "L").save(path, exif=exif, quality=100)
    image, data = run_identity(path, tmp_path / "out")
    assert data.shape == (1, 10, 6)  # H and W swapped
    assert image["source"]["size"] == [10, 6]
    assert "EXIF orientation 6 applied" in image["source"]["notes"]
    assert data[0, :3].mean() > 0.9  # left band rotated clockwise: now at the top
    assert data[0, 5:].mean() < 0.1


def test_gray_sample_read_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, "L").save(path)
    _, data = run_identity(path, tmp_path / "out", "--color", "rgb", channels=3)
    assert data.shape == (3, 3, 4)
    np.testing.assert_array_equal(data[0], data[2])


# ------------------------------------------------------------------ broken files


def make_truncated(path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN = {
    "truncated png": ("cut.png", make_truncated, "corrupt or truncated"),
    "empty file": ("empty.png", lambda p: p.write_bytes(b""), "file is empty"),
    "text named png": ("notes.png", lambda p: p.write_text("not an image\n"), "not an image"),
    "missing file": ("missing.png", lambda p: None, "no such file"),
    "directory": ("folder.png", lambda p: p.mkdir(), "is a directory"),
}


def assert_cannot_read(result, path: Path, reason: str) -> None:
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot read image '{path}': "), lines[0]
    assert reason in lines[0]


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_file_is_a_one_line_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    name, make, reason = BROKEN[case]
    good = tmp_path / "good.png"
    Image.new("L", (8, 8), 128).save(good)
    bad = tmp_path / name
    make(bad)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    # The broken file second: the good one must not have been written either.
    result = runner.invoke(app, ["apply", str(good), str(bad), "-o", str(out), "--bn", "running"])
    assert_cannot_read(result, bad, reason)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (20, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    out = tmp_path / "out"
    result = runner.invoke(app, ["apply", str(path), "-o", str(out)])
    assert_cannot_read(result, path, "400 pixels exceeds the decompression-bomb limit of 100")
    assert not out.exists()


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.ppm"
    Image.new("L", (4, 4)).save(path)
    result = runner.invoke(app, ["apply", str(path), "-o", str(tmp_path / "out")])
    assert_cannot_read(result, path, "not one of PNG, JPEG, TIFF, BMP, WebP, GIF")


def test_no_temporary_files_after_a_failed_write(tmp_path: Path) -> None:
    image = tmp_path / "img.png"
    Image.new("L", (8, 8), 10).save(image)
    out = tmp_path / "out"
    (out / "img").mkdir(parents=True)
    (out / "img" / "layer1_conv_grid.png").mkdir()  # a folder where a file must go
    result = runner.invoke(app, ["apply", str(image), "-o", str(out), "-k", "box"])
    assert result.exit_code == 1, (result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot write ")
    assert "layer1_conv_grid.png" in result.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert os.listdir(out / "img" / "layer1_conv_grid.png") == []
