"""``cbr weights`` (tables at 80 columns, --yaml that loads back and runs), ``cbr shape`` with
weight files and models, hostile files through the CLI, and what each command imports."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from cbr_cli.io.weights import detect_blocks, read_model, read_tensors
from tests.cli.wcli import (
    STATE_YAML,
    apply_json,
    copy_fixture,
    fixture_image,
    invoke,
    max_error_vs_torch,
    one_line_error,
)
from tests.helpers import run_python
from tests.io.weights_helpers import STATE_FILES

ALL_FILES = (*STATE_FILES, "model.onnx", "model_torch.onnx", "model.keras", "model.h5")


@pytest.mark.parametrize("name", ALL_FILES)
def test_weights_table_fits_80_columns_and_shows_every_number(tmp_path, name):
    path = copy_fixture(name, tmp_path)
    result = invoke(["weights", path], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    read = read_tensors(str(path), ())
    cells = [[c.strip() for c in line.split("│")] for line in lines if line.count("│") == 5]
    rows = {c[1]: c[2:5] for c in cells}
    for info in read.info.values():  # every tensor whole: name, shape, dtype, count
        shape = "x".join(map(str, info.shape)) or "scalar"
        assert rows[info.name] == [shape, info.dtype, f"{info.numel:,}"], info
    total = sum(info.numel for info in read.info.values())
    assert f"{total:,} values in all" in result.stdout
    if name in STATE_FILES:
        for block in detect_blocks(read.shapes()):
            assert re.search(
                rf"│ {re.escape(block.conv)} +│ {re.escape(block.bn)} +│", result.stdout
            )
    else:
        chain = read_model(str(path))
        for block in chain.blocks():
            assert f"{block.conv.in_channels}->{block.conv.out_channels}" in result.stdout
        assert ("stops before" in result.stdout) == (chain.stopped_at is not None)


@pytest.mark.parametrize("name", ["model.onnx", "model_torch.onnx", "model.keras", "model.h5"])
def test_weights_yaml_of_a_model_loads_back_and_matches_torch(tmp_path, name):
    path = copy_fixture(name, tmp_path)
    result = invoke(["weights", path, "--yaml"])
    assert result.exit_code == 0, result.stderr
    config = tmp_path / "sub" / "net.yaml"  # elsewhere: the weights path is absolute
    config.parent.mkdir()
    config.write_text(result.stdout)
    image = fixture_image(tmp_path)
    data = apply_json([image, "-c", config, "-o", tmp_path / "out"])
    names = list(dict.fromkeys(s["layer"] for s in data["images"][0]["stages"]))
    if name == "model_torch.onnx":  # BN folded: conv = torch's BN output, then act
        assert "probably folded" in result.stdout
        assert len(data["images"][0]["stages"]) == 8
    else:
        max_error_vs_torch(data, names)


def test_weights_yaml_of_a_state_dict_marks_placeholders_and_runs_once_filled(tmp_path):
    path = copy_fixture("model.pth", tmp_path)
    result = invoke(["weights", path, "--yaml"])
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.count("stride: 1") == text.count("# PLACEHOLDER\n") - text.count("dilation")
    assert "groups: 8                   # from the shapes: depthwise" in text
    config = tmp_path / "net.yaml"
    config.write_text(text)
    image = fixture_image(tmp_path)
    apply_json([image, "-c", config, "-o", tmp_path / "raw"])  # runs as written
    # Filled in (the first conv's stride, the MobileNet block's LeakyReLU): torch's numbers.
    filled = text.replace("stride: 1", "stride: 2", 1)
    tail = filled.index("- name: features.0")
    filled = filled[:tail] + filled[tail:].replace(
        "activation: relu ", "activation: leaky_relu\n    negative_slope: 0.1\n    #"
    )
    config.write_text(filled)
    data = apply_json([image, "-c", config, "-o", tmp_path / "out"])
    max_error_vs_torch(data, ["conv1", "conv2", "features.0", "features.3"])


def test_weights_until_is_for_models_only(tmp_path):
    path = copy_fixture("model.npz", tmp_path)
    one_line_error(invoke(["weights", path, "--until", "x"]), "--until: only for ONNX/Keras")


# ------------------------------------------------------------------ cbr shape


def test_shape_takes_a_state_dict_config(tmp_path):
    copy_fixture("model.safetensors", tmp_path)
    config = tmp_path / "net.yaml"
    config.write_text(STATE_YAML.format(weights="model.safetensors"))
    result = invoke(["shape", "-c", config, "--input", "3x32x32", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["output_shape"] for row in data["layers"]] == [
        list(torch_shape) for torch_shape in ([8, 16, 16], [8, 16, 16], [8, 16, 16], [16, 16, 16])
    ]
    assert data["layers"][0]["params_detail"] == {
        "conv_weight": 1176,
        "conv_bias": 0,
        "bn_affine": 16,
    }


@pytest.mark.parametrize("name", ["model.onnx", "model.keras"])
def test_shape_of_a_model_uses_its_declared_input(tmp_path, name):
    path = copy_fixture(name, tmp_path)
    result = invoke(["shape", "--model", path, "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [3, 32, 32]
    assert data["output_shape"] == list(TORCH_OUTPUT)
    assert any("stops before 'pool'" in note for note in data["notes"])
    assert "note: " in result.stderr and "as the model declares it" in result.stderr


TORCH_OUTPUT = (16, 16, 16)


def test_shape_applies_the_input_crop(tmp_path):
    path = copy_fixture("model.onnx", tmp_path)
    result = invoke(
        ["shape", "--model", path, "--preset", "imagenet-eval", "--input", "3x480x640", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input_shape"] == [3, 224, 224]
    assert data["output_shape"] == [16, 112, 112]


# ------------------------------------------------------------- hostile files


def _evil_pth(folder, marker):
    path = folder / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
        archive.writestr("archive/byteorder", "little")
    return path


def _lying_safetensors(folder, marker):
    path = folder / "lying.safetensors"
    header = json.dumps(
        {"conv1.weight": {"dtype": "F32", "shape": [8, 3, 7, 7], "data_offsets": [0, 10**10]}}
    ).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    return path


def _object_npz(folder, marker):
    import numpy as np

    path = folder / "objects.npz"
    np.savez(path, **{"conv1.weight": np.array([{"a": 1}, str(marker)], dtype=object)})
    return path


def _truncated_pth(folder, marker):
    source = copy_fixture("model.pth", folder)
    path = folder / "cut.pth"
    path.write_bytes(source.read_bytes()[:3000])
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_evil_pth, "refused to load the global 'os.system'"),
        (_lying_safetensors, "conv1.weight"),
        (_object_npz, "holds Python objects"),
        (_truncated_pth, "cut.pth"),
    ],
)
@pytest.mark.parametrize("how", ["flags", "yaml", "weights", "shape"])
def test_hostile_files_through_the_cli(tmp_path, make, expected, how):
    marker = tmp_path / "pwned"
    path = make(tmp_path, marker)
    image = fixture_image(tmp_path)
    out = tmp_path / "out"
    if how == "flags":
        args = ["apply", image, "--weights", path, "--layers", "conv1", "-o", out]
    elif how == "yaml":
        config = tmp_path / "net.yaml"
        config.write_text(f"weights: {path.name}\nlayers:\n  - conv: {{from: conv1}}\n")
        args = ["apply", image, "-c", config, "-o", out]
    elif how == "weights":
        args = ["weights", path]
    else:
        args = ["shape", "--weights", path, "--layers", "conv1", "--input", "3x32x32"]
    one_line_error(invoke(args), expected)
    assert not marker.exists()
    assert not out.exists()


# ------------------------------------------------------------------- imports

OPTIONAL = ("safetensors", "onnx", "h5py", "google.protobuf")


def _loaded_after(args: list[str]) -> list[str]:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cbr_cli.cli.app import app\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "assert r.exit_code == 0, r.stderr\n"
        f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))\n"
    )
    return eval(run_python(code).stdout.strip().splitlines()[-1])


def test_help_and_plain_shape_import_no_optional_reader():
    assert _loaded_after(["--help"]) == []
    assert _loaded_after(["weights", "--help"]) == []
    assert _loaded_after(["shape", "--input", "3x32x32", "--out-channels", "4"]) == []


def test_each_format_imports_only_its_own_reader(tmp_path):
    from tests.io.weights_helpers import FIXTURES

    args = ["shape", "--input", "3x32x32", "--layers", "conv1+bn1", "--weights"]
    assert _loaded_after([*args, str(FIXTURES / "model.npz")]) == []
    assert _loaded_after([*args, str(FIXTURES / "model.pth")]) == []
    assert _loaded_after(["shape", "--model", str(FIXTURES / "model.keras")]) == ["h5py"]
    onnx = _loaded_after(["shape", "--model", str(FIXTURES / "model.onnx")])
    assert "onnx" in onnx and "h5py" not in onnx
