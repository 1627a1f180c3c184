"""``cbr_cli.core.ops`` against PyTorch's own numbers, stored in ``fixtures/golden_ops.npz``.

The fixtures are written by ``fixtures/make_golden.py`` (torch 2.13.0, CPU, float32);
this file needs only numpy.  Tolerances, all float32:

* conv2d: ``rtol=1e-5`` plus ``atol = 1e-6 * M`` with ``M = max(|b| + conv(|x|, |w|))``
  stored per case.  Torch and cbr each sum up to ``K = C_in/groups * kH * kW`` (147 for
  the 7x7 stem) float32 products in different orders; their rounding errors are a few
  ``sqrt(K) * eps32 * M`` ~ 1e-6 * M in practice.  Outputs that cancel to near zero
  need that ``atol``, ``rtol`` alone would demand more precision than either has.  The FFT
  engine's error is also relative to ``M`` (see ``test_ops_conv.py``).
* batch_norm: outputs are normalised, O(|weight| + |bias|); ``rtol=1e-5`` plus
  ``atol=1e-6 * max|expected|`` (torch computes ``x * a + b``, cbr ``(x - mean) * a``:
  both lose ~eps32 relative to the largest term).  Running statistics: ``rtol=1e-5``,
  ``running_mean`` also ``atol=1e-6 * max|x|`` because a batch mean can be close to 0.
* relu / leaky_relu: elementwise, at most one correctly rounded float32 multiply,
  so equal (``assert_array_equal``: NaN must stay NaN; ``-0.0 == 0.0``, which is as
  it should be -- torch gives ``-0.0`` for ``leaky_relu(0.0, -0.5)``, cbr ``0.0``).

* conv2d_bn_act (the fused op, every stage): conv as conv2d; bn and act ``rtol=1e-5``
  plus ``atol = 1e-6 * M * max(scale) + 1e-6 * max|expected|`` with ``scale =
  |gamma| / sqrt(var + eps)`` per channel: the conv's error, up to ``1e-6 * M``, comes
  out of BN multiplied by its scale, BN adds its own rounding; running stats as
  batch_norm's, ``atol`` relative to ``max|conv|``.

Measured when the fixtures were made: conv errors <= 2e-7 * M on both engines, batch
norm <= 1.2e-7 * max|expected|, running stats <= 2.1e-7 relative -- about ten times
inside the tolerances.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbr_cli.core.ops import batch_norm, conv2d, conv2d_bn_act, leaky_relu, relu
from tests.helpers import REPO
from tests.reference import conv2d_reference

GOLDEN = REPO / "tests" / "fixtures" / "golden_ops.npz"


def _load() -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(GOLDEN) as npz:  # allow_pickle stays False: the file holds no objects
        arrays = {key: npz[key] for key in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    return meta, arrays


META, ARRAYS = _load()
CASES = META["cases"]


def names(*ops: str) -> list[str]:
    return sorted(name for name, case in CASES.items() if case["op"] in ops)


def get(name: str, key: str) -> np.ndarray | None:
    return ARRAYS.get(f"{name}/{key}")


def conv_params(name: str) -> dict:
    """JSON lists back to tuples, as a user would pass pairs."""
    params = CASES[name]["params"]
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def test_fixture_is_complete() -> None:
    """The cases issue 2 asks for are all there (a silently shorter file would pass)."""
    required = {
        "conv_same_even_kernel",
        "conv_same_dilation2",
        "conv_reflect_p2",
        "conv_replicate_pair",
        "conv_circular_stride2",
        "conv_groups2",
        "conv_depthwise",
        "conv_stride2",
        "conv_stem_7x7_s2_p3",
        "bn_train_momentum_0.1",
        "bn_train_momentum_0.5_affine",
        "bn_eval_affine",
        "bn_train_batch3",
        "leaky_relu_default",
        "leaky_relu_slope_0.2",
        "relu",
    }
    assert required <= set(CASES)
    for name in CASES:
        assert get(name, "expected") is not None, name
    assert len(names("conv2d_bn_act")) >= 4
    assert GOLDEN.stat().st_size < 300 * 1024


@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
@pytest.mark.parametrize("name", names("conv2d"))
def test_conv2d_golden(name: str, method: str) -> None:
    x, expected = get(name, "input"), get(name, "expected")
    out = conv2d(x, get(name, "weight"), get(name, "bias"), **conv_params(name), method=method)
    assert out.dtype == np.float32
    assert out.shape == expected.shape
    atol = 1e-6 * float(get(name, "magnitude"))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", names("conv2d"))
def test_reference_agrees_with_torch(name: str) -> None:
    """The oracle of ``test_ops_conv.py`` against torch: keeps ``reference.py`` honest."""
    expected = get(name, "expected")
    out = conv2d_reference(
        get(name, "input"), get(name, "weight"), get(name, "bias"), **conv_params(name)
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6 * float(get(name, "magnitude")))


@pytest.mark.parametrize("name", names("batch_norm"))
def test_batch_norm_golden(name: str) -> None:
    x, expected = get(name, "input"), get(name, "expected")
    rm, rv = get(name, "running_mean"), get(name, "running_var")
    rm_before = None if rm is None else rm.copy()
    rv_before = None if rv is None else rv.copy()
    out = batch_norm(x, rm, rv, get(name, "weight"), get(name, "bias"), **CASES[name]["params"])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())

    mean_after, var_after = get(name, "running_mean_after"), get(name, "running_var_after")
    if mean_after is None:  # eval mode, or no running stats: nothing may change
        if rm is not None:
            np.testing.assert_array_equal(rm, rm_before)
            np.testing.assert_array_equal(rv, rv_before)
        return
    assert rm.dtype == np.float32 and rv.dtype == np.float32
    np.testing.assert_allclose(rm, mean_after, rtol=1e-5, atol=1e-6 * np.abs(x).max())
    np.testing.assert_allclose(rv, var_after, rtol=1e-5)


def test_batch_norm_without_running_stats_in_eval_mode_uses_batch_stats() -> None:
    """cbr: ``training=False`` with no running stats normalises by the batch (torch's
    ``nn.BatchNorm2d(track_running_stats=False)``); ``F.batch_norm`` would refuse."""
    name = "bn_train_no_running_stats"
    out = batch_norm(get(name, "input"), None, None, training=False)
    expected = get(name, "expected")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("name", names("relu", "leaky_relu"))
def test_activation_golden(name: str) -> None:
    x, expected = get(name, "input"), get(name, "expected")
    function = relu if CASES[name]["op"] == "relu" else leaky_relu
    out = function(x, **CASES[name]["params"])
    assert out.dtype == np.float32
    assert np.isnan(expected).any()  # the fixture does exercise NaN propagation
    np.testing.assert_array_equal(out, expected)


def test_conv_bn_relu_block_golden() -> None:
    name = "block_conv_bn_relu"
    params = CASES[name]["params"]
    rm, rv = get(name, "running_mean"), get(name, "running_var")
    y = conv2d(get(name, "input"), get(name, "weight"), padding=params["padding"])
    y = relu(batch_norm(y, rm, rv, training=params["training"], momentum=params["momentum"]))
    expected = get(name, "expected")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(rm, get(name, "running_mean_after"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, get(name, "running_var_after"), rtol=1e-5)


def test_conv_bn_relu_block_golden_through_the_pipeline() -> None:
    """The path `cbr apply` runs (pipeline.run_layers: BN mode batch) gives torch's numbers."""
    from cbr_cli.run.pipeline import BuiltLayer, run_layers
    from cbr_cli.spec.pipeline_types import BNSpec, ConvSpec, LayerSpec

    name = "block_conv_bn_relu"
    params = CASES[name]["params"]
    assert params["training"]  # train mode: normalised with the batch's statistics
    weight = get(name, "weight")
    conv = ConvSpec(
        out_channels=weight.shape[0],
        kernel_size=weight.shape[2:],
        padding=params["padding"]
        if isinstance(params["padding"], str)
        else (params["padding"],) * 2,
        bias=False,
    )
    layer = LayerSpec("block", conv, BNSpec(mode="batch"), "relu")
    built = BuiltLayer(layer, weight.shape[1] * conv.groups, weight, None)
    stages = run_layers([built], get(name, "input"))
    assert [s.stage for s in stages] == ["conv", "bn", "act"]
    expected = get(name, "expected")
    np.testing.assert_allclose(
        stages[-1].data, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max()
    )


