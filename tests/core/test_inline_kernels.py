"""Kernels typed as numbers: ImageMagick's ``WxH:v,v,...``, odd-square lists, YAML rows,
and ``--flip`` (true convolution) against SciPy's correlate/convolve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import signal
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from cbr_cli.core import kernels as bank
from cbr_cli.errors import CbrError
from cbr_cli.spec.flags import LayerFlags, build_spec

runner = CliRunner()
SOBEL = "3x3:-1,0,1,-2,0,2,-1,0,1"
ASYMMETRIC = [[1.0, 2.0, 0.0], [0.0, -1.0, 3.0], [0.5, 0.0, -2.0]]  # no 180° symmetry


@pytest.mark.parametrize(
    "text",
    [SOBEL, "3x3: -1 0 1  -2 0 2  -1 0 1", "3X3:-1,0,1;-2,0,2;-1,0,1", "-1,0,1,-2,0,2,-1,0,1"],
)
def test_inline_forms_give_the_same_kernel(text: str) -> None:
    [spec] = bank.expand_names([text])
    assert spec == SOBEL  # the canonical form the pipeline stores
    np.testing.assert_array_equal(bank.get_kernel(spec), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def test_width_comes_first_as_in_imagemagick() -> None:
    assert bank.stack_shape(["3x1:1,2,1"]) == (1, 1, 3)  # 3 wide, 1 high
    assert bank.stack_shape(["1x3:1,2,1"]) == (1, 3, 1)
    np.testing.assert_array_equal(bank.stack_kernels(["1x3:1,2,1"])[0, :, 0], [1, 2, 1])
    np.testing.assert_array_equal(bank.get_kernel("2x3:1,2,3,4,5,6"), [[1, 2], [3, 4], [5, 6]])


def test_inline_kernels_stack_with_named_ones() -> None:
    stack = bank.stack_kernels(["3x1:1,2,1", "sobel_x", "5x5:" + ",".join(["1"] * 25)])
    assert stack.shape == (3, 5, 5)  # centred in the largest size, zeros around
    np.testing.assert_array_equal(stack[0, 2, 1:4], [1, 2, 1])
    assert stack[0].sum() == 4
    np.testing.assert_array_equal(stack[1, 1:4, 1:4], bank.get_kernel("sobel_x"))


def test_numbers_round_trip_exactly() -> None:
    [spec] = bank.expand_names(["1x1:0.1"])
    assert spec == "1x1:0.1"
    assert bank.get_kernel(spec)[0, 0] == np.float32(0.1)
    assert bank.inline_spec([[1, 2.5, -3e-5]]) == "3x1:1,2.5,-3e-05"


def test_labels_are_readable() -> None:
    assert bank.kernel_label(SOBEL) == "[-1 0 1|-2 0 2|-1 0 1]"
    assert bank.kernel_label("5x5:" + ",".join(["0"] * 25)) == "5x5 inline"
    assert bank.kernel_label("sobel_x") == "sobel_x"
    assert bank.describe(SOBEL).startswith("inline 3x3 kernel")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3x3:1,2", "'3x3:1,2': 3x3 (width x height, as ImageMagick) needs 9 values"),
        ("3x3:1,x,3,1,1,1,1,1,1", "'x' is not a number"),
        ("1,2,3,4", "'1,2,3,4': 4 values are not an odd square"),
        ("0x3:", "WxH must be between 1 and 101 (got 0x3)"),
        ("1x1:nan", "'nan' is not a finite number"),
        ("1,inf,1,1,1,1,1,1,1", "'inf' is not a finite number"),
    ],
)
def test_a_bad_inline_kernel_names_the_value(text: str, message: str) -> None:
    with pytest.raises(CbrError) as info:
        bank.expand_names([text])
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_names_are_not_taken_for_numbers() -> None:
    assert bank.expand_names(["emboss"]) == ["emboss"]  # 'e' could start '1e3'
    assert not bank.is_inline("log:5")


# ------------------------------------------------------------------ YAML


def spec_from(tmp_path: Path, kernels: str):
    config = tmp_path / "net.yaml"
    config.write_text(f"layers:\n  - conv: {{kernels: {kernels}}}\n")
    return build_spec(config, LayerFlags())


def test_yaml_rows_and_names(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, "[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], sobel_y, '3x1:1,2,1']")
    conv = spec.layers[0].conv
    assert conv.kernels == (SOBEL, "sobel_y", "3x1:1,2,1")
    assert conv.out_channels == 3 and conv.kernel_size == (3, 3)


@pytest.mark.parametrize(
    ("kernels", "message"),
    [
        ("[[-1, 0, 1], [-2, 0, 2]]", "kernels[0]: a kernel given as numbers is a list of rows"),
        ("[[[-1, 0, 1], [-2, 0]]]", "kernels[0]: inline kernel rows must all have one length"),
        ("[[[1, true]]]", "kernels[0]: inline kernel values must be finite numbers (got True)"),
        ("[[[1, x]]]", "inline kernel values must be finite numbers (got 'x')"),
        ("[[]]", "an inline kernel needs at least one row of numbers"),
        ("['3x3:1']", "kernels[0]: inline kernel '3x3:1': 3x3"),
    ],
)
def test_yaml_errors_are_one_line_naming_the_item(
    tmp_path: Path, kernels: str, message: str
) -> None:
    with pytest.raises(CbrError) as info:
        spec_from(tmp_path, kernels)
    assert "net.yaml:2:" in info.value.message
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_flip_is_a_yaml_key_too(tmp_path: Path) -> None:
    config = tmp_path / "net.yaml"
    config.write_text("layers:\n  - conv: {kernels: [sobel_x], flip: true}\n")
    assert build_spec(config, LayerFlags()).layers[0].conv.flip is True
    config.write_text("layers:\n  - conv: {kernels: [sobel_x], flip: 1}\n")
    with pytest.raises(CbrError, match=r"conv.flip: expected true or false \(got 1\)"):
        build_spec(config, LayerFlags())


# ------------------------------------------------------------------ CLI, against SciPy


def conv_output(tmp_path: Path, *args: str) -> tuple[np.ndarray, np.ndarray, dict]:
    image = tmp_path / "img.png"
    pixels = np.random.default_rng(1).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(image)
    out = tmp_path / "out"
    command = ["apply", str(image), "-o", str(out), "--bn", "off", "--activation", "none"]
    result = runner.invoke(app, [*command, "--no-channel-pngs", "--save-npy", "--json", *args])
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    return np.load(out / "img" / "layer1_conv.npy"), pixels / 255.0, manifest


def test_inline_kernel_is_cross_correlated_as_pytorch(tmp_path: Path) -> None:
    text = "3x3:" + ",".join(str(v) for row in ASYMMETRIC for v in row)
    got, x, manifest = conv_output(tmp_path, "-k", text)
    expected = signal.correlate2d(x, np.array(ASYMMETRIC), mode="valid")
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)
    assert manifest["pipeline"]["layers"][0]["conv"]["flip"] is False


def test_flip_gives_scipys_convolution(tmp_path: Path) -> None:
    text = "3x3:" + ",".join(str(v) for row in ASYMMETRIC for v in row)
    got, x, manifest = conv_output(tmp_path, "-k", text, "-k", "sobel_x", "--flip")
    np.testing.assert_allclose(
        got[0], signal.convolve2d(x, np.array(ASYMMETRIC), mode="valid"), rtol=1e-5, atol=1e-6
    )
    sobel = bank.get_kernel("sobel_x").astype(np.float64)
    np.testing.assert_allclose(
        got[1], signal.convolve2d(x, sobel, mode="valid"), rtol=1e-5, atol=1e-6
    )
    conv = manifest["pipeline"]["layers"][0]["conv"]
    assert conv["flip"] is True
    assert conv["kernels"][1] == "sobel_x"


def test_labels_in_json_are_readable(tmp_path: Path) -> None:
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(image)
    result = runner.invoke(
        app, ["apply", str(image), "-o", str(tmp_path / "o"), "-k", SOBEL, "--json"]
    )
    assert result.exit_code == 0, result.stderr
    channel = json.loads(result.stdout)["images"][0]["stages"][0]["channels"][0]
    assert channel["label"] == "0:[-1 0 1|-2 0 2|-1 0 1]"


def test_a_bad_inline_flag_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["shape", "--input", "1x8x8", "-k", "3x3:1,2,3"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: --kernel: inline kernel '3x3:1,2,3': 3x3 (width x height, as ImageMagick) "
        "needs 9 values, row by row (got 3)\n"
    )


def test_help_states_the_convention() -> None:
    result = runner.invoke(app, ["apply", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "--flip" in text and "true convolution" in text and "cross-correlation" in text
    assert "WxH:" in text
