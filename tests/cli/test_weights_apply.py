"""``cbr apply`` with weight files: YAML ``from:``, ``--weights --layers``, ``--model``; every
format reproduces torch's eval-mode outputs (tests/fixtures/weights/outputs.npz)."""

from __future__ import annotations

import json

import pytest

from tests.cli.wcli import (
    STATE_YAML,
    TORCH_BLOCKS,
    apply_json,
    copy_fixture,
    fixture_image,
    invoke,
    max_error_vs_torch,
    one_line_error,
    stage_arrays,
)
from tests.io.weights_helpers import STATE_FILES, outputs

MODEL_FILES = ("model.onnx", "model.keras", "model.h5")


@pytest.mark.parametrize("weights", STATE_FILES)
def test_yaml_from_each_state_dict_format_matches_torch(tmp_path, weights):
    copy_fixture(weights, tmp_path)
    config = tmp_path / "net.yaml"
    config.write_text(STATE_YAML.format(weights=weights))  # relative to the YAML
    image = fixture_image(tmp_path)
    data = apply_json([image, "-c", config, "-o", tmp_path / "out"])
    max_error_vs_torch(data, ["conv1", "conv2", "dw", "pw"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pipeline"]["weights"] == str(tmp_path / weights)
    assert manifest["pipeline"]["layers"][0]["conv"]["tensors"] == {"weight": "conv1.weight"}
    assert manifest["pipeline"]["layers"][0]["bn"]["mode"] == "running"


def test_manifest_pipeline_loads_back_and_gives_the_same_maps(tmp_path):
    copy_fixture("model.npz", tmp_path)
    config = tmp_path / "net.yaml"
    config.write_text(STATE_YAML.format(weights="model.npz"))
    image = fixture_image(tmp_path)
    apply_json([image, "-c", config, "-o", tmp_path / "a"])
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    again = tmp_path / "again.json"  # JSON is YAML
    again.write_text(json.dumps(manifest["pipeline"]))
    data = apply_json([image, "-c", again, "-o", tmp_path / "b"])
    max_error_vs_torch(data, ["conv1", "conv2", "dw", "pw"])


@pytest.mark.parametrize("model", MODEL_FILES)
def test_model_file_runs_its_chain_and_says_where_it_stopped(tmp_path, model):
    path = copy_fixture(model, tmp_path)
    image = fixture_image(tmp_path)
    result = invoke(
        ["apply", image, "--model", path, "-o", tmp_path / "out", "--save-npy", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    names = [stage["layer"] for stage in data["images"][0]["stages"][::3]]
    max_error_vs_torch(data, names)
    stop = next(n for n in data["notes"] if "stops before 'pool'" in n)
    assert "pooling is not run by cbr" in stop
    assert f"note: {stop}\n" in result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert stop in manifest["notes"]


def test_torch_exported_onnx_has_bn_folded_and_says_so(tmp_path):
    path = copy_fixture("model_torch.onnx", tmp_path)
    image = fixture_image(tmp_path)
    result = invoke(["apply", image, "--model", path, "-o", tmp_path / "out", "--save-npy"])
    assert result.exit_code == 0, result.stderr
    folded = [line for line in result.stderr.splitlines() if "probably folded" in line]
    assert len(folded) == 4 and all(line.startswith("note: ") for line in folded)
    # Folded: each conv's output is torch's BN output; the activation's is torch's.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    layers = [layer["name"] for layer in manifest["pipeline"]["layers"]]
    assert all("bn" not in layer for layer in manifest["pipeline"]["layers"])
    ref = outputs()
    got = {
        (stage["layer"], stage["stage"]): stage
        for stage in json.loads(
            invoke(
                ["apply", image, "--model", path, "-o", tmp_path / "o2", "--save-npy", "--json"]
            ).stdout
        )["images"][0]["stages"]
    }
    import numpy as np

    for name, (_, bn, act) in zip(layers, TORCH_BLOCKS, strict=True):
        for stage, torch_name in (("conv", bn), ("act", act)):
            expected = ref[torch_name][0]
            array = np.load(got[(name, stage)]["files"]["npy"])
            np.testing.assert_allclose(
                array, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max())
            )


def test_until_stops_the_chain_after_a_node(tmp_path):
    path = copy_fixture("model.onnx", tmp_path)
    image = fixture_image(tmp_path)
    data = apply_json([image, "--model", path, "--until", "relu2", "-o", tmp_path / "out"])
    assert max_error_vs_torch(data, ["conv1", "conv2"], TORCH_BLOCKS[:2]) >= 0
    assert any("stopped after 'relu2' as asked" in note for note in data["notes"])


def test_until_names_a_node_outside_the_chain(tmp_path):
    path = copy_fixture("model.onnx", tmp_path)
    image = fixture_image(tmp_path)
    result = invoke(["apply", image, "--model", path, "--until", "fc", "-o", tmp_path / "out"])
    one_line_error(result, "until 'fc': not a node of the leading chain")
    assert not (tmp_path / "out").exists()


def test_weights_and_layers_flags_match_torch(tmp_path):
    path = copy_fixture("model.safetensors", tmp_path)
    image = fixture_image(tmp_path)
    args = [image, "--weights", path, "--layers", "conv1+bn1", "--stride", "2", "--padding", "3"]
    data = apply_json([*args, "-o", tmp_path / "out"])
    max_error_vs_torch(data, ["conv1"], TORCH_BLOCKS[:1])


def test_layers_flag_makes_one_layer_per_block_with_the_flags_for_all(tmp_path):
    path = copy_fixture("model.pth", tmp_path)
    image = fixture_image(tmp_path)
    data = apply_json(
        [
            *(image, "--weights", path, "--layers", "conv1+bn1, conv2 ", "--padding", "1"),
            *("-o", tmp_path / "out", "--activation", "none"),
        ]
    )
    stages = [(s["layer"], s["stage"], s["shape"]) for s in data["images"][0]["stages"]]
    assert stages == [
        ("conv1", "conv", [8, 28, 28]),  # 7x7, padding 1, stride 1: 32 + 2 - 6
        ("conv1", "bn", [8, 28, 28]),
        ("conv2", "conv", [8, 28, 28]),  # no '+': no BN
    ]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "    conv: {from: conv9, stride: 2}\n",
            ["net.yaml:4:18: layers[0].conv.from: model.pth: conv9.weight: no such tensor"],
        ),
        (
            "    conv: {from: conv1, out_channels: 16}\n",
            [
                "layers[0].conv.out_channels: model.pth: conv1.weight: has 8 output channels "
                "(shape (8, 3, 7, 7)), got 16"
            ],
        ),
        (
            "    conv: {from: conv1, kernel_size: 3}\n",
            ["layers[0].conv.kernel_size: model.pth: conv1.weight: has kernel [7, 7]"],
        ),
        (
            "    conv: {from: conv1}\n    bn: {from: features.4}\n",
            ["layers[0].bn.from: model.pth: features.4.weight: expected shape (8,), got (16,)"],
        ),
        (
            "    conv: {from: conv2}\n",  # 8 input channels per group, the image has 3
            ["layers[0].conv.from: model.pth: conv2.weight: expected shape", "got (8, 8, 3, 3)"],
        ),
        (
            "    conv: {from: bn1}\n",
            ["model.pth: bn1.weight: expected a conv weight of shape", "got (8,)"],
        ),
        (
            "    conv: {from: conv1, kernels: [sobel_x]}\n",
            ["layers[0].conv.from: give either 'kernels' or 'from', not both"],
        ),
        (
            "    conv: {tensors: {weight: conv1.weight, scale: x}}\n",
            ["layers[0].conv.tensors.scale: unknown key"],
        ),
    ],
)
def test_tensor_errors_are_one_line_naming_key_file_and_tensor(tmp_path, text, parts):
    copy_fixture("model.pth", tmp_path)
    config = tmp_path / "net.yaml"
    config.write_text("weights: model.pth\nlayers:\n  - name: a\n" + text)
    image = fixture_image(tmp_path)
    result = invoke(["apply", image, "-c", config, "-o", tmp_path / "out"])
    one_line_error(result, *parts)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--layers", "conv1+bn1"], ["--layers: give --weights FILE too"]),
        (["--weights", "{w}"], ["--weights: say which tensors to run with --layers"]),
        (["--weights", "{w}", "--layers", "conv1++bn1"], ["--layers: expected CONV+BN blocks"]),
        (
            ["--weights", "{w}", "--layers", "conv1+bn9"],
            ["--layers: ", "model.pth: bn9.running_mean: no such tensor"],
        ),
        (["--weights", "{w}", "--layers", "conv1", "-k", "sobel"], ["--kernel: not with --layers"]),
        (["--model", "{w}"], ["a torch file holds tensors but no layer geometry"]),
        (["--until", "x"], ["--until: only with --model"]),
        (["--model", "{m}", "--stride", "2"], ["--stride: not with --model"]),
    ],
)
def test_weight_flag_errors_are_one_line(tmp_path, args, parts):
    weights = copy_fixture("model.pth", tmp_path)
    model = copy_fixture("model.onnx", tmp_path)
    image = fixture_image(tmp_path)
    args = [a.format(w=weights, m=model) for a in args]
    result = invoke(["apply", image, *args, "-o", tmp_path / "out"])
    one_line_error(result, *parts)
    assert not (tmp_path / "out").exists()