def _fused_params(name: str) -> dict:
    params = conv_params(name)
    return {k: params[k] for k in ("stride", "padding", "dilation", "groups", "padding_mode")}


@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
@pytest.mark.parametrize("name", names("conv2d_bn_act"))
def test_conv2d_bn_act_golden(name: str, method: str) -> None:
    """The fused op's three stages and running statistics against torch's three calls."""
    params = CASES[name]["params"]
    rm_before, rv_before = get(name, "running_mean"), get(name, "running_var")
    rm = None if rm_before is None else rm_before.copy()  # updated in place
    rv = None if rv_before is None else rv_before.copy()
    gamma = get(name, "bn_weight")
    conv, bn, act = conv2d_bn_act(
        get(name, "input"),
        get(name, "weight"),
        get(name, "bias"),
        **_fused_params(name),
        running_mean=rm,
        running_var=rv,
        bn_weight=gamma,
        bn_bias=get(name, "bn_bias"),
        training=params["training"],
        momentum=params["momentum"],
        eps=params["eps"],
        activation=params["activation"],
        negative_slope=params["negative_slope"],
        keep_stages=True,
        method=method,
    )
    magnitude = float(get(name, "magnitude"))
    expected_conv = get(name, "expected_conv")
    for out in (conv, bn, act):
        assert out.dtype == np.float32 and out.shape == expected_conv.shape
    np.testing.assert_allclose(conv, expected_conv, rtol=1e-5, atol=1e-6 * magnitude)

    if params["training"] or rm_before is None:
        var = expected_conv.astype(np.float64).var(axis=(0, 2, 3))
    else:
        var = rv_before.astype(np.float64)
    scale = np.abs(1.0 if gamma is None else gamma) / np.sqrt(var + params["eps"])
    for got, key in ((bn, "expected_bn"), (act, "expected")):
        expected = get(name, key)
        atol = 1e-6 * magnitude * float(np.max(scale)) + 1e-6 * float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=atol)
    if params["activation"] == "none":
        assert act is bn

    mean_after, var_after = get(name, "running_mean_after"), get(name, "running_var_after")
    if mean_after is None:
        if rm is not None:
            np.testing.assert_array_equal(rm, rm_before)
            np.testing.assert_array_equal(rv, rv_before)
        return
    np.testing.assert_allclose(
        rm, mean_after, rtol=1e-5, atol=1e-6 * float(np.abs(expected_conv).max())
    )
    np.testing.assert_allclose(rv, var_after, rtol=1e-5)
