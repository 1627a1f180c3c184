"""Every format's tensors equal torch's, and cbr's ops on them reproduce torch's stages.

Tolerances (as tests/test_golden.py): each stage runs on *torch's* output of the stage
before, so errors do not compound and each stage is held to its own bound --
conv2d ``rtol=1e-5`` plus ``atol = 1e-6 * M``, ``M = max(|b| + conv(|x|, |w|))`` (a float32
dot product of length K errs by about ``sqrt(K) * eps32 * M``, eps32 = 1.2e-7, K <= 147
here); batch_norm ``rtol=1e-5, atol=1e-6 * max|expected|`` (both compute ``x * a + c`` up to
reassociation: a few eps32 of the largest term); ReLU / LeakyReLU exactly (one rounding per
element, the same in both).
"""

from __future__ import annotations

import numpy as np
import pytest

from cbr_cli.errors import CbrError
from cbr_cli.io.weights import read_model, read_tensors
from tests.io.weights_helpers import (
    FIXTURES,
    STAGES,
    STATE_FILES,
    check_activation,
    check_bn,
    check_conv,
    outputs,
    reference_state,
)


@pytest.mark.parametrize("name", STATE_FILES)
def test_state_dict_tensors_equal_torch(name):
    ref = reference_state()
    tf = read_tensors(str(FIXTURES / name))
    assert list(tf.tensors) == list(tf.info)
    assert set(tf.tensors) == set(ref)
    for key, expected in ref.items():
        got = tf.get(key)
        assert got.shape == expected.shape, key
        if expected.dtype == np.float32:
            assert got.dtype == np.float32, key
            np.testing.assert_array_equal(got, expected, err_msg=key)
        else:  # num_batches_tracked: int64 counter -> float32, not noted
            np.testing.assert_array_equal(got, expected.astype(np.float32), err_msg=key)
    assert not any("num_batches_tracked" in note for note in tf.notes)
    assert not tf.tensors["conv1.weight"].flags.writeable


@pytest.mark.parametrize("name", ["mixed.pth", "mixed.safetensors"])
def test_dtypes_strides_offsets_and_notes(name):
    with np.load(FIXTURES / "mixed_expected.npz", allow_pickle=False) as data:
        expected = {k: data[k] for k in data.files}
    tf = read_tensors(str(FIXTURES / name))
    if name.endswith(".safetensors"):
        expected.pop("param")  # safetensors has no Parameter type
    assert set(tf.tensors) == set(expected)
    for key, value in expected.items():
        got = tf.get(key)
        assert got.dtype == value.dtype, key  # float64 kept, everything else float32
        np.testing.assert_array_equal(got, value, err_msg=key)
    assert tf.info["bf16.weight"].dtype == "bfloat16"
    assert tf.info["half.weight"].dtype == "float16"
    assert "half.weight: float16 converted to float32" in tf.notes
    assert "bf16.weight: bfloat16 converted to float32" in tf.notes
    assert "steps: int64 converted to float32" in tf.notes
    assert not any(n.startswith(("double.weight", "transposed")) for n in tf.notes)


@pytest.mark.parametrize("name", STATE_FILES)
def test_names_subset_loads_only_those(name):
    tf = read_tensors(str(FIXTURES / name), names=["bn1.running_var"])
    assert list(tf.tensors) == ["bn1.running_var"]
    assert tf.info["conv1.weight"].shape == (8, 3, 7, 7)
    with pytest.raises(CbrError, match=r"conv1\.weight: not loaded"):
        tf.get("conv1.weight")
    shapes_only = read_tensors(str(FIXTURES / name), names=())
    assert shapes_only.tensors == {}
    assert shapes_only.shapes() == tf.shapes()


@pytest.mark.parametrize("name", STATE_FILES)
def test_stages_match_torch(name):
    """The fixture network from each state_dict format, run stage by stage with cbr's ops."""
    tf = read_tensors(str(FIXTURES / name))
    out = outputs()
    x = out["input"]
    for stage, kind, params in STAGES:
        expected = out[stage]
        if kind == "conv":
            bias = tf.get(f"{stage}.bias") if tf.has(f"{stage}.bias") else None
            check_conv(x, expected, tf.get(f"{stage}.weight"), bias, **params)
        elif kind == "bn":
            check_bn(
                x,
                expected,
                tf.get(f"{stage}.weight"),
                tf.get(f"{stage}.bias"),
                tf.get(f"{stage}.running_mean"),
                tf.get(f"{stage}.running_var"),
                1e-5,
            )
        else:
            check_activation(x, expected, kind, params.get("negative_slope", 0.01))
        x = expected


