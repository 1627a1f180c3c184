"""The weight API's messages, block detection, Keras/ONNX conventions, and import cost."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from cbr_cli.errors import CbrError
from cbr_cli.io.weights import detect_blocks, read_model, read_tensors, shape_mismatch
from tests.helpers import run_python
from tests.io.weights_helpers import FIXTURES


def test_shape_mismatch_message_format():
    err = shape_mismatch("model.pth", "bn1.running_var", (64,), (32,))
    assert str(err) == "model.pth: bn1.running_var: expected shape (64,), got (32,)"


def test_get_checks_shape_and_suggests_names():
    path = str(FIXTURES / "model.pth")
    tf = read_tensors(path)
    with pytest.raises(CbrError) as info:
        tf.get("bn1.running_var", (64,))
    assert str(info.value) == f"{path}: bn1.running_var: expected shape (64,), got (8,)"
    with pytest.raises(
        CbrError, match=r"conv9\.weight: no such tensor \(did you mean 'conv\d\.weight'\?\)"
    ):
        tf.get("conv9.weight")
    with pytest.raises(CbrError, match=r"bn7\.bias: no such tensor"):
        read_tensors(path, names=["bn7.bias"])


RESNET = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.weight": (64,),
    "bn1.bias": (64,),
    "bn1.running_mean": (64,),
    "bn1.running_var": (64,),
    "bn1.num_batches_tracked": (),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.bn1.bias": (64,),
    "layer1.0.bn1.running_mean": (64,),
    "layer1.0.bn1.running_var": (64,),
    "layer1.0.downsample.0.weight": (128, 64, 1, 1),
    "layer1.0.downsample.1.weight": (128,),
    "layer1.0.downsample.1.bias": (128,),
    "layer1.0.downsample.1.running_mean": (128,),
    "layer1.0.downsample.1.running_var": (128,),
    "fc.weight": (10, 512),
    "fc.bias": (10,),
}


def pairs(shapes):
    return [(b.conv, b.bn) for b in detect_blocks(shapes)]


def test_detect_resnet_names():
    assert pairs(RESNET) == [
        ("conv1", "bn1"),
        ("layer1.0.conv1", "layer1.0.bn1"),
        ("layer1.0.downsample.0", "layer1.0.downsample.1"),
    ]
    # sorted order (safetensors) changes nothing: names decide
    assert sorted(pairs(dict(sorted(RESNET.items())))) == sorted(pairs(RESNET))


def bn(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def test_detect_sequential_stem_and_fallback():
    shapes = {
        "features.0.0.weight": (32, 3, 3, 3),
        **bn("features.0.1", 32),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        **bn("features.1.conv.0.1", 32),
        "stem.conv.weight": (16, 3, 3, 3),
        **bn("stem.bn", 16),
        "conv_stem.weight": (24, 3, 3, 3),
        **bn("bn1", 24),  # timm: by file order
        "head.conv.weight": (8, 24, 1, 1),
        **bn("head.norm", 4),  # channels differ: no pair
    }
    assert pairs(shapes) == [
        ("features.0.0", "features.0.1"),
        ("features.1.conv.0.0", "features.1.conv.0.1"),
        ("stem.conv", "stem.bn"),
        ("conv_stem", "bn1"),
        ("head.conv", None),
    ]
    block = detect_blocks(shapes)[1]
    assert (block.out_channels, block.in_channels_per_group, block.kernel_size) == (32, 1, (3, 3))


def test_detect_fixture_blocks_every_format():
    for name in ("model.safetensors", "model.npz", "model.pth"):
        shapes = read_tensors(str(FIXTURES / name), names=()).shapes()
        assert pairs(shapes) == [
            ("conv1", "bn1"),
            ("conv2", "bn2"),
            ("features.0", "features.1"),
            ("features.3", "features.4"),
        ], name


def keras2_file(path, layers, weights):
    import h5py

    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        group = h5.create_group("model_weights")
        for name, values in weights.items():
            g = group.create_group(name)
            names = [f"{name}/{leaf}:0" for leaf in values]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, v in zip(names, values.values(), strict=True):
                g.create_dataset(n, data=v)


def test_keras_defaults_eps_momentum_leaky_slope(tmp_path):
    """Keras' defaults are not torch's: BN epsilon 1e-3, momentum 0.99 (torch's 0.01),
    LeakyReLU slope 0.3."""
    path = tmp_path / "defaults.h5"
    kernel = np.ones((3, 3, 2, 4), np.float32)
    layers = [
        {
            "class_name": "Conv2D",
            "config": {
                "name": "c",
                "filters": 4,
                "kernel_size": [3, 3],
                "use_bias": False,
                "batch_input_shape": [None, 8, 8, 2],
            },
        },
        {"class_name": "BatchNormalization", "config": {"name": "b", "center": False}},
        {"class_name": "LeakyReLU", "config": {"name": "a"}},
        {"class_name": "Add", "config": {"name": "add"}},
    ]
    ones = np.ones(4, np.float32)
    keras2_file(
        path,
        layers,
        {
            "c": {"kernel": kernel},
            "b": {"gamma": 2 * ones, "moving_mean": ones, "moving_variance": ones},
        },
    )
    chain = read_model(str(path))
    conv, norm, act = chain.layers
    assert conv.padding == (0, 0) and conv.weight.shape == (4, 2, 3, 3)
    assert (norm.eps, norm.momentum) == (1e-3, pytest.approx(0.01))
    np.testing.assert_array_equal(norm.bias, np.zeros(4))  # center: false
    assert act.negative_slope == 0.3
    assert chain.input_shape == (None, 2, 8, 8)
    assert chain.stopped_at == "add" and "unsupported layer" in chain.stop_reason


def onnx_conv_model(path, **conv_attrs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **conv_attrs),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w],
    )
    onnx.save(helper.make_model(graph), path)


@pytest.mark.parametrize(
    ("attrs", "padding", "stopped"),
    [
        ({"pads": [1, 2, 1, 2]}, (1, 2), None),
        ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, "same", None),
        ({"auto_pad": "VALID"}, (0, 0), None),
        ({"pads": [0, 0, 1, 1]}, None, "asymmetric pads [0, 0, 1, 1]"),
        ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, None, "SAME_LOWER"),
    ],
)
def test_onnx_padding_forms(tmp_path, attrs, padding, stopped):
    path = tmp_path / "conv.onnx"
    onnx_conv_model(path, **attrs)
    chain = read_model(str(path))
    if stopped is None:
        assert chain.layers[0].padding == padding
        assert chain.notes == ("conv: conv with no BatchNormalization after it",)
    else:
        assert chain.layers == () and chain.stopped_at == "conv"
        assert stopped in chain.stop_reason


def test_onnx_external_data_refused(tmp_path):
    import onnx

    path = tmp_path / "ext.onnx"
    onnx_conv_model(path)
    model = onnx.load(path)
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    onnx.save(model, path)
    with pytest.raises(CbrError, match=r"ext\.onnx: conv\.weight \(w\): stored as external data"):
        read_model(str(path))


def test_keras3_zip_without_weights_is_an_error(tmp_path):
    path = tmp_path / "odd.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(CbrError, match=r"a zip archive, but not a torch\.save file"):
        read_model(str(path))


def test_importing_the_package_imports_no_optional_dependency():
    code = (
        "import sys; import cbr_cli.io.weights as w; "
        "bad = [m for m in ('safetensors', 'onnx', 'h5py', 'torch', 'google.protobuf') "
        "if m in sys.modules]; print(bad)"
    )
    assert run_python(code).stdout.strip() == "[]"


def test_cbr_help_imports_no_weight_reader():
    code = (
        "import sys; from typer.testing import CliRunner; from cbr_cli.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "print([m for m in sys.modules if m.startswith('cbr_cli.io.weights') "
        "or m in ('safetensors', 'onnx', 'h5py')])"
    )
    assert run_python(code).stdout.strip() == "[]"


def test_keras_functional_follows_inbound_nodes_until_a_branch(tmp_path):
    """Functional configs (Keras 2 and Keras 3 spellings of inbound_nodes) are followed from
    the InputLayer; a layer read by two others ends the chain."""
    import h5py

    def k3(source):  # Keras 3: keras tensors carrying their history
        return [
            {
                "args": [
                    {"class_name": "__keras_tensor__", "config": {"keras_history": [source, 0, 0]}}
                ],
                "kwargs": {},
            }
        ]

    layers = [
        {
            "class_name": "InputLayer",
            "name": "in",
            "config": {"name": "in", "batch_shape": [None, 8, 8, 2]},
            "inbound_nodes": [],
        },
        {
            "class_name": "BatchNormalization",
            "name": "b",
            "config": {"name": "b", "epsilon": 0.01},
            "inbound_nodes": k3("c"),
        },  # listed before its input: order comes from the graph
        {
            "class_name": "Conv2D",
            "name": "c",
            "config": {
                "name": "c",
                "filters": 4,
                "kernel_size": 1,
                "use_bias": True,
                "activation": "linear",
                "padding": "same",
            },
            "inbound_nodes": [[["in", 0, 0, {}]]],
        },  # Keras 2 spelling
        {
            "class_name": "Conv2D",
            "name": "d1",
            "config": {"name": "d1", "filters": 4, "kernel_size": 1},
            "inbound_nodes": k3("b"),
        },
        {
            "class_name": "Conv2D",
            "name": "d2",
            "config": {"name": "d2", "filters": 4, "kernel_size": 1},
            "inbound_nodes": k3("b"),
        },
    ]
    config = {"class_name": "Functional", "config": {"name": "f", "layers": layers}}
    ones = np.ones(4, np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        weights = h5.create_group("model_weights")
        for name, values in {
            "c": {"kernel": np.ones((1, 1, 2, 4), np.float32), "bias": ones},
            "b": {"gamma": ones, "beta": ones, "moving_mean": ones, "moving_variance": ones},
        }.items():
            group = weights.create_group(name)
            names = [f"{name}/{leaf}:0" for leaf in values]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, v in zip(names, values.values(), strict=True):
                group.create_dataset(n, data=v)
    chain = read_model(str(tmp_path / "f.h5"))
    assert [layer.kind for layer in chain.layers] == ["conv", "bn"]
    assert chain.stopped_at == "d1" and "layer 'b' branches" in chain.stop_reason
    assert (chain.layers[0].padding, chain.layers[1].eps) == ("same", 0.01)
    # Conv2D(activation='relu') is Conv -> ReLU; a BN after the ReLU is no cbr layer order.
    layers[2]["config"]["activation"] = "relu"
    with h5py.File(tmp_path / "f.h5", "r+") as h5:
        h5.attrs["model_config"] = json.dumps(config)
    chain = read_model(str(tmp_path / "f.h5"))
    assert [layer.kind for layer in chain.layers] == ["conv", "activation"]
    assert chain.stopped_at == "b" and "not right after a Conv" in chain.stop_reason
