"""``cbr apply`` and ``cbr kernels`` end to end, in-process (typer.testing.CliRunner).

Feature maps are checked against the same computation done here by hand: the image read
with :func:`cbr_cli.io.images.load_image`, the weights built from the documented recipes
(kernel bank / channel mean, ``numpy.random.default_rng(seed)`` for PyTorch's init), the
convolution by :func:`cbr_cli.ops.conv2d` (tested on its own against a loop reference),
and BatchNorm and the activations written out in float64 numpy.

Tolerances: the saved arrays are float32. A stage computed here in float64 and rounded
once differs from cbr's float32 arithmetic by a few float32 ulps of the stage's largest
magnitude, so arrays are compared with ``rtol=1e-5`` and ``atol=1e-5 * max|expected|``.
"""

from __future__ import annotations

import json
import math
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbr_cli import ops
from cbr_cli.core.kernels import KERNELS, stack_kernels
from cbr_cli.errors import CbrError
from cbr_cli.io import render
from cbr_cli.io.images import load_image
from cbr_cli.run import memory as run_memory
from tests.helpers import REPO, cbr, ok, one_line_error

SAMPLES = REPO / "samples"

runner = CliRunner()


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def crop_sample(name: str, box: tuple[int, int, int, int], dest: Path) -> Path:
    """A small crop (left, top, right, bottom) of a sample photo, saved as PNG."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(SAMPLES / name) as im:
        im.crop(box).save(dest)
    return dest


def gray_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def kernel_weight(names: list[str], in_channels: int) -> np.ndarray:
    """``weight[o, c] = kernel_o / in_channels`` (groups=1), as documented in pipeline.py."""
    bank = stack_kernels(names).astype(np.float64)
    return np.repeat(bank[:, None] / in_channels, in_channels, axis=1).astype(np.float32)


def bn_reference(x: np.ndarray, mean, var, eps, weight=1.0, bias=0.0) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` per channel of (C, H, W), in float64."""
    shape = (-1, 1, 1)
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
    y = (x.astype(np.float64) - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps)
    return (y * np.broadcast_to(weight, mean.shape).reshape(shape)) + np.broadcast_to(
        bias, mean.shape
    ).reshape(shape)


