"""``conv2d_bn_act`` (the fused Conv -> BN -> activation) against the unfused ops.

The reference is ``conv2d`` -> ``batch_norm`` -> ``relu`` / ``leaky_relu`` (each tested
against torch and a plain-loop oracle elsewhere; ``test_golden.py`` checks the fused op
against torch's three calls too).  Tolerances:

* the conv stage, and everything of eval mode (running statistics given): **equal**.  The
  fused op runs the same engine, adds the bias and normalises with the same float
  operations in the same order (``(x - mean) * scale + beta``, then the activation);
  only where they happen differs (in the conv's output pass instead of separate passes).
* batch statistics (training, or no running statistics): the mean and variance come
  from other blocks (each chunk of conv output instead of each (sample, channel) plane),
  both two-pass per block and merged in float64; they differ by the rounding of the
  block sums (measured below 1e-7 relative on the variance, 3e-8 standard deviations on
  the mean).  Normalised, that moves an output by up to ``eps * |mean| * scale`` (the
  mean rounded to the dtype one way or the other) plus ~1e-7 ``|gamma|``: ``atol =
  1e-6 * (max|conv| * max(scale) + max|gamma|)`` and ``rtol = 1e-6`` for float32,
  ``1e-12`` for float64 (whose block sums are float64 too).  Updated running statistics:
  the same ``rtol``, ``atol`` relative to ``max|conv|``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cbr_cli import ops as facade
from cbr_cli.core import conv_direct, fused
from cbr_cli.core.ops import batch_norm, conv2d, conv2d_bn_act, leaky_relu, relu
from cbr_cli.errors import CbrError
from tests.core.test_ops_conv import ConvCase, conv_cases, make_arrays

FACTOR = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


@dataclass(frozen=True)
class FusedCase:
    """A convolution (:class:`ConvCase`) and the BatchNorm and activation after it."""

    conv: ConvCase
    training: bool = True
    running: bool = True
    affine: bool = True
    activation: str = "relu"
    negative_slope: float = 0.01
    momentum: float = 0.1
    eps: float = 1e-5
    keep_stages: bool = True
    shift: float = 0.0


def bn_arrays(case: FusedCase, channels: int, dtype: np.dtype):
    """running_mean, running_var, bn_weight, bn_bias of the case (None where unused)."""
    rng = np.random.default_rng(case.conv.seed + 1)
    rm = rv = gamma = beta = None
    if case.running:
        rm = rng.standard_normal(channels).astype(dtype)
        rv = rng.uniform(0.5, 2.0, channels).astype(dtype)
    if case.affine:
        gamma = rng.uniform(-1.5, 1.5, channels).astype(dtype)
        beta = rng.standard_normal(channels).astype(dtype)
    return rm, rv, gamma, beta


def conv_kwargs(c: ConvCase) -> dict:
    return {
        "stride": c.stride,
        "padding": c.padding,
        "dilation": c.dilation,
        "groups": c.groups,
        "padding_mode": c.padding_mode,
    }


def unfused(case: FusedCase, x, w, b, rm, rv, gamma, beta):
    """(conv, bn, act) by the separate ops; a 3-D input is a batch of one for BN."""
    y = conv2d(x, w, b, **conv_kwargs(case.conv), method=case.conv.method)
    y4 = y[None] if y.ndim == 3 else y
    z = batch_norm(y4, rm, rv, gamma, beta, case.training, case.momentum, case.eps)
    z = z[0] if y.ndim == 3 else z
    if case.activation == "relu":
        a = relu(z)
    elif case.activation == "leaky_relu":
        a = leaky_relu(z, case.negative_slope)
    else:
        a = z
    return y, z, a


def run_fused(case: FusedCase, x, w, b, rm, rv, gamma, beta):
    return conv2d_bn_act(
        x,
        w,
        b,
        **conv_kwargs(case.conv),
        running_mean=rm,
        running_var=rv,
        bn_weight=gamma,
        bn_bias=beta,
        training=case.training,
        momentum=case.momentum,
        eps=case.eps,
        activation=case.activation,
        negative_slope=case.negative_slope,
        keep_stages=case.keep_stages,
        method=case.conv.method,
    )


def check_fused(case: FusedCase) -> None:
    x, w, b = make_arrays(case.conv)
    x = x + x.dtype.type(case.shift)
    dtype = x.dtype
    arrays = bn_arrays(case, w.shape[0], dtype)
    mine = tuple(None if a is None else a.copy() for a in arrays)
    try:
        expected = unfused(case, x, w, b, *arrays)
    except CbrError as exc:  # the fused op must refuse it with the same message
        with pytest.raises(CbrError) as raised:
            run_fused(case, x, w, b, *mine)
        assert raised.value.message == exc.message
        return
    got = run_fused(case, x, w, b, *mine)
    if not case.keep_stages:
        got = (None, None, got)
    conv, bn, act = got
    for out, ref in zip(got, expected, strict=True):
        if out is not None:
            assert out.shape == ref.shape and out.dtype == ref.dtype
    if conv is not None:
        np.testing.assert_array_equal(conv, expected[0])
    batch_statistics = case.training or not case.running
    if not batch_statistics:
        for out, ref in zip(got[1:], expected[1:], strict=True):
            if out is not None:
                np.testing.assert_array_equal(out, ref)
    else:
        factor = FACTOR[dtype]
        y = expected[0].astype(np.float64)
        var = y.reshape(-1, *y.shape[-3:]).var(axis=(0, 2, 3))
        gamma = np.ones(w.shape[0]) if arrays[2] is None else np.abs(arrays[2])
        scale = float(np.max(gamma / np.sqrt(var + case.eps)))
        atol = factor * (float(np.abs(y).max()) * scale + float(gamma.max()))
        for out, ref in zip(got[1:], expected[1:], strict=True):
            if out is not None:
                np.testing.assert_allclose(out, ref, rtol=factor, atol=atol)
    if case.keep_stages and case.activation == "none":
        assert act is bn
    if arrays[0] is not None:  # running statistics: updated alike (or left alone alike)
        atol = FACTOR[dtype] * float(np.abs(expected[0]).max())
        np.testing.assert_allclose(mine[0], arrays[0], rtol=FACTOR[dtype], atol=atol)
        np.testing.assert_allclose(mine[1], arrays[1], rtol=FACTOR[dtype], atol=atol)


@st.composite
def fused_cases(draw) -> FusedCase:
    return FusedCase(
        conv=draw(conv_cases()),
        training=draw(st.booleans()),
        running=draw(st.booleans()),
        affine=draw(st.booleans()),
        activation=draw(st.sampled_from(fused.ACTIVATIONS)),
        negative_slope=draw(st.sampled_from([0.01, 0.2, 1.0, 0.0, -0.5, 2.0])),
        momentum=draw(st.sampled_from([0.1, 0.0, 1.0, 0.37])),
        eps=draw(st.sampled_from([1e-5, 1e-3])),
        keep_stages=draw(st.booleans()),
        shift=draw(st.sampled_from([0.0, 3.0, -100.0])),
    )


PINNED = [
    # depthwise, reflect, training with running stats, leaky with a negative slope
    FusedCase(
        ConvCase(2, 3, 1, 1, (3, 3), (6, 5), padding=1, padding_mode="reflect"),
        activation="leaky_relu",
        negative_slope=-0.5,
    ),
    # grouped, strided, circular, eval, float64, activation none
    FusedCase(
        ConvCase(
            1,
            2,
            2,
            3,
            (3, 2),
            (7, 6),
            stride=2,
            padding=1,
            padding_mode="circular",
            dtype="float64",
        ),
        training=False,
        activation="none",
    ),
    # FFT engine, eval without running stats (batch statistics), only the activation back
    FusedCase(
        ConvCase(2, 1, 2, 2, (4, 4), (7, 7), padding="same", method="fft"),
        training=False,
        running=False,
        keep_stages=False,
    ),
    # unbatched input, replicate, large offset (mean >> std)
    FusedCase(
        ConvCase(None, 1, 3, 2, (3, 3), (6, 7), padding=1, padding_mode="replicate"),
        shift=-100.0,
    ),
    # one value per channel in training: refused with batch_norm's message
    FusedCase(ConvCase(1, 1, 1, 2, (3, 3), (3, 3)), training=True),
]


def with_pinned(test):
    for case in PINNED:
        test = example(case=case)(test)
    return test


@settings(max_examples=300, deadline=None)
@with_pinned
@given(case=fused_cases())
def test_fused_matches_unfused(case: FusedCase) -> None:
    check_fused(case)


# ------------------------------------------------- chunk, block and pass layouts

LAYOUT_CASE = FusedCase(ConvCase(2, 1, 4, 6, (3, 3), (23, 21), padding=1, seed=7), shift=2.0)


@pytest.mark.parametrize("in_conv", [True, False], ids=["in-conv", "after-conv"])
@pytest.mark.parametrize("pass_values", [1 << 18, 64, 20, 3], ids=lambda v: f"block{v}")
@pytest.mark.parametrize(
    "conv",
    [
        LAYOUT_CASE.conv,
        replace(LAYOUT_CASE.conv, groups=6, in_per_group=1, out_per_group=1),  # depthwise
        replace(LAYOUT_CASE.conv, in_per_group=12, kernel=(3, 3), size=(16, 9)),  # row taps
        replace(LAYOUT_CASE.conv, stride=2, dtype="float64"),
    ],
    ids=["im2col", "depthwise", "row-taps", "strided-f64"],
)
@pytest.mark.parametrize("training", [True, False], ids=["batch-stats", "running-stats"])
def test_every_chunk_layout(monkeypatch, conv, pass_values, in_conv, training) -> None:
    """Chunks of a few rows or part-rows, cut into blocks of whole channels, of part
    channels or of a few values, in the conv's pass or after it: the same numbers."""
    monkeypatch.setattr(conv_direct, "IM2COL_CHUNK_BYTES", 3000)
    monkeypatch.setattr(conv_direct, "DEPTHWISE_CHUNK_BYTES", 500)
    monkeypatch.setattr(conv_direct, "ROW_TAP_CHUNK_BYTES", 12_000)
    monkeypatch.setattr(conv_direct, "ROW_TAP_MIN_COLUMNS", 16)
    monkeypatch.setattr(fused, "PASS_VALUES", pass_values)
    monkeypatch.setattr(fused, "MIN_FUSED_CHUNK_VALUES", 0 if in_conv else 1 << 40)
    for keep_stages in (True, False):
        for activation in ("relu", "none"):
            check_fused(
                replace(
                    LAYOUT_CASE,
                    conv=conv,
                    training=training,
                    keep_stages=keep_stages,
                    activation=activation,
                )
            )