def test_bn_from_with_mode_batch_uses_the_batch_statistics_and_the_affine_tensors(tmp_path):
    import numpy as np

    from tests.io.weights_helpers import reference_state

    copy_fixture("model.npz", tmp_path)
    config = tmp_path / "net.yaml"
    config.write_text(
        "weights: model.npz\nlayers:\n  - name: a\n    conv: {from: conv1, stride: 2, padding: 3}"
        "\n    bn: {from: bn1, mode: batch}\n"
    )
    data = apply_json([fixture_image(tmp_path), "-c", config, "-o", tmp_path / "out"])
    stages = stage_arrays(data)
    conv, bn = (stages[("a", s)].astype(np.float64) for s in ("conv", "bn"))
    state = reference_state()
    # Normalised by its own mean and biased variance, then bn1's affine: per channel, the
    # output's mean is bn1.bias and its standard deviation |bn1.weight| * sqrt(var/(var+eps)).
    var = conv.var(axis=(1, 2))
    np.testing.assert_allclose(bn.mean(axis=(1, 2)), state["bn1.bias"], atol=1e-5)
    expected_std = np.abs(state["bn1.weight"]) * np.sqrt(var / (var + 1e-5))
    np.testing.assert_allclose(bn.std(axis=(1, 2)), expected_std, rtol=1e-4)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pipeline"]["layers"][0]["bn"]["tensors"] == {
        "weight": "bn1.weight",
        "bias": "bn1.bias",
    }
