"""``--no-pngs`` and ``--dtype`` on ``cbr apply`` and ``cbr batch``: arrays-only runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbr_cli.batch.resume import MARKER
from tests.helpers import cbr, ok, one_line_error

STAGES = ["layer1_conv", "layer1_bn", "layer1_act"]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    Image.fromarray((rng.random((18, 22, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_apply_no_pngs_writes_arrays_and_manifest_only(image: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = cbr("apply", image, "-o", out, "--out-channels", "3", "--no-pngs", "--save-npy")
    ok(result)
    assert result.stderr == ""
    assert "layer1" in result.stdout and "wrote 1 image folder(s)" in result.stdout
    assert _files(out) == ["manifest.json"] + [f"photo/{s}.npy" for s in sorted(STAGES)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["pngs"] is False
    assert not [f for f in manifest["files"] if f.endswith(".png")]


def test_apply_no_pngs_json_names_no_png(image: Path, tmp_path: Path):
    result = cbr(
        "apply", image, "-o", tmp_path / "out", "--out-channels", "3", "--no-pngs", "--save-npy",
        "--json",
    )  # fmt: skip
    ok(result)
    data = json.loads(result.stdout)
    (record,) = data["images"]
    assert record["input_png"] == ""
    for stage in record["stages"]:
        assert list(stage["files"]) == ["npy"]
        assert stage["files"]["npy"].endswith(".npy")
        assert len(stage["channels"]) == 3  # the statistics are all there
        # Nothing drawn, so no display range or colours (a picture's, not the data's).
        assert not {"colormap", "normalize", "range", "note"} & set(stage)
        for channel in stage["channels"]:
            assert {"min", "max", "mean", "std"} <= set(channel)
            assert not {"vmin", "vmax", "clipped"} & set(channel)
    assert ".png" not in result.stdout.replace(str(image), "")  # only the input is one


def test_apply_no_pngs_statistics_equal_those_of_a_run_with_pngs(image: Path, tmp_path: Path):
    def stages(*flags: str) -> list[dict]:
        result = cbr("apply", image, "-o", tmp_path / flags[0], "--out-channels", "3", "--json",
                     *flags)  # fmt: skip
        ok(result)
        return json.loads(result.stdout)["images"][0]["stages"]

    drawn, bare = stages("--save-npy"), stages("--no-pngs", "--save-npy")
    view = ("vmin", "vmax", "clipped")
    for with_pngs, without in zip(drawn, bare, strict=True):
        assert with_pngs["range"] == "p99.5" and with_pngs["colormap"]
        for a, b in zip(with_pngs["channels"], without["channels"], strict=True):
            assert a["vmin"] < a["vmax"]
            assert {k: v for k, v in a.items() if k not in view} == b


def test_apply_no_pngs_alone_is_a_one_line_error(image: Path, tmp_path: Path):
    result = cbr("apply", image, "-o", tmp_path / "out", "--no-pngs")
    line = one_line_error(result)
    assert line == "error: --no-pngs: nothing would be written; add --save-npy"
    assert not (tmp_path / "out").exists()


def test_batch_no_pngs_alone_names_save_npy_and_store(image: Path, tmp_path: Path):
    result = cbr("batch", image.parent, "-o", tmp_path / "out", "--no-pngs")
    line = one_line_error(result)
    assert line == "error: --no-pngs: nothing would be written; add --save-npy or --store"
    assert not (tmp_path / "out").exists()


def test_batch_no_pngs_writes_arrays_and_resumes(image: Path, tmp_path: Path):
    out = tmp_path / "out"
    args = ["batch", image.parent, "-o", out, "--out-channels", "3", "--no-pngs", "--save-npy"]
    first = cbr(*args)
    ok(first)
    assert "processed" in first.stdout
    folder = _files(out / "photo")
    assert folder == sorted([MARKER] + [f"{s}.npy" for s in STAGES])
    assert not [f for f in _files(out) if f.endswith(".png")]
    marker = json.loads((out / "photo" / MARKER).read_text())
    assert marker["image"]["outputs"]["pngs"] is False
    again = cbr(*args)
    ok(again)
    assert "(1 already done)" in again.stderr  # the marker without input.png still counts
    # switching PNGs back on redoes the image with them
    ok(cbr(*args[:-2], "--save-npy"))
    assert "photo/input.png" in _files(out)
    assert "photo/layer1_act_grid.png" in _files(out)


@pytest.mark.parametrize("command", ["apply", "batch"])
def test_dtype_float16_saves_the_float32_arrays_rounded(command, image: Path, tmp_path: Path):
    target = image if command == "apply" else image.parent
    common = [command, target, "--out-channels", "3", "--no-pngs", "--save-npy"]
    ok(cbr(*common, "-o", tmp_path / "f32"))
    result = cbr(*common, "-o", tmp_path / "f16", "--dtype", "float16")
    ok(result)
    for stage in STAGES:
        f32 = np.load(tmp_path / "f32" / "photo" / f"{stage}.npy")
        f16 = np.load(tmp_path / "f16" / "photo" / f"{stage}.npy")
        assert f32.dtype == np.float32 and f16.dtype == np.float16
        assert f16.shape == f32.shape == (3, 16, 20)
        np.testing.assert_array_equal(f16, f32.astype(np.float16))
        assert np.abs(f32).max() > 0.01  # not a trivial all-zero comparison


def test_dtype_float16_overflow_is_refused_naming_the_stage(image: Path, tmp_path: Path):
    big = "3x3:" + ",".join(["30000"] * 9)  # a white-ish patch sums to ~1e5 > 65504
    result = cbr(
        "apply", image, "-o", tmp_path / "out", "-k", big, "--bn", "off", "--save-npy",
        "--dtype", "float16",
    )  # fmt: skip
    line = one_line_error(result, exit_code=1)
    assert line.startswith("error: --dtype float16: layer1/conv has values beyond float16's range")
    assert line.endswith("> 65504), which would be saved as inf; use --dtype float32")
    assert not (tmp_path / "out").exists()  # nothing written
    ok(cbr("apply", image, "-o", tmp_path / "ok", "-k", big, "--bn", "off", "--save-npy"))


def test_bad_dtype_is_a_one_line_error(image: Path, tmp_path: Path):
    result = cbr("apply", image, "-o", tmp_path / "out", "--save-npy", "--dtype", "float61")
    one_line_error(result, "--dtype: expected one of ['float32', 'float16'] (got 'float61')")


@pytest.mark.parametrize("command", ["apply", "batch"])
def test_help_documents_the_flags(command):
    result = cbr(command, "--help", env={"COLUMNS": "200"})
    ok(result)
    for flag in ("--no-pngs", "--dtype", "float16", "65504"):
        assert flag in result.stdout, flag
    assert ("--store PATH" in result.stdout) == (command == "batch")