def test_row_tap_layout_is_exercised(monkeypatch) -> None:
    """The 'row-taps' case above really takes the row-tap path with several chunks."""
    monkeypatch.setattr(conv_direct, "ROW_TAP_CHUNK_BYTES", 12_000)
    monkeypatch.setattr(conv_direct, "ROW_TAP_MIN_COLUMNS", 16)
    from cbr_cli.core.shapes import conv2d_geometry

    geo = conv2d_geometry((16, 9), (3, 3), 1, 1)
    chunk = conv_direct.row_tap_chunk(2, 1, 12, 6, (3, 3), geo)
    assert chunk is not None and chunk[0] < 16


# ----------------------------------------------------------- the returned arrays


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_keep_stages_false_is_the_last_stage(training: bool, activation: str) -> None:
    x, w, b = make_arrays(ConvCase(2, 1, 3, 4, (3, 3), (9, 8), padding=1, seed=3))
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    kwargs = dict(training=training, activation=activation, negative_slope=0.1)
    conv, bn, act = conv2d_bn_act(
        x, w, b, 1, 1, running_mean=rm.copy(), running_var=rv.copy(), keep_stages=True, **kwargs
    )
    only = conv2d_bn_act(x, w, b, 1, 1, running_mean=rm.copy(), running_var=rv.copy(), **kwargs)
    np.testing.assert_array_equal(only, act)
    assert len({id(conv), id(bn), id(act)}) == 3  # three arrays, none a view of another
    assert not np.shares_memory(conv, bn) and not np.shares_memory(bn, act)
    assert (act >= 0).all() if activation == "relu" else (act < 0).any()


