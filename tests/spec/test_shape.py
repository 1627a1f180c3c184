"""``cbr shape``: the layer arithmetic against the engine, against PyTorch, and the CLI.

* Property (hypothesis): for random stacks, :func:`cbr_cli.spec.layerstack.analyze` gives every
  layer exactly the shape :func:`cbr_cli.core.ops.conv2d` produces on a zero input, or both
  reject the same layer.
* Golden: ``fixtures/shape_golden.json`` (``fixtures/make_shape_golden.py``, torch 2.13.0)
  holds PyTorch's output shapes, parameter counts, FLOP counts and *measured* receptive
  fields of varied stacks.
* Hand-checked receptive fields, warnings, errors naming the layer.
* The CLI in-process (``typer.testing.CliRunner``: stdout and stderr apart), and its
  start-up imports in a fresh interpreter.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from cbr_cli.core import ops
from cbr_cli.core.shapes import PADDING_MODES, ReceptiveField, conv2d_geometry
from cbr_cli.errors import CbrError
from cbr_cli.spec.layerstack import WARNING_KINDS, analyze, parse_input_size
from cbr_cli.spec.pipeline_spec import parse_pipeline
from cbr_cli.spec.pipeline_types import BNSpec, ConvSpec, InputSpec, LayerSpec, PipelineSpec
from cbr_cli.spec.yaml_reader import from_plain
from tests.helpers import REPO, run_python

GOLDEN = REPO / "tests" / "fixtures" / "shape_golden.json"
CHELSEA = REPO / "samples" / "chelsea.png"  # 451 x 300 RGB


def pipeline(*layers: dict, **top: object) -> PipelineSpec:
    """A spec from YAML-schema data, through the same parser as a config file."""
    return parse_pipeline(from_plain({**top, "layers": list(layers)}, "test"), "test")


def conv_layer(name: str = "l", bn: BNSpec | None = None, **conv: object) -> LayerSpec:
    conv.setdefault("out_channels", 4)
    conv.setdefault("kernel_size", (3, 3))
    return LayerSpec(name, ConvSpec(**conv), bn)  # type: ignore[arg-type]


def stack(*layers: LayerSpec) -> PipelineSpec:
    return PipelineSpec(InputSpec(), tuple(layers))


# ------------------------------------------------------------ property: == engine


def _pairs(low: int, high: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(low, high), st.integers(low, high))


@st.composite
def random_stacks(draw: st.DrawFn) -> tuple[PipelineSpec, tuple[int, int, int]]:
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    layers = []
    for index in range(draw(st.integers(1, 4))):
        groups = draw(st.sampled_from([1, 1, 2, 3]))
        conv = ConvSpec(
            out_channels=groups * draw(st.integers(1, 3)),
            kernel_size=draw(_pairs(1, 4)),
            stride=draw(_pairs(1, 3)),
            padding=draw(st.one_of(st.sampled_from(["valid", "same", "full"]), _pairs(0, 3))),
            padding_mode=draw(st.sampled_from(PADDING_MODES)),
            dilation=draw(_pairs(1, 3)),
            groups=groups,
            bias=draw(st.booleans()),
        )
        bn = draw(st.sampled_from([None, BNSpec(), BNSpec(mode="running")]))
        layers.append(LayerSpec(f"l{index}", conv, bn, draw(st.sampled_from(["relu", "none"]))))
    return stack(*layers), shape


def engine_shapes(spec: PipelineSpec, shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """Run zeros through ``ops.conv2d`` layer by layer; stop at the first CbrError."""
    x = np.zeros((1, *shape), dtype=np.float32)
    shapes = []
    for layer in spec.layers:
        c = layer.conv
        in_group = max(x.shape[1] // c.groups, 1)
        weight = np.zeros((c.out_channels, in_group, *c.kernel_size), dtype=np.float32)
        bias = np.zeros(c.out_channels, dtype=np.float32) if c.bias else None
        try:
            x = ops.conv2d(
                x, weight, bias, c.stride, c.padding, c.dilation, c.groups, c.padding_mode
            )
        except CbrError:
            break
        shapes.append(x.shape[1:])
    return shapes


def model_shapes(spec: PipelineSpec, shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """``analyze`` on growing prefixes; stop at the first CbrError."""
    shapes = []
    for end in range(1, len(spec.layers) + 1):
        try:
            result = analyze(replace(spec, layers=spec.layers[:end]), shape)
        except CbrError:
            break
        shapes.append(result.layers[-1].output_shape)
    return shapes


@settings(max_examples=300, deadline=None)
@given(random_stacks())
def test_shapes_equal_the_engine_or_both_reject(case) -> None:
    spec, shape = case
    assert model_shapes(spec, shape) == engine_shapes(spec, shape)


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        # pinned edge cases: kernel exactly fills the input; reflect at its limit and past it;
        # circular padding == size; 'full' + reflect; TF 'same' on a size-1 axis
        ({"kernel_size": (3, 3)}, (1, 3, 3)),
        ({"padding": (1, 1), "padding_mode": "reflect"}, (1, 2, 2)),
        ({"padding": (2, 2), "padding_mode": "reflect"}, (1, 2, 2)),
        ({"padding": (2, 2), "padding_mode": "circular"}, (1, 2, 2)),
        ({"padding": "full", "padding_mode": "reflect"}, (1, 3, 3)),
        ({"padding": "same", "stride": (3, 3), "kernel_size": (4, 4)}, (1, 1, 1)),
        ({"groups": 2, "out_channels": 2}, (3, 5, 5)),
    ],
)
def test_pinned_cases_match_the_engine(conv: dict, shape: tuple[int, int, int]) -> None:
    spec = stack(conv_layer(**conv))
    assert model_shapes(spec, shape) == engine_shapes(spec, shape)


# ----------------------------------------------------------------- golden: torch


def _golden_cases() -> list[tuple[str, dict]]:
    document = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert document["torch"].startswith("2.")
    return sorted(document["stacks"].items())


@pytest.mark.parametrize(("name", "case"), _golden_cases(), ids=[n for n, _ in _golden_cases()])
def test_golden_stacks_from_torch(name: str, case: dict) -> None:
    result = analyze(pipeline(*case["layers"]), tuple(case["input_shape"]))
    assert len(result.layers) == len(case["expected"])
    for row, expected in zip(result.layers, case["expected"], strict=True):
        assert row.name == expected["name"]
        assert list(row.output_shape) == expected["output_shape"], name
        assert row.conv_weight_params + row.conv_bias_params == expected["conv_params"]
        assert row.bn_params == expected["bn_params"]
        assert row.bn_buffers == expected["bn_buffers"]
        assert row.params == expected["conv_params"] + expected["bn_params"]
        assert row.flops == 2 * row.macs == expected["flops"]
        if expected["receptive_field"] is not None:
            fields = (row.field_h, row.field_w)
            assert [f.size for f in fields] == expected["receptive_field"]
            assert [f.jump for f in fields] == expected["jump"]
            assert [f.centre for f in fields] == expected["receptive_field_centre"]
    assert result.total_params == sum(e["conv_params"] + e["bn_params"] for e in case["expected"])
    assert result.total_flops == sum(e["flops"] for e in case["expected"])


def test_golden_covers_measured_receptive_fields() -> None:
    measured = [row for _, case in _golden_cases() for row in case["expected"]]
    assert sum(row["receptive_field"] is not None for row in measured) >= 12


# ------------------------------------------------------------- receptive field


def test_receptive_field_7x7_s2_then_3x3_s2_by_hand() -> None:
    # layer 1: rf 7, jump 2; layer 2: rf = 7 + (3 - 1) * 2 = 11, jump = 2 * 2 = 4.
    # Unpadded, the first output sees input pixels 0..10: centre 5 = 3 + 1 * 2.
    spec = stack(
        conv_layer("a", kernel_size=(7, 7), stride=(2, 2)),
        conv_layer("b", kernel_size=(3, 3), stride=(2, 2)),
    )
    first, second = analyze(spec, (3, 64, 64)).layers
    assert (first.field_h.size, first.field_h.jump, first.field_h.centre) == (7, 2, 3.0)
    assert (second.field_h.size, second.field_h.jump, second.field_h.centre) == (11, 4, 5.0)
    assert second.field_w == second.field_h
    # Padded (3, then 1) as in ResNet: same size and jump, centred on pixel 0.
    padded = stack(
        conv_layer("a", kernel_size=(7, 7), stride=(2, 2), padding=(3, 3)),
        conv_layer("b", kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
    )
    last = analyze(padded, (3, 64, 64)).layers[-1]
    assert (last.field_h.size, last.field_h.jump, last.field_h.centre) == (11, 4, 0.0)


def test_receptive_field_of_dilated_and_even_kernels() -> None:
    # dilation 3 spans 3 * (3 - 1) + 1 = 7 pixels; a 2x2 kernel is centred between pixels
    start = ReceptiveField()
    dilated = conv2d_geometry((20, 20), 3, dilation=3).h
    assert start.through(dilated) == ReceptiveField(7, 1, 3.0)
    even = conv2d_geometry((20, 20), 2, stride=2).h
    assert start.through(even) == ReceptiveField(2, 2, 0.5)
    assert start.through(even).through(even) == ReceptiveField(4, 4, 1.5)


def test_batch_norm_and_activation_keep_shape_and_field() -> None:
    plain = analyze(stack(conv_layer()), (3, 10, 10)).layers[0]
    with_bn = analyze(stack(conv_layer(bn=BNSpec())), (3, 10, 10)).layers[0]
    assert with_bn.output_shape == plain.output_shape
    assert (with_bn.field_h, with_bn.field_w) == (plain.field_h, plain.field_w)


# ------------------------------------------------------------------ bookkeeping


def test_params_macs_and_memory_by_hand() -> None:
    # 3 -> 8 channels, 3x3, groups 1, bias: 8*3*9 + 8 = 224; BN: 16 affine, 16 buffers.
    # Output 8x8x8: MACs = 8*3*9 * 64 = 13824; memory = 3 stages * 4 B * 512 = 6144 B.
    row = analyze(stack(conv_layer(out_channels=8, bn=BNSpec())), (3, 10, 10)).layers[0]
    assert (row.conv_weight_params, row.conv_bias_params) == (216, 8)
    assert (row.bn_params, row.bn_buffers, row.params) == (16, 16, 240)
    assert row.macs == 13824 and row.flops == 27648
    assert row.stages == ("conv", "bn", "act")
    assert row.activation_bytes == 6144
    # groups divide the weight: 4 -> 8, groups 4: 8 * 1 * 9 = 72, no bias
    grouped = analyze(stack(conv_layer(out_channels=8, groups=4, bias=False)), (4, 5, 5))
    assert grouped.layers[0].params == 72
    assert grouped.layers[0].macs == 72 * 9


def test_to_plain_is_the_json_schema() -> None:
    result = analyze(stack(conv_layer("a", stride=(2, 2)), conv_layer("b")), (3, 9, 9))
    data = json.loads(json.dumps(result.to_plain()))
    assert data["input_shape"] == [3, 9, 9]
    assert data["total_params"] == sum(layer["params"] for layer in data["layers"])
    assert data["total_macs"] == sum(layer["macs"] for layer in data["layers"])
    first = data["layers"][0]
    for key in ("name", "input_shape", "output_shape", "padding", "params", "macs"):
        assert key in first
    assert first["output_shape"] == [4, 4, 4]
    assert first["padding"] == {"top": 0, "bottom": 0, "left": 0, "right": 0}
    assert first["receptive_field"] == [3, 3] and first["jump"] == [2, 2]
    assert data["layers"][1]["input_shape"] == first["output_shape"]


# -------------------------------------------------------------------- warnings


def _kinds(spec: PipelineSpec, shape: tuple[int, int, int]) -> list[str]:
    return [w.kind for w in analyze(spec, shape).warnings]


def test_stride_dropping_input_rows_warns_with_the_count() -> None:
    # (10 - 3) mod 3 = 1 row left over, and it is input, not padding
    [warning] = analyze(stack(conv_layer(stride=(3, 1))), (1, 10, 10)).warnings
    assert warning.kind == "stride_drop"
    assert "last 1 input row " in warning.message and "'l'" in warning.message


def test_stride_dropping_only_padding_is_not_warned() -> None:
    # ResNet's 3x3/2 pad 1 on an even size: the unread row is the bottom padding
    assert _kinds(stack(conv_layer(stride=(2, 2), padding=(1, 1))), (1, 224, 224)) == []


def test_even_kernel_same_padding_warns_asymmetry() -> None:
    [warning] = analyze(stack(conv_layer(kernel_size=(4, 4), padding="same")), (1, 9, 9)).warnings
    assert warning.kind == "asymmetric_padding"
    assert "pads 1 top/left and 2 bottom/right" in warning.message


def test_same_with_stride_explains_the_tensorflow_rule() -> None:
    spec = stack(conv_layer(padding="same", stride=(2, 2)))
    [warning] = analyze(spec, (1, 10, 10)).warnings
    assert warning.kind == "same_strided"
    assert "TensorFlow" in warning.message and "ceil(10 / 2) = 5" in warning.message


def test_batch_norm_on_a_1x1_output_warns() -> None:
    spec = stack(conv_layer(bn=BNSpec()))
    assert _kinds(spec, (1, 3, 3)) == ["bn_single_value"]
    assert _kinds(stack(conv_layer(bn=BNSpec(mode="running"))), (1, 3, 3)) == []


def test_warning_kinds_are_declared() -> None:
    spec = stack(
        conv_layer("a", kernel_size=(4, 4), padding="same"),
        conv_layer("b", padding="same", stride=(2, 2)),
        conv_layer("c", stride=(2, 2)),
        conv_layer("d", bn=BNSpec(), kernel_size=(2, 2)),
    )
    kinds = set(_kinds(spec, (1, 12, 12)))
    assert kinds == set(WARNING_KINDS)


# ---------------------------------------------------------------------- errors


def test_empty_output_is_an_error_naming_the_layer() -> None:
    spec = stack(conv_layer("first"), conv_layer("second", kernel_size=(5, 5)))
    with pytest.raises(CbrError, match=r"layer 'second': .*the output would be empty"):
        analyze(spec, (1, 5, 5))


def test_reflect_padding_too_large_is_an_error_naming_the_layer() -> None:
    spec = stack(conv_layer("r", padding=(3, 3), padding_mode="reflect"))
    with pytest.raises(CbrError, match=r"layer 'r': padding_mode='reflect' needs padding < "):
        analyze(spec, (1, 3, 8))


def test_groups_must_divide_the_input_channels() -> None:
    with pytest.raises(CbrError, match=r"layer 'g': groups must divide the input channels \(4\)"):
        analyze(stack(conv_layer("g", groups=3, out_channels=3)), (4, 5, 5))


def test_list_parameters_must_match_the_channels() -> None:
    spec = pipeline({"conv": {"out_channels": 4}, "bn": {"mode": "batch", "weight": [1, 2]}})
    with pytest.raises(CbrError, match=r"expected 4 values for bn.weight of layer 'layer1'"):
        analyze(spec, (3, 8, 8))
    spec = pipeline({"conv": {"out_channels": 4}}, input={"mean": [0.5, 0.5, 0.5]})
    with pytest.raises(CbrError, match=r"expected 1 value for input.mean, one per channel"):
        analyze(spec, (1, 8, 8))


@pytest.mark.parametrize(
    ("text", "color", "expected"),
    [
        ("3x224x224", None, (3, 224, 224)),
        ("224x200", None, (3, 224, 200)),
        ("224x200", "gray", (1, 224, 200)),
        ("1x5x6", "gray", (1, 5, 6)),
        ("64, 7, 7", None, (64, 7, 7)),
        ("3X8X9", "rgb", (3, 8, 9)),
    ],
)
def test_parse_input_size(text: str, color: str | None, expected: tuple) -> None:
    assert parse_input_size(text, color) == expected


@pytest.mark.parametrize("text", ["224", "0x5x5", "3x5x5x5", "axb", "3x-5x5", ""])
def test_parse_input_size_rejects(text: str) -> None:
    with pytest.raises(CbrError, match=r"--input: expected CxHxW or HxW"):
        parse_input_size(text)


def test_parse_input_size_rejects_channels_contradicting_the_colour() -> None:
    with pytest.raises(CbrError, match=r"--input: 3 channels, but the input colour is gray"):
        parse_input_size("3x8x8", "gray")


# ------------------------------------------------------------------------- CLI

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["shape", *args])


def test_cli_table_on_stdout() -> None:
    result = invoke(
        "--input", "3x224x224", "--out-channels", "64", "--kernel-size", "7", "--stride", "2",
        "--padding", "3", "--no-bias", "--bn", "batch",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "3x224x224" in out and "64x112x112" in out
    assert "floor((224 + 3 + 3 - 1*(7-1) - 1) / 2 + 1) = 112" in out
    assert "9,536" in out  # 64*3*7*7 = 9408 conv + 128 BN affine
    assert "3/3/3/3" in out
    assert "118,013,952" in out  # MACs total in the caption: 9408 * 112 * 112
    assert "total" in out


def test_cli_json_schema() -> None:
    result = invoke(
        "--input", "3x32x32", "-k", "sobel", "--stride", "2", "--padding", "1", "--json"
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [3, 32, 32]
    [layer] = data["layers"]
    assert layer["name"] == "layer1"
    assert layer["output_shape"] == [2, 16, 16]  # sobel = sobel_x, sobel_y
    assert layer["padding"] == {"top": 1, "bottom": 1, "left": 1, "right": 1}
    assert layer["params"] == 2 * 3 * 9 + 4  # no bias with given kernels; BN affine 2*2
    assert layer["macs"] == 2 * 3 * 9 * 16 * 16
    assert layer["receptive_field"] == [3, 3] and layer["jump"] == [2, 2]
    assert data["total_params"] == layer["params"] and data["total_macs"] == layer["macs"]
    assert result.stderr == ""


def test_cli_warnings_go_to_stderr() -> None:
    result = invoke("--input", "3x8x8", "--kernel-size", "3", "--stride", "2", "--json")
    assert result.exit_code == 0
    json.loads(result.stdout)  # stdout stays pure JSON
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("warning: layer 'layer1': stride 2 never reads the last 1 input")
    table = invoke("--input", "3x8x8", "--kernel-size", "3", "--stride", "2")
    assert "stride drops 1" in table.stdout
    assert table.stderr == result.stderr


def test_cli_same_with_stride_mentions_tensorflow() -> None:
    result = invoke("--input", "3x9x9", "--kernel-size", "3", "--stride", "2", "--padding", "same")
    assert result.exit_code == 0
    assert "TensorFlow" in result.stderr and result.stderr.startswith("warning: ")
    assert "TF-style 'same'" in result.stdout


def test_cli_empty_output_is_an_error() -> None:
    result = invoke("--input", "3x2x2", "--kernel-size", "3")
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: layer 'layer1': ")
    assert "output would be empty" in line


def test_cli_image_header_gives_the_input_size() -> None:
    result = invoke("--image", str(CHELSEA), "--kernel-size", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["input_shape"] == [3, 300, 451]
    gray = invoke("--image", str(CHELSEA), "--color", "gray", "--kernel-size", "3", "--json")
    assert json.loads(gray.stdout)["layers"][0]["input_shape"] == [1, 300, 451]


def test_cli_config_with_npy_weight(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.zeros((4, 3, 5, 5), dtype=np.float32))
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "layers:\n"
        "  - name: first\n"
        "    conv: {weight: w.npy, stride: 2, padding: 2}\n"
        "    bn: batch\n"
        "  - name: second\n"
        "    conv: {out_channels: 8, kernel_size: 3}\n"
        "    activation: none\n",
        encoding="utf-8",
    )
    result = invoke("-c", str(config), "--input", "64x64", "--json")  # C = 3: rgb by default
    assert result.exit_code == 0, result.stderr
    first, second = json.loads(result.stdout)["layers"]
    assert first["name"] == "first" and first["output_shape"] == [4, 32, 32]
    assert first["params"] == 4 * 3 * 25 + 8  # weight file: no bias; BN affine
    assert second["output_shape"] == [8, 30, 30] and second["params"] == 8 * 4 * 9 + 8
    # one input channel cannot feed a weight made for three: the layer and file are named
    gray = invoke("-c", str(config), "--input", "1x64x64")
    assert gray.exit_code == 2 and gray.stdout == ""
    assert "layers[0].conv.weight: expected shape" in gray.stderr  # the layer, by key path
    assert "= (4, 1, 5, 5) for 1 input channel(s)" in gray.stderr
    assert "w.npy" in gray.stderr and len(gray.stderr.splitlines()) == 1


def test_cli_config_color_sets_the_channels(tmp_path: Path) -> None:
    config = tmp_path / "gray.yaml"
    config.write_text(
        "input: {color: gray}\nlayers:\n  - conv: {out_channels: 2, kernel_size: 3}\n",
        encoding="utf-8",
    )
    result = invoke("-c", str(config), "--input", "10x12", "--json")
    assert json.loads(result.stdout)["input_shape"] == [1, 10, 12]
    conflict = invoke("-c", str(config), "--input", "3x10x12")
    assert conflict.exit_code == 2
    assert conflict.stderr.startswith("error: --input: 3 channels, but the input colour is gray")


def test_cli_config_error_names_file_and_layer(tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text(
        "layers:\n  - conv: {out_channels: 2, kernel_size: 3, stride: 4}\n"
        "  - name: tail\n    conv: {out_channels: 2, kernel_size: 5}\n",
        encoding="utf-8",
    )
    result = invoke("-c", str(config), "--input", "3x16x16")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {config}:4:11: layers[1].conv: layer 'tail': ")  # 2nd conv


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--input", "3x8x8", "--image", str(CHELSEA)],
        ["--input", "big"],
        ["--input", "3x8x8", "--stride", "0"],
        ["--input", "3x8x8", "--padding", "sometimes"],
        ["--image", str(REPO / "no-such-image.png")],
        ["--image", str(REPO)],
    ],
)
def test_cli_usage_errors(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")


# test_every_command_has_help_text: tests/cli/test_habits.py (invokes -h and --help)


# ------------------------------------------------------------------- start-up

HEAVY = ("numpy", "scipy", "PIL", "yaml")


def _imported_after(args: list[str]) -> list[str]:
    code = (
        "import json, sys\n"
        "from cbr_cli.cli.app import app\n"
        f"try:\n    app({args!r}, prog_name='cbr')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] in heavy)\n"
        "sys.stderr.write(json.dumps(loaded))\n"
    )
    result = run_python(code)
    return json.loads(result.stderr.splitlines()[-1])


def test_shape_imports_no_numpy_scipy_pillow_or_yaml() -> None:
    assert _imported_after(["shape", "--help"]) == []
    args = ["shape", "--input", "3x224x224", "--out-channels", "16", "--stride", "2"]
    assert _imported_after(args) == []


def test_shape_with_built_in_kernels_imports_no_scipy_or_pillow() -> None:
    loaded = _imported_after(["shape", "--input", "3x224x224", "-k", "sobel"])
    assert not [name for name in loaded if name.split(".")[0] in ("scipy", "PIL", "yaml")]