def run_chain_stagewise(chain, stage_names):
    """Each layer of ``chain`` on torch's output of the stage before; returns the layer kinds."""
    out = outputs()
    x = out["input"]
    kinds = []
    for layer, stage in zip(chain.layers, stage_names, strict=True):
        expected = out[stage]
        if layer.kind == "conv":
            check_conv(
                x,
                expected,
                layer.weight,
                layer.bias,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
        elif layer.kind == "bn":
            check_bn(
                x,
                expected,
                layer.weight,
                layer.bias,
                layer.running_mean,
                layer.running_var,
                layer.eps,
            )
        else:
            check_activation(x, expected, layer.activation, layer.negative_slope)
        kinds.append(layer.kind)
        x = expected
    return kinds


@pytest.mark.parametrize("name", ["model.onnx", "model.keras", "model.h5"])
def test_model_chain_matches_torch(name):
    chain = read_model(str(FIXTURES / name))
    kinds = run_chain_stagewise(chain, [stage for stage, _, _ in STAGES])
    assert kinds == ["conv", "bn", "activation"] * 4
    assert chain.stopped_at == "pool"
    assert "pooling is not run by cbr yet" in chain.stop_reason
    assert [b.bn is not None and b.act is not None for b in chain.blocks()] == [True] * 4
    assert chain.notes == ()


def test_onnx_geometry_and_names():
    chain = read_model(str(FIXTURES / "model.onnx"))
    conv1, bn1 = chain.layers[0], chain.layers[1]
    assert (conv1.stride, conv1.padding, conv1.pads, conv1.groups) == (
        (2, 2),
        (3, 3),
        (3, 3, 3, 3),
        1,
    )
    assert chain.layers[6].groups == 8
    assert (bn1.eps, bn1.momentum) == (1e-5, 0.1)  # ONNX momentum 0.9 is torch's 0.1
    assert chain.layers[8].negative_slope == pytest.approx(0.1, rel=1e-7)
    assert chain.input_shape == (1, 3, 32, 32)
    plain = chain.blocks()[0].to_plain()
    assert plain["conv"]["from"] == "conv1" and plain["bn"]["from"] == "bn1"
    assert plain["conv"]["stride"] == [2, 2] and plain["bn"]["eps"] == 1e-5


def test_keras_layout_conversions():
    """HWIO -> OIHW, depthwise -> groups, ZeroPadding2D folded, momentum 1 - m."""
    for name in ("model.keras", "model.h5"):
        chain = read_model(str(FIXTURES / name))
        ref = reference_state()
        conv1, dw = chain.layers[0], chain.layers[6]
        np.testing.assert_array_equal(conv1.weight, ref["conv1.weight"])
        np.testing.assert_array_equal(dw.weight, ref["features.0.weight"])
        assert (conv1.padding, conv1.pads, dw.groups) == ((3, 3), (3, 3, 3, 3), 8)
        assert chain.layers[3].padding == "same"
        assert chain.layers[1].momentum == pytest.approx(0.1)
        assert chain.input_shape == (None, 3, 32, 32)


def test_torch_exported_onnx_is_folded_and_said_so():
    """torch.onnx.export folds BN into the conv: shown as it is, with a note, and it still
    reproduces torch's activations (folding perturbs each weight by ~eps32, inside the conv
    tolerance)."""
    chain = read_model(str(FIXTURES / "model_torch.onnx"))
    assert [layer.kind for layer in chain.layers] == ["conv", "activation"] * 4
    assert chain.stopped_at is None and "graph output" in chain.stop_reason
    assert len(chain.notes) == 4
    assert all("BN is probably folded" in note for note in chain.notes)
    stages = [
        "bn1",
        "relu1",
        "bn2",
        "relu2",
        "features.1",
        "features.2",
        "features.4",
        "features.5",
    ]
    run_chain_stagewise(chain, stages)


@pytest.mark.parametrize("name", ["model.onnx", "model.keras"])
def test_until_stops_after_the_named_node(name):
    chain = read_model(str(FIXTURES / name), until="bn2")  # a node name / a layer name
    assert [layer.name for layer in chain.layers][-1] == "bn2"
    assert len(chain.layers) == 5
    assert chain.stop_reason == "stopped after 'bn2' as asked (until)"
    assert chain.blocks()[-1].act is None


@pytest.mark.parametrize("name", ["model.onnx", "model.keras"])
def test_until_unknown_is_an_error_listing_the_chain(name):
    with pytest.raises(CbrError, match=r"until 'nope': not a (node|layer) of the leading chain"):
        read_model(str(FIXTURES / name), until="nope")


@pytest.mark.parametrize("name", ["model.onnx", "model.keras"])
def test_pools_included_when_asked(name):
    chain = read_model(str(FIXTURES / name), pools=True)
    pool = chain.layers[-1]
    assert (pool.kind, pool.pool, pool.kernel_size, pool.stride) == ("pool", "max", (2, 2), (2, 2))
    assert len(chain.blocks()) == 4


def test_model_tensors_listed_in_file_layout():
    onnx_tf = read_tensors(str(FIXTURES / "model.onnx"))
    assert onnx_tf.format == "onnx"
    np.testing.assert_array_equal(
        onnx_tf.get("bn1.running_var"), reference_state()["bn1.running_var"]
    )
    keras_tf = read_tensors(str(FIXTURES / "model.h5"), names=())
    assert keras_tf.info["conv1/kernel"].shape == (7, 7, 3, 8)  # HWIO, as stored


def test_state_dict_has_no_geometry():
    with pytest.raises(
        CbrError, match=r"model\.pth: a torch file holds tensors but no layer geometry"
    ):
        read_model(str(FIXTURES / "model.pth"))