def test_eval_never_folds_into_a_kept_conv_stage() -> None:
    """With the stages kept, eval mode writes BN and the activation beside the conv."""
    x, w, b = make_arrays(ConvCase(1, 1, 3, 4, (3, 3), (40, 40), padding=1, seed=5))
    rm = np.array([0.5, -0.5, 1.0, 0.0], np.float32)
    rv = np.array([2.0, 0.5, 1.0, 4.0], np.float32)
    conv, bn, act = conv2d_bn_act(
        x, w, b, padding=1, running_mean=rm, running_var=rv, training=False, keep_stages=True
    )
    np.testing.assert_array_equal(conv, conv2d(x, w, b, padding=1))
    np.testing.assert_array_equal(bn, batch_norm(conv, rm, rv))
    np.testing.assert_array_equal(act, relu(bn))


def test_running_stats_updated_in_place_only_in_training() -> None:
    x, w, _ = make_arrays(ConvCase(2, 1, 2, 3, (3, 3), (8, 8), padding=1, seed=9))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    conv2d_bn_act(x, w, padding=1, running_mean=rm, running_var=rv, momentum=0.5)
    y = conv2d(x, w, padding=1).astype(np.float64)
    n = y.size // 3
    np.testing.assert_allclose(rm, 0.5 * y.mean(axis=(0, 2, 3)), rtol=1e-6, atol=1e-7)
    unbiased = y.var(axis=(0, 2, 3)) * n / (n - 1)
    np.testing.assert_allclose(rv, 0.5 + 0.5 * unbiased, rtol=1e-6)
    before = rm.copy(), rv.copy()
    conv2d_bn_act(x, w, padding=1, running_mean=rm, running_var=rv, training=False)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])