def batch_stats(*maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance per channel over every image of (C, H, W) maps, float64."""
    stacked = np.stack([m.astype(np.float64) for m in maps])
    return stacked.mean(axis=(0, 2, 3)), stacked.var(axis=(0, 2, 3))


# ------------------------------------------------------------------ end to end


@pytest.fixture
def chelsea(tmp_path: Path) -> Path:
    """A 64x48 RGB crop of chelsea.png (the cat's face)."""
    return crop_sample("chelsea.png", (150, 80, 214, 128), tmp_path / "in" / "chelsea.png")


def test_flags_end_to_end_matches_a_hand_computation(tmp_path: Path, chelsea: Path) -> None:
    out = tmp_path / "out"
    result = cbr(
        "apply", chelsea, "-o", out, "--save-npy", "-k", "sobel", "--padding", "same",
        "--bn", "batch", "--json",
    )  # fmt: skip
    ok(result)
    assert result.stderr == ""
    report = json.loads(result.stdout)

    x = load_image(chelsea).pixels  # (3, 48, 64) in [0, 1]
    assert x.shape == (3, 48, 64)
    conv = ops.conv2d(x, kernel_weight(["sobel_x", "sobel_y"], 3), None, 1, "same")
    mean, var = batch_stats(conv)
    bn = bn_reference(conv, mean, var, 1e-5).astype(np.float32)
    act = np.maximum(bn, 0)

    folder = out / "chelsea"
    for stage, expected in (("conv", conv), ("bn", bn), ("act", act)):
        saved = np.load(folder / f"layer1_{stage}.npy")
        assert_close(saved, expected)

    # The statistics describe the same arrays.
    (image,) = report["images"]
    bn_stage = next(s for s in image["stages"] if s["stage"] == "bn")
    for c, channel in enumerate(bn_stage["channels"]):
        assert math.isclose(channel["bn_mean"], mean[c], rel_tol=1e-6, abs_tol=1e-7)
        assert math.isclose(channel["bn_var"], var[c], rel_tol=1e-5)
        assert math.isclose(channel["mean"], 0.0, abs_tol=1e-5)  # normalised
        assert math.isclose(channel["std"], math.sqrt(var[c] / (var[c] + 1e-5)), rel_tol=1e-4)
    assert [c["label"] for c in bn_stage["channels"]] == ["0:sobel_x", "1:sobel_y"]


def test_output_layout_and_manifest(tmp_path: Path, chelsea: Path) -> None:
    out = tmp_path / "out"
    ok(cbr("apply", chelsea, "-o", out, "--save-npy", "-k", "sobel", "--padding", "same"))
    stages = [f"layer1_{s}" for s in ("conv", "bn", "act")]
    expected = {"manifest.json", "chelsea/input.png"}
    for stage in stages:
        expected |= {f"chelsea/{stage}_grid.png", f"chelsea/{stage}.npy"}
        expected |= {f"chelsea/{stage}_c00.png", f"chelsea/{stage}_c01.png"}
    expected |= {"report.html", "chelsea/layer1_kernels.png", "chelsea/layer1_hist.png"}
    assert files_under(out) == expected  # nothing else: no temporary files left

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    layer = manifest["pipeline"]["layers"][0]
    assert layer["conv"]["kernels"] == ["sobel_x", "sobel_y"]
    assert layer["conv"]["padding"] == "same"
    assert layer["bn"] == {"mode": "batch", "eps": 1e-5, "momentum": 0.1}
    assert layer["activation"] == "relu"
    assert manifest["config_source"] == "flags"
    assert manifest["seeds"] == {}  # no random weights
    (source,) = manifest["inputs"]
    assert source["path"] == str(chelsea.resolve())
    assert source["name"] == "chelsea"
    assert (source["format"], source["mode"], source["bit_depth"]) == ("PNG", "RGB", 8)
    assert (source["size"], source["channels"]) == ([48, 64], 3)
    for package in ("cbr-cli", "python", "numpy", "scipy", "pillow", "pyyaml"):
        assert manifest["versions"][package], package
    assert manifest["options"]["save_npy"] is True

    # input.png is the image as the pipeline sees it, in 8 bits.
    x = load_image(chelsea).pixels
    with Image.open(out / "chelsea" / "input.png") as im:
        assert im.mode == "RGB"
        shown = np.asarray(im)
    np.testing.assert_array_equal(shown, np.rint(np.moveaxis(x, 0, -1) * 255).astype(np.uint8))


def lut_indices(rgb: np.ndarray, cmap: render.Colormap) -> np.ndarray:
    """Invert a colormap on a PNG (colours must be entries of the LUT)."""
    lookup = {tuple(int(v) for v in colour): i for i, colour in enumerate(cmap.lut)}
    flat = [lookup[tuple(int(v) for v in pixel)] for pixel in rgb.reshape(-1, 3)]
    return np.array(flat).reshape(rgb.shape[:2])


def test_png_colours_and_metadata_match_the_statistics(tmp_path: Path, chelsea: Path) -> None:
    out = tmp_path / "out"
    result = cbr("apply", chelsea, "-o", out, "--save-npy", "-k", "sobel", "--json")
    ok(result)
    (image,) = json.loads(result.stdout)["images"]
    for stage in image["stages"]:
        data = np.load(stage["files"]["npy"])
        cmap = render.get_colormap(stage["colormap"])
        signed = stage["stage"] != "act"  # ReLU output: sequential, from 0
        assert cmap.name == ("rdbu" if signed else "viridis")
        # The defaults: --range p99.5 (numpy's percentile of |x|, or of x after ReLU; the
        # 64x48 maps are small enough to be taken whole) and --normalize auto: each conv
        # channel on its own range, the channels of BN and of the ReLU after it shared.
        magnitude = np.abs(data.astype(np.float64))
        if stage["stage"] == "conv":
            tops = [float(np.percentile(magnitude[c], 99.5)) for c in range(len(data))]
            assert stage["normalize"] == "per-channel"
        else:
            tops = [float(np.percentile(magnitude, 99.5))] * len(data)
            assert stage["normalize"] == "per-stage"
        assert stage["range"] == "p99.5"
        for c, (channel, path) in enumerate(
            zip(stage["channels"], stage["files"]["channels"], strict=True)
        ):
            expected_range = (-tops[c], tops[c]) if signed else (0.0, tops[c])
            assert math.isclose(channel["vmin"], expected_range[0], rel_tol=1e-6)
            assert math.isclose(channel["vmax"], expected_range[1], rel_tol=1e-6)
            beyond = channel["min"] < channel["vmin"] or channel["max"] > channel["vmax"]
            assert channel["clipped"] == beyond
            assert (channel["min"], channel["max"]) == (float(data[c].min()), float(data[c].max()))
            with Image.open(path) as im:
                text = dict(im.text)
                rgb = np.asarray(im.convert("RGB"))
            assert float(text["cbr:vmin"]) == channel["vmin"]
            assert float(text["cbr:vmax"]) == channel["vmax"]
            assert (text["cbr:layer"], text["cbr:stage"]) == ("layer1", stage["stage"])
            assert (text["cbr:range"], text["cbr:normalize"]) == ("p99.5", stage["normalize"])
            assert text["cbr:channel"] == str(c)
            assert rgb.shape == (*data.shape[1:], 3)
            index = lut_indices(rgb, cmap)
            expected = (data[c].astype(np.float64) - channel["vmin"]) / (
                channel["vmax"] - channel["vmin"]
            )
            # Values beyond the range clip to the end colours.
            assert np.abs(index - np.rint(np.clip(expected, 0, 1) * 255)).max() <= 1
        with Image.open(stage["files"]["grid"]) as grid:
            assert float(grid.text["cbr:vmax"]) == pytest.approx(max(tops), rel=1e-6)


def test_yaml_two_layers_match_a_hand_computation(tmp_path: Path, chelsea: Path) -> None:
    config = tmp_path / "pipe.yaml"
    config.write_text(
        "input:\n"
        "  mean: [0.5, 0.5, 0.5]\n"
        "  std: 0.25\n"
        "layers:\n"
        "  - name: stem\n"
        "    conv: {out_channels: 3, kernel_size: 3, padding: 1, seed: 3}\n"
        "    bn:\n"
        "      mode: running\n"
        "      eps: 1e-3\n"
        "      running_mean: [0.1, -0.2, 0.0]\n"
        "      running_var: [0.5, 2.0, 1.0]\n"
        "      weight: [1.0, 0.5, 2.0]\n"
        "      bias: 0.1\n"
        "    activation: leaky_relu\n"
        "    negative_slope: 0.2\n"
        "  - name: edges\n"
        "    conv: {kernels: [laplacian4, 'box:3'], padding: 1, padding_mode: reflect}\n"
        "    bn: batch\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    ok(cbr("apply", chelsea, "-o", out, "-c", config, "--save-npy", "--no-channel-pngs"))

    # Layer 1: PyTorch's default init drawn from default_rng(seed): weight, then bias.
    x = (load_image(chelsea).pixels - np.float32(0.5)) / np.float32(0.25)
    rng = np.random.default_rng(3)
    bound = 1 / math.sqrt(3 * 3 * 3)
    weight = rng.uniform(-bound, bound, (3, 3, 3, 3)).astype(np.float32)
    bias = rng.uniform(-bound, bound, 3).astype(np.float32)
    conv1 = ops.conv2d(x, weight, bias, 1, 1)
    bn1 = bn_reference(conv1, [0.1, -0.2, 0.0], [0.5, 2.0, 1.0], 1e-3, [1.0, 0.5, 2.0], 0.1)
    act1 = np.where(bn1 > 0, bn1, 0.2 * bn1)
    bn1, act1 = bn1.astype(np.float32), act1.astype(np.float32)
    # Layer 2: kernels over the mean of the 3 channels, reflect padding, batch BN, ReLU.
    conv2 = ops.conv2d(
        act1, kernel_weight(["laplacian4", "box:3"], 3), None, 1, 1, padding_mode="reflect"
    )
    bn2 = bn_reference(conv2, *batch_stats(conv2), 1e-5).astype(np.float32)
    act2 = np.maximum(bn2, 0)

    folder = out / "chelsea"
    expected = {
        "stem_conv": conv1, "stem_bn": bn1, "stem_act": act1,
        "edges_conv": conv2, "edges_bn": bn2, "edges_act": act2,
    }  # fmt: skip
    for name, array in expected.items():
        assert_close(np.load(folder / f"{name}.npy"), array)
    assert conv2.shape == (2, 48, 64)

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seeds"] == {"stem": 3}
    assert manifest["config_source"] == str(config)
    layers = manifest["pipeline"]["layers"]
    assert [layer["name"] for layer in layers] == ["stem", "edges"]
    assert layers[0]["bn"]["eps"] == 1e-3  # written 1e-3 (a string in YAML 1.1)
    assert layers[0]["negative_slope"] == 0.2
    assert manifest["pipeline"]["input"] == {"mean": [0.5, 0.5, 0.5], "std": 0.25}


# ------------------------------------------------------------------- --json


def test_json_is_one_document_listing_every_file(tmp_path: Path) -> None:
    a = gray_png(tmp_path / "in" / "a.png", 20, 24, seed=1)
    b = gray_png(tmp_path / "in" / "b.png", 20, 24, seed=2)
    out = tmp_path / "out"
    result = cbr("apply", a, b, "-o", out, "-k", "sobel_x", "-k", "laplacian4", "--save-npy",
                 "--json")  # fmt: skip
    ok(result)
    assert result.stderr == ""  # no tables when stderr is not a terminal
    report = json.loads(result.stdout)  # exactly one document, nothing else on stdout
    assert report["manifest"] == str(out / "manifest.json")
    listed = {report["manifest"]}
    assert [image["name"] for image in report["images"]] == ["a", "b"]
    for image in report["images"]:
        assert image["path"] == str((tmp_path / "in" / f"{image['name']}.png").resolve())
        assert image["source"]["size"] == [20, 24]
        listed.add(os.path.join(image["out_dir"], "input.png"))
        assert [(s["layer"], s["stage"]) for s in image["stages"]] == [
            ("layer1", "conv"), ("layer1", "bn"), ("layer1", "act"),
        ]  # fmt: skip
        for stage in image["stages"]:
            assert stage["shape"] == [2, 18, 22]
            assert len(stage["channels"]) == 2
            for channel in stage["channels"]:
                for key in ("min", "max", "mean", "std", "frac_zero", "frac_negative", "dead"):
                    assert key in channel
            files = stage["files"]
            assert len(files["channels"]) == 2
            listed |= {files["grid"], files["npy"], *files["channels"]}
            data = np.load(files["npy"])
            for c, channel in enumerate(stage["channels"]):
                assert channel["min"] == float(data[c].min())
                assert channel["max"] == float(data[c].max())
                assert math.isclose(channel["mean"], data[c].mean(dtype=np.float64), abs_tol=1e-6)
                assert math.isclose(
                    channel["std"], data[c].std(dtype=np.float64), rel_tol=1e-5, abs_tol=1e-7
                )
                assert channel["frac_zero"] == np.count_nonzero(data[c] == 0) / data[c].size
        listed |= {path for files in image["layers"].values() for path in files.values()}
    listed.add(report["report"])
    # Every file written is listed (input.png is in the image's out_dir) and exists.
    assert {str(out / f) for f in files_under(out)} == listed


def test_without_json_the_tables_go_to_stdout(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 12, 12)
    result = cbr("apply", image, "-o", tmp_path / "out", "-k", "sobel_x", "--no-channel-pngs")
    ok(result)
    assert result.stderr == ""
    assert "img · statistics per stage" in result.stdout  # one summary table per image
    assert "0:sobel_x" not in result.stdout
    verbose = cbr(
        "apply", image, "-o", tmp_path / "out", "-k", "sobel_x", "--no-channel-pngs", "-v"
    )
    ok(verbose)
    assert "img · layer1 · bn · 1x10x10" in verbose.stdout  # a table per stage with -v
    assert "0:sobel_x" in verbose.stdout
    # rich wraps the last line at 80 columns when stdout is not a terminal: compare words.
    last = " ".join(result.stdout.split()[-13:])
    assert last == (
        f"wrote 1 image folder(s) and {tmp_path / 'out' / 'manifest.json'} "
        f"report: {tmp_path / 'out' / 'report.html'} (open it in a browser)"
    )


def test_names_are_printed_as_they_are_not_as_emoji(tmp_path: Path) -> None:
    # rich turns ":fire:" into an emoji unless told not to; a file may be called that.
    image = gray_png(tmp_path / "hot:fire:.png", 12, 12)
    result = cbr("apply", image, "-o", tmp_path / "out:fire:", "-k", "sobel_x", "--no-report")
    ok(result)
    assert "hot:fire: · statistics per stage" in result.stdout
    assert "out:fire:" in result.stdout
    assert "\N{FIRE}" not in result.stdout + result.stderr


# ------------------------------------------------------------------ default demo


def test_no_flags_runs_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    gray_png(tmp_path / "img.png", 24, 20)
    ok(cbr("apply", "img.png"))  # default output folder: cbr-out
    demo = ["identity", "gaussian", "sharpen", "emboss", "sobel_x", "sobel_y", "laplacian4",
            "log:5:0.8"]  # fmt: skip
    written = files_under(tmp_path / "cbr-out")
    for stage in ("conv", "bn", "act"):
        assert f"img/layer1_{stage}_grid.png" in written
        assert {f"img/layer1_{stage}_c{c:02d}.png" for c in range(len(demo))} <= written
    manifest = json.loads((tmp_path / "cbr-out" / "manifest.json").read_text(encoding="utf-8"))
    layer = manifest["pipeline"]["layers"][0]
    assert layer["conv"]["kernels"] == demo
    assert layer["conv"]["kernel_size"] == [5, 5]  # 3x3 kernels centred in the 5x5 stack
    assert layer["bn"]["mode"] == "batch"
    assert layer["activation"] == "relu"


def test_demo_with_same_padding_keeps_the_size(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 24, 20)
    result = cbr("apply", image, "-o", tmp_path / "out", "--padding", "same", "--json",
                 "--no-channel-pngs")  # fmt: skip
    ok(result)
    stages = json.loads(result.stdout)["images"][0]["stages"]
    assert [s["shape"] for s in stages] == [[8, 24, 20]] * 3
    # The identity channel of the conv stage is the image itself.
    labels = [c["label"] for c in stages[0]["channels"]]
    assert labels[0] == "0:identity"


# ------------------------------------------------------------------------ batches


def test_colliding_stems_get_their_own_folders(tmp_path: Path) -> None:
    first = gray_png(tmp_path / "one" / "a.png", 10, 10, seed=1)
    second = tmp_path / "two" / "a.jpg"
    second.parent.mkdir()
    Image.open(first).convert("RGB").save(second)
    third = gray_png(tmp_path / "three" / "a.png", 10, 10, seed=3)
    out = tmp_path / "out"
    result = cbr("apply", first, second, third, "-o", out, "-k", "box", "--bn", "running",
                 "--no-channel-pngs", "--json")  # fmt: skip
    ok(result)
    images = json.loads(result.stdout)["images"]
    assert [i["name"] for i in images] == ["a", "a-jpg", "a-png"]
    assert [i["path"] for i in images] == [str(p.resolve()) for p in (first, second, third)]
    assert {p.name for p in out.iterdir()} == {
        "a",
        "a-jpg",
        "a-png",
        "manifest.json",
        "report.html",
    }
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [(i["name"], i["path"]) for i in manifest["inputs"]] == [
        (i["name"], i["path"]) for i in images
    ]
    # A gray and an RGB image in one batch: both are read as RGB.
    assert [i["channels"] for i in manifest["inputs"]] == [3, 3, 3]


def test_batch_bn_over_different_sizes_is_an_error_naming_resize(tmp_path: Path) -> None:
    a = gray_png(tmp_path / "a.png", 10, 12)
    b = gray_png(tmp_path / "b.png", 16, 16)
    out = tmp_path / "out"
    one_line_error(cbr("apply", a, b, "-o", out, "-k", "sobel_x"), "a.png", "b.png", "--resize")
    assert not out.exists()


def test_size_mismatch_lists_sizes_in_the_resize_order(tmp_path: Path) -> None:
    a = gray_png(tmp_path / "a.png", 10, 12)
    b = gray_png(tmp_path / "b.png", 16, 16)
    one_line_error(cbr("apply", a, b, "-o", tmp_path / "out", "-k", "sobel_x"), "a.png 10x12")


def test_resize_makes_a_batch_of_sizes_work(tmp_path: Path) -> None:
    a = gray_png(tmp_path / "a.png", 10, 12)
    b = gray_png(tmp_path / "b.png", 16, 16)
    result = cbr("apply", a, b, "-o", tmp_path / "out", "-k", "sobel_x", "--padding", "same",
                 "--resize", "16x24", "--json", "--no-channel-pngs")  # fmt: skip
    ok(result)
    for image in json.loads(result.stdout)["images"]:
        assert {tuple(s["shape"]) for s in image["stages"]} == {(1, 16, 24)}  # H=16, W=24


def test_running_bn_does_not_couple_images_of_different_sizes(tmp_path: Path) -> None:
    a = gray_png(tmp_path / "a.png", 10, 12)
    b = gray_png(tmp_path / "b.png", 16, 16)
    result = cbr("apply", a, b, "-o", tmp_path / "out", "-k", "sobel_x", "--bn", "running",
                 "--json", "--no-channel-pngs")  # fmt: skip
    ok(result)
    shapes = [image["stages"][0]["shape"] for image in json.loads(result.stdout)["images"]]
    assert shapes == [[1, 8, 10], [1, 14, 14]]


def test_batch_bn_statistics_are_over_both_images(tmp_path: Path) -> None:
    a = gray_png(tmp_path / "a.png", 14, 14, seed=1)
    b = tmp_path / "b.png"  # a different distribution, so the joint statistics differ
    Image.fromarray(np.tile(np.arange(14, dtype=np.uint8) * 18, (14, 1)), "L").save(b)
    out = tmp_path / "out"
    result = cbr("apply", a, b, "-o", out, "-k", "sobel_x", "-k", "box", "--save-npy",
                 "--json", "--no-channel-pngs")  # fmt: skip
    ok(result)
    conv_a = np.load(out / "a" / "layer1_conv.npy")
    conv_b = np.load(out / "b" / "layer1_conv.npy")
    mean, var = batch_stats(conv_a, conv_b)
    own_mean, _ = batch_stats(conv_a)
    assert not np.allclose(mean, own_mean)  # the test would not notice per-image statistics
    for name, conv in (("a", conv_a), ("b", conv_b)):
        assert_close(np.load(out / name / "layer1_bn.npy"), bn_reference(conv, mean, var, 1e-5))
    for image in json.loads(result.stdout)["images"]:
        bn = next(s for s in image["stages"] if s["stage"] == "bn")
        np.testing.assert_allclose([c["bn_mean"] for c in bn["channels"]], mean, rtol=1e-6,
                                   atol=1e-9)  # fmt: skip
        np.testing.assert_allclose([c["bn_var"] for c in bn["channels"]], var, rtol=1e-6)


# ----------------------------------------------------------------- flags with -c


def test_one_layer_config_with_stride_flag(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 21, 16)
    config = tmp_path / "c.yaml"
    config.write_text("layers:\n  - conv: {kernels: [sobel_x], padding: 1}\n", encoding="utf-8")
    result = cbr("apply", image, "-o", tmp_path / "out", "-c", config, "--stride", "2",
                 "--json", "--no-channel-pngs")  # fmt: skip
    ok(result)
    # floor((21 + 2 - 3) / 2) + 1 = 11, floor((16 + 2 - 3) / 2) + 1 = 8
    stages = json.loads(result.stdout)["images"][0]["stages"]
    assert [s["shape"] for s in stages] == [[1, 11, 8], [1, 11, 8]]  # conv, act (no bn)


def test_multi_layer_config_with_layer_flag_is_an_error(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 8, 8)
    config = tmp_path / "c.yaml"
    config.write_text(
        "layers:\n  - conv: {out_channels: 2}\n  - conv: {out_channels: 2}\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    result = cbr("apply", image, "-o", out, "-c", config, "--activation", "none")
    one_line_error(result, "--activation: layer flags override a config with exactly one layer",
                   f"{config} has 2 layers")  # fmt: skip
    assert not out.exists()


def test_color_flag_overrides_the_config(tmp_path: Path, chelsea: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "input: {color: rgb}\nlayers:\n  - conv: {kernels: [identity]}\n    activation: none\n"
        "  - conv: {kernels: [identity]}\n    activation: none\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    ok(cbr("apply", chelsea, "-o", out, "-c", config, "--color", "gray", "--save-npy",
           "--no-channel-pngs"))  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"][0]["channels"] == 1
    assert manifest["pipeline"]["input"] == {"color": "gray"}
    gray = load_image(chelsea, "gray").pixels
    assert_close(np.load(out / "chelsea" / "layer1_conv.npy"), gray[:, 1:-1, 1:-1])
    with Image.open(out / "chelsea" / "input.png") as im:
        shown = np.asarray(im.convert("RGB"))
    assert (shown[..., 0] == shown[..., 1]).all()  # drawn gray


# --------------------------------------------------------------- file safety


def snapshot(root: Path, skip: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents
    }


def test_nothing_is_written_outside_out_and_inputs_are_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chelsea: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    gray = gray_png(tmp_path / "in" / "gray.png", 12, 12)
    out = tmp_path / "results" / "deeper"  # parents are created
    before = snapshot(tmp_path, out)
    ok(cbr("apply", chelsea, gray, "-o", out, "-k", "sobel", "--save-npy", "--bn", "running"))
    assert snapshot(tmp_path, out) == before
    assert sorted(p.name for p in out.iterdir()) == [
        "chelsea",
        "gray",
        "manifest.json",
        "report.html",
    ]
    assert not any(out.rglob("*.tmp"))


def test_out_that_contains_an_input_is_refused(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "in" / "img.png", 8, 8)
    one_line_error(cbr("apply", image, "-o", tmp_path / "in"), "--out", "must not contain input")
    one_line_error(cbr("apply", image, "-o", tmp_path), "--out", "must not contain input")
    assert files_under(tmp_path) == {"in/img.png"}


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 8, 8)
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = cbr("apply", image, "-o", target)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "taken" in result.stderr
    assert "is a file" in result.stderr or "not a directory" in result.stderr
    assert target.read_text() == "keep me"


def test_out_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 8, 8)
    (tmp_path / "taken").write_text("keep me")
    one_line_error(cbr("apply", image, "-o", tmp_path / "taken"), "taken")


def test_out_below_a_file_is_an_error(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 8, 8)
    (tmp_path / "taken").write_text("keep me")
    one_line_error(cbr("apply", image, "-o", tmp_path / "taken" / "sub", "-k", "box"),
                   "taken", exit_code=1)  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--normalize",
            "bad",
            "--normalize: expected one of ['auto', 'per-channel', 'per-stage', 'global']",
        ),
        ("--colormap", "bad", "--colormap: expected one of ['rdbu', "),
        ("--resize", "64", "--resize: expected HxW with positive integers"),
        ("--resize", "0x64", "--resize: expected HxW"),
        ("--bn", "sometimes", "--bn: expected one of ['batch', 'running', 'off']"),
        ("--padding", "half", "--padding: expected an int >= 0, a pair, or one of"),
        ("--color", "grey", "--color: expected one of ['gray', 'rgb'] (got 'grey'); did you mean"),
        ("--kernel", "sobelx", "--kernel: unknown kernel 'sobelx'; did you mean 'sobel_x'"),
        ("--kernel", "missing.npy", "--kernel: file not found (got 'missing.npy'"),
    ],
)
def test_bad_option_values_name_the_option(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    image = gray_png(tmp_path / "img.png", 8, 8)
    out = tmp_path / "out"
    one_line_error(cbr("apply", image, "-o", out, flag, value), message)
    assert not out.exists()


def test_kernel_too_large_for_the_image_names_the_layer(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 6, 6)
    out = tmp_path / "out"
    result = cbr("apply", image, "-o", out, "--kernel-size", "9")
    one_line_error(result, "layer 'layer1': kernel_size (9, 9)", "the output would be empty")
    assert not any(out.rglob("*.*"))


def test_out_of_memory_is_a_one_line_error(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 6, 6)
    # 65536 channels (the most a conv may have) x 3 stages of 1000x1000: ~730 GiB.
    result = cbr("apply", image, "-o", tmp_path / "out", "--out-channels", "65536",
                 "--resize", "1000x1000")  # fmt: skip
    one_line_error(result, "this run needs about", "GiB available", exit_code=1)
    assert not (tmp_path / "out").exists()


def test_a_run_too_big_for_memory_is_refused_before_it_starts(tmp_path: Path) -> None:
    # 200 channels x 3 stages of 9000x9000 float32 is ~190 GiB: without the up-front
    # estimate the kernel would kill the process (no message at all).
    image = gray_png(tmp_path / "img.png", 6, 6)
    result = cbr("apply", image, "-o", tmp_path / "out", "--out-channels", "200",
                 "--resize", "9000x9000")  # fmt: skip
    one_line_error(result, "this run needs about", "(1 image(s) of 9000x9000)", exit_code=1)
    assert not (tmp_path / "out").exists()


def traced_peak(run):
    """``run()``'s result and the peak of memory numpy and Python allocated meanwhile."""
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_kernel_larger_than_the_image_fails_before_any_weight_is_drawn(tmp_path: Path) -> None:
    # kernel_size 3000 on 64x64: 8 x 3000 x 3000 random weights (864 MB while drawn)
    # used to be made before the engine found the output empty; `cbr shape` knows at once.
    image = gray_png(tmp_path / "img.png", 64, 64)
    config = tmp_path / "c.yaml"
    config.write_text("layers:\n  - conv: {out_channels: 8, kernel_size: 3000}\n")
    shape = cbr("shape", "-c", config, "--input", "1x64x64")
    start = time.perf_counter()
    result, peak = traced_peak(lambda: cbr("apply", image, "-o", tmp_path / "out", "-c", config))
    assert time.perf_counter() - start < 5
    assert peak < 50 * 2**20, peak
    line = one_line_error(result, "the output would be empty")
    assert shape.exit_code == 2 and shape.stderr.strip() == line
    assert not (tmp_path / "out").exists()


def test_batch_checks_the_kernel_before_drawing_weights(tmp_path: Path) -> None:
    for name in ("a", "b"):
        gray_png(tmp_path / "in" / f"{name}.png", 64, 64)
    config = tmp_path / "c.yaml"
    config.write_text("layers:\n  - conv: {out_channels: 8, kernel_size: 3000}\n")
    run = ("batch", tmp_path / "in", "-o", tmp_path / "out", "-c", config, "--jobs", "1")
    result, peak = traced_peak(lambda: cbr(*run))
    assert peak < 50 * 2**20, peak
    one_line_error(result, "the output would be empty (every image is 64x64)")


def test_random_weights_too_big_for_memory_are_refused_before_they_are_drawn(
    monkeypatch,
) -> None:
    # What guards callers that cannot check the shape first (a batch of mixed sizes).
    from cbr_cli.run import memory
    from cbr_cli.run.pipeline import build_layers
    from cbr_cli.spec.flags import LayerFlags, build_spec

    monkeypatch.setattr(memory, "available_memory", lambda: 64 * 2**20)
    spec = build_spec(None, LayerFlags(out_channels=8, kernel_size="1000"))  # 96 MB to draw
    with pytest.raises(CbrError) as info:
        build_layers(spec, 1)
    assert info.value.message.startswith("--kernel-size: random weights of shape (8, 1, 1000")
    assert "GiB available" in info.value.message


def test_large_dilation_same_runs_without_padding_the_whole_input(tmp_path: Path) -> None:
    # Dilation 3000, 5x5 demo kernels, "same": the padded input would be 12064x12064
    # (582 MB for a gray image); only the centre taps read the image.
    image = gray_png(tmp_path / "img.png", 64, 64)
    run = ("apply", image, "-o", tmp_path / "out", "--no-channel-pngs", "--save-npy")
    result, peak = traced_peak(lambda: cbr(*run, "--dilation", "3000", "--padding", "same"))
    ok(result)
    assert peak < 100 * 2**20, peak
    # The same as the 1x1 convolution of the centre taps (bn batch and relu follow).
    centre = stack_kernels(["demo"])[:, 2:3, 2:3]
    got = np.load(tmp_path / "out" / "img" / "layer1_conv.npy")
    pixels = load_image(image).pixels
    expected = np.einsum("o,hw->ohw", centre[:, 0, 0].astype(np.float64), pixels[0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_memory_estimate_counts_the_padded_input(tmp_path: Path, monkeypatch) -> None:
    # Padding 6000 with stride 6000: a 3x3 output, but the engine pads the 64x64 input
    # to 12064x12064 (582 MB). With 256 MiB available that must be refused up front.
    monkeypatch.setattr(run_memory, "available_memory", lambda: 256 * 2**20)
    image = gray_png(tmp_path / "img.png", 64, 64)
    args = ("--padding", "6000", "--stride", "6000", "--out-channels", "2")
    result, peak = traced_peak(lambda: cbr("apply", image, "-o", tmp_path / "out", *args))
    one_line_error(result, "this run needs about 0.", "GiB available", exit_code=1)
    assert peak < 50 * 2**20, peak
    assert not (tmp_path / "out").exists()


def test_resize_beyond_the_image_pixel_limit_is_refused(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 6, 6)
    result = cbr("apply", image, "-o", tmp_path / "out", "--resize", "100000x100000")
    one_line_error(result, "--resize 100000x100000", "pixels is more than")


# ------------------------------------------------------------------ cbr kernels


def test_kernels_lists_the_bank() -> None:
    result = cbr("kernels")
    ok(result)
    assert result.stderr == ""
    for name in ("sobel_x", "kirsch_n", "gaussian", "laplacian4", "log", "identity"):
        assert name in result.stdout
    assert all(name in result.stdout for name in KERNELS)
    assert "Sets: sobel (2)" in result.stdout
    assert "demo (8)" in result.stdout


def test_kernels_shows_a_set() -> None:
    result = cbr("kernels", "sobel")
    ok(result)
    assert "sobel_x" in result.stdout
    assert "sobel_y" in result.stdout
    assert "kirsch_n" not in result.stdout
    assert "-2" in result.stdout  # the preview shows the numbers


def test_kernels_with_parameters() -> None:
    result = cbr("kernels", "gaussian:3:0.5")
    ok(result)
    assert "Gaussian blur 3x3, sigma 0.5" in result.stdout


def test_kernels_unknown_name_suggests() -> None:
    one_line_error(cbr("kernels", "sobelx"), "unknown kernel 'sobelx'; did you mean 'sobel_x'")


# ------------------------------------------------------------------------ help


# test_every_command_has_help_text: tests/cli/test_habits.py (invokes -h and --help)


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ([], ["apply", "kernels", "--version"]),
        (["apply"], ["--config", "--out", "--kernel", "--save-npy", "--json", "--resize",
                     "--stride", "--padding", "--bn", "--activation", "--normalize"]),
        (["kernels"], ["Kernels or sets to show"]),
    ],
    ids=["cbr", "apply", "kernels"],
)  # fmt: skip
def test_help(args: list[str], mentions: list[str]) -> None:
    result = cbr(*args, "--help")
    ok(result)
    for text in mentions:
        assert text in result.stdout, text


def test_version() -> None:
    from cbr_cli import __version__

    result = cbr("--version")
    ok(result)
    assert result.stdout == f"cbr {__version__}\n"


def test_values_beyond_float32_are_a_one_line_error_naming_the_layer(tmp_path: Path) -> None:
    # A float TIFF near float32's maximum overflows in the first conv: before, numpy
    # printed RuntimeWarnings and a misleading "running_mean contains NaN" error.
    image = tmp_path / "huge.tif"
    Image.fromarray(np.full((16, 16), 3e38, np.float32), "F").save(image)
    result = cbr("apply", image, "-o", tmp_path / "out", "--no-channel-pngs")
    one_line_error(result, "layer 'layer1': the values overflow float32", exit_code=1)


def test_json_lists_input_png_and_the_pytorch_departures(tmp_path: Path) -> None:
    image = gray_png(tmp_path / "img.png", 12, 15)
    out = tmp_path / "out"
    result = cbr("apply", image, "-o", out, "--out-channels", "2", "--kernel-size", "4",
                 "--stride", "2", "--padding", "same", "--json", "--no-channel-pngs")  # fmt: skip
    ok(result)
    data = json.loads(result.stdout)
    assert data["images"][0]["input_png"] == str(out / "img" / "input.png")
    assert (out / "img" / "input.png").is_file()
    # 'same' with stride 2 is refused by PyTorch: said on stderr and in the JSON, as by shape
    (same,) = [w for w in data["warnings"] if "TensorFlow" in w]
    assert f"warning: {same}" in result.stderr.splitlines()
    geometry = json.loads((out / "manifest.json").read_text())["geometry"]["1x12x15"][0]
    assert geometry["output_shape"] == [2, 6, 8]  # ceil(12/2), ceil(15/2)
    assert geometry["padding"] == {"top": 1, "bottom": 1, "left": 1, "right": 2}


def test_bias_true_with_given_kernels_is_refused(tmp_path: Path) -> None:
    # a random bias nobody could reproduce (no seed applies to given weights)
    image = gray_png(tmp_path / "img.png", 8, 8)
    result = cbr("apply", image, "-o", tmp_path / "out", "-k", "sobel", "--bias")
    one_line_error(result, "--bias: true draws a random bias", "'kernels'")
    assert not (tmp_path / "out").exists()


def test_grid_tiles_keep_fine_edges_of_large_maps(tmp_path: Path) -> None:
    """1-px lines every 12 columns, all where every-4th-pixel sampling skips them: the grid's
    area-averaged tile keeps them (grey stripes), nearest sampling would show a blank tile."""
    pixels = np.zeros((1024, 1024), np.uint8)
    pixels[:, 2::12] = 255  # a 3x3 identity moves them to output columns 1, 13, ...: 1 mod 4
    Image.fromarray(pixels, "L").save(tmp_path / "lines.png")
    out = tmp_path / "out"
    args = ["apply", tmp_path / "lines.png", "-o", out, "-k", "identity"]
    ok(cbr(*args, "--bn", "off", "--activation", "none", "--no-channel-pngs"))
    grid = np.asarray(Image.open(out / "lines" / "layer1_conv_grid.png").convert("L"), float)
    # A row through the middle of the one 256-px tile (below the title and label, above the
    # colour bar): the lines survive the 4x shrink as stripes, not a uniform row.
    middle = grid[grid.shape[0] // 2 - 20]
    inside = np.flatnonzero(middle != middle[0])  # the tile, not the background around it
    assert inside.size >= 200, inside.size
    row = middle[inside[0] + 10 : inside[-1] - 10]
    assert np.ptp(row) > 10, np.ptp(row)