def test_facade_reexports_the_fused_op() -> None:
    assert facade.conv2d_bn_act is conv2d_bn_act
    assert "conv2d_bn_act" in facade.__all__


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("kind", ["large-mean", "relu-like", "sorted", "lognormal", "spiky"])
def test_batch_statistics_accuracy(kind: str) -> None:
    """Moments taken chunk by chunk in the conv pass are as careful as batch_norm's:
    through an identity 1x1 conv (exact), float32, 6 channels of 256 x 200 in 2 images
    (several chunks and blocks per channel), against float64."""
    rng = np.random.default_rng(11)
    shape = (2, 6, 256, 200)
    x = {
        "large-mean": lambda: 1000.0 + 0.01 * rng.standard_normal(shape),
        "relu-like": lambda: np.maximum(rng.standard_normal(shape), 0.0),
        "sorted": lambda: np.sort(rng.standard_normal(shape), axis=None).reshape(shape),
        "lognormal": lambda: rng.lognormal(0.0, 1.5, shape),
        "spiky": lambda: 0.01 * rng.standard_normal(shape) + 1000.0 * (rng.random(shape) < 1e-4),
    }[kind]().astype(np.float32)
    eye = np.eye(6, dtype=np.float32).reshape(6, 6, 1, 1)
    from cbr_cli.core.ops import conv_bn_act_stages

    stages = conv_bn_act_stages(x, eye, keep_stages=True)
    np.testing.assert_array_equal(stages.conv, x)
    exact = x.astype(np.float64)
    mean, var = exact.mean(axis=(0, 2, 3)), exact.var(axis=(0, 2, 3))
    std = np.sqrt(var)
    # The limits batch_norm's own scheme is documented to meet (core.moments).
    assert np.max(np.abs(stages.mean - mean) / std) < 3e-8
    assert np.max(np.abs(stages.var - var) / var) < 4e-7
    # A one-pass E[x^2] - E[x]^2 in float32 fails the large-mean case completely.
    if kind == "large-mean":
        one_pass = (x * x).mean(axis=(0, 2, 3), dtype=np.float32) - x.mean(axis=(0, 2, 3)) ** 2
        assert np.max(np.abs(one_pass - var) / var) > 1e-2


def test_constant_channel_is_beta() -> None:
    """A constant conv output normalises to exactly beta (variance 0, scale 1/sqrt(eps))."""
    x = np.full((2, 1, 9, 9), 3.25, np.float32)
    w = np.ones((2, 1, 1, 1), np.float32)
    beta = np.array([0.5, -0.25], np.float32)
    out = conv2d_bn_act(x, w, bn_bias=beta, activation="none")
    np.testing.assert_array_equal(out, np.broadcast_to(beta.reshape(1, 2, 1, 1), out.shape))


# ---------------------------------------------------------------- validation


def _message(call) -> str:
    with pytest.raises(CbrError) as raised:
        call()
    return raised.value.message


X = np.ones((1, 2, 5, 5), np.float32)
W = np.ones((3, 2, 3, 3), np.float32)
C3 = np.ones(3, np.float32)


@pytest.mark.parametrize(
    ("fused_kwargs", "reference"),
    [
        ({"groups": 0}, lambda: conv2d(X, W, groups=0)),
        ({"bias": np.ones(2)}, lambda: conv2d(X, W, np.ones(2))),
        ({"padding_mode": "foo"}, lambda: conv2d(X, W, padding_mode="foo")),
        ({"input": np.ones((2, 5, 5, 1, 1))}, lambda: conv2d(np.ones((2, 5, 5, 1, 1)), W)),
        ({"weight": np.ones((3, 3, 3, 3))}, lambda: conv2d(X, np.ones((3, 3, 3, 3)))),
        ({"method": "gpu"}, lambda: conv2d(X, W, method="gpu")),
        ({"eps": 0.0}, lambda: batch_norm(conv2d(X, W), None, None, eps=0.0)),
        ({"momentum": 1.5}, lambda: batch_norm(conv2d(X, W), None, None, momentum=1.5)),
        (
            {"running_mean": C3},
            lambda: batch_norm(conv2d(X, W), C3, None),
        ),
        (
            {"running_mean": np.ones(2), "running_var": np.ones(2)},
            lambda: batch_norm(conv2d(X, W), np.ones(2), np.ones(2)),
        ),
        (
            {"running_mean": C3, "running_var": -C3},
            lambda: batch_norm(conv2d(X, W), C3, -C3),
        ),
        ({"bn_weight": np.ones(4)}, lambda: batch_norm(conv2d(X, W), None, None, np.ones(4))),
        (
            {"bn_bias": np.array([1.0, np.nan, 0.0])},
            lambda: batch_norm(conv2d(X, W), None, None, None, np.array([1.0, np.nan, 0.0])),
        ),
        (
            {"activation": "leaky_relu", "negative_slope": float("inf")},
            lambda: leaky_relu(X, float("inf")),
        ),
        (
            {"running_mean": C3, "running_var": np.ones(3, np.int64)},
            lambda: batch_norm(conv2d(X, W), C3.copy(), np.ones(3, np.int64), training=True),
        ),
    ],
)
def test_errors_are_those_of_the_unfused_ops(fused_kwargs: dict, reference) -> None:
    kwargs = {"input": X, "weight": W, **fused_kwargs}
    assert _message(lambda: conv2d_bn_act(**kwargs)) == _message(reference)


def test_bad_activation_names_the_choices() -> None:
    message = _message(lambda: conv2d_bn_act(X, W, activation="gelu"))
    assert message == (
        "activation must be one of ['relu', 'leaky_relu', 'none'], but got activation='gelu'"
    )


def test_read_only_running_stats_are_refused_before_anything_runs() -> None:
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rv.flags.writeable = False
    message = _message(lambda: conv2d_bn_act(X, W, running_mean=rm, running_var=rv))
    assert message == "running_var must be a writeable float array to be updated in place"
    np.testing.assert_array_equal(rm, 0.0)


# ------------------------------------------------------------------ the pipeline


def _layer(mode: str, activation: str = "leaky_relu", name: str = "block"):
    from cbr_cli.spec.pipeline_types import BNSpec, ConvSpec, LayerSpec

    conv = ConvSpec(out_channels=4, kernel_size=(3, 3), padding=(1, 1), padding_mode="reflect")
    return LayerSpec(name, conv, BNSpec(mode=mode), activation, negative_slope=0.2)


def _built(layer, rng):
    from cbr_cli.run.pipeline import BuiltLayer

    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    built = BuiltLayer(layer, 3, weight, rng.standard_normal(4).astype(np.float32))
    built.bn_weight = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    built.bn_bias = rng.standard_normal(4).astype(np.float32)
    return built


def test_pipeline_running_mode_equals_the_unfused_ops() -> None:
    from cbr_cli.run.pipeline import run_layers

    rng = np.random.default_rng(21)
    built = _built(_layer("running"), rng)
    built.running_mean = rng.standard_normal(4).astype(np.float32)
    built.running_var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    x = rng.random((2, 3, 12, 10), dtype=np.float32)
    conv, bn, act = run_layers([built], x)
    y = conv2d(x, built.weight, built.bias, padding=1, padding_mode="reflect")
    z = batch_norm(y, built.running_mean, built.running_var, built.bn_weight, built.bn_bias)
    assert [s.stage for s in (conv, bn, act)] == ["conv", "bn", "act"]
    np.testing.assert_array_equal(conv.data, y)
    np.testing.assert_array_equal(bn.data, z)
    np.testing.assert_array_equal(act.data, leaky_relu(z, 0.2))
    assert bn.bn_mean.dtype == np.float64
    np.testing.assert_array_equal(bn.bn_mean, built.running_mean)
    np.testing.assert_array_equal(bn.bn_var, built.running_var)


def test_pipeline_batch_mode_with_dataset_statistics_reports_them_as_given() -> None:
    """``batch_stats`` (from ``cbr calibrate``, float64) normalise; the BN stage reports
    them unrounded, as before the fusion."""
    from cbr_cli.run.pipeline import run_layers

    rng = np.random.default_rng(22)
    built = _built(_layer("batch", activation="none"), rng)
    mean = rng.standard_normal(4) / 3.0
    var = rng.uniform(0.5, 2.0, 4) / 3.0
    x = rng.random((1, 3, 9, 9), dtype=np.float32)
    stages = run_layers([built], x, batch_stats={"block": (mean, var)})
    assert [s.stage for s in stages] == ["conv", "bn"]
    y = conv2d(x, built.weight, built.bias, padding=1, padding_mode="reflect")
    np.testing.assert_array_equal(
        stages[1].data, batch_norm(y, mean, var, built.bn_weight, built.bn_bias)
    )
    np.testing.assert_array_equal(stages[1].bn_mean, mean)
    np.testing.assert_array_equal(stages[1].bn_var, var)


def test_pipeline_batch_mode_statistics_are_the_batchs() -> None:
    from cbr_cli.run.pipeline import run_layers

    rng = np.random.default_rng(23)
    built = _built(_layer("batch", activation="relu"), rng)
    x = rng.random((3, 3, 11, 8), dtype=np.float32)
    conv, bn, act = run_layers([built], x)
    exact = conv.data.astype(np.float64)
    np.testing.assert_allclose(bn.bn_mean, exact.mean(axis=(0, 2, 3)), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(bn.bn_var, exact.var(axis=(0, 2, 3)), rtol=1e-6)
    expected = batch_norm(conv.data, None, None, built.bn_weight, built.bn_bias, training=True)
    np.testing.assert_allclose(bn.data, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(act.data, relu(bn.data))


def test_pipeline_batch_mode_with_one_value_per_channel_says_so() -> None:
    from cbr_cli.run.pipeline import run_layers

    rng = np.random.default_rng(24)
    layer = _layer("batch")
    layer = replace(layer, conv=replace(layer.conv, padding=(0, 0)))
    built = _built(layer, rng)
    with pytest.raises(CbrError) as raised:
        run_layers([built], rng.random((1, 3, 3, 3), dtype=np.float32))
    assert raised.value.message == (
        "layer 'block': bn mode 'batch': batch_norm in training mode needs more than 1 "
        "value per channel, but got input shape (1, 4, 1, 1) (output 1x1 for 1 image(s))"
    )
