"""``batch_norm``, ``relu`` and ``leaky_relu`` on worked examples and edge cases.

Expected values are computed by hand (the numbers in the comments) or with float64
numpy; float32 results are compared with ``rtol=1e-5`` (a handful of float32
operations, each within 6e-8 relative), float64 ones with ``rtol=1e-12``.
"""

from __future__ import annotations

import numpy as np
import pytest

from cbr_cli.core.ops import batch_norm, channel_mean_var, leaky_relu, relu

# ----------------------------------------------------------- batch_norm: by hand

# One channel holding 1, 2, 3, 4: mean 2.5, biased variance 1.25, so
# y = (x - 2.5) / sqrt(1.25 + 1e-5) = -1.34164, -0.44721, 0.44721, 1.34164.
# Unbiased variance 5/3; from running (0, 1) with momentum 0.1:
# running_mean = 0.9 * 0 + 0.1 * 2.5 = 0.25, running_var = 0.9 * 1 + 0.1 * 5/3 = 1.066667.
WORKED_Y = np.array([-1.34164, -0.44721, 0.44721, 1.34164])


@pytest.mark.parametrize("shape", [(4, 1, 1, 1), (1, 1, 4, 1), (2, 1, 1, 2), (4, 1)])
def test_worked_example_training(shape: tuple[int, ...]) -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32).reshape(shape)
    running_mean = np.zeros(1, dtype=np.float32)
    running_var = np.ones(1, dtype=np.float32)
    y = batch_norm(x, running_mean, running_var, training=True, momentum=0.1)
    assert y.shape == shape and y.dtype == np.float32
    np.testing.assert_allclose(y.ravel(), WORKED_Y, rtol=1e-5)
    np.testing.assert_allclose(running_mean, [0.25], rtol=1e-6)
    np.testing.assert_allclose(running_var, [1.0666667], rtol=1e-6)


def test_worked_example_float64_is_exact_to_float64() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)
    running_mean, running_var = np.zeros(1), np.ones(1)
    y = batch_norm(x, running_mean, running_var, training=True, momentum=0.1, eps=1e-5)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.ravel(), (x.ravel() - 2.5) / np.sqrt(1.25 + 1e-5), rtol=1e-12)
    assert running_mean.dtype == np.float64 and running_var.dtype == np.float64
    np.testing.assert_allclose(running_mean, [0.25], rtol=1e-12)
    np.testing.assert_allclose(running_var, [0.9 + 0.1 * 5 / 3], rtol=1e-12)


def test_affine_weight_and_bias() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32).reshape(4, 1, 1, 1)
    y = batch_norm(x, None, None, weight=np.array([2.0]), bias=np.array([0.5]), training=True)
    np.testing.assert_allclose(y.ravel(), 2.0 * WORKED_Y + 0.5, rtol=1e-5)


def test_momentum_extremes() -> None:
    """momentum 1: the running stats become the batch's; momentum 0: they stay."""
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)
    rm, rv = np.array([7.0]), np.array([9.0])
    batch_norm(x, rm, rv, training=True, momentum=1.0)
    np.testing.assert_allclose([rm[0], rv[0]], [2.5, 5 / 3], rtol=1e-12)
    rm, rv = np.array([7.0]), np.array([9.0])
    batch_norm(x, rm, rv, training=True, momentum=0.0)
    np.testing.assert_array_equal([rm[0], rv[0]], [7.0, 9.0])


def test_per_channel_statistics() -> None:
    """Two channels with different data are normalised separately, over N, H and W."""
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(5.0, 2.0, (3, 4, 4)), rng.normal(-1.0, 0.5, (3, 4, 4))], axis=1)
    rm, rv = np.zeros(2), np.ones(2)
    y = batch_norm(x, rm, rv, training=True, momentum=0.5)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    n = 3 * 4 * 4
    np.testing.assert_allclose(rm, 0.5 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv, 0.5 + 0.5 * var * n / (n - 1), rtol=1e-12)


# ------------------------------------------------------------- batch_norm: modes


def test_eval_mode_uses_running_stats_and_leaves_them() -> None:
    # channel 0: (x - 2) / sqrt(4 + eps) * 3 - 1; channel 1: (x + 1) / sqrt(0.25 + eps) * 1 + 0
    x = np.array([[[[1.0, 4.0]], [[0.0, -2.0]]]])  # (1, 2, 1, 2)
    rm, rv = np.array([2.0, -1.0]), np.array([4.0, 0.25])
    eps = 1e-3
    y = batch_norm(x, rm, rv, np.array([3.0, 1.0]), np.array([-1.0, 0.0]), training=False, eps=eps)
    expected = np.array(
        [
            [(1 - 2) / np.sqrt(4 + eps) * 3 - 1, (4 - 2) / np.sqrt(4 + eps) * 3 - 1],
            [(0 + 1) / np.sqrt(0.25 + eps), (-2 + 1) / np.sqrt(0.25 + eps)],
        ]
    )
    np.testing.assert_allclose(y[0, :, 0, :], expected, rtol=1e-12)
    np.testing.assert_array_equal(rm, [2.0, -1.0])
    np.testing.assert_array_equal(rv, [4.0, 0.25])


@pytest.mark.parametrize("training", [True, False])
def test_no_running_stats_uses_batch_stats(training: bool) -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32).reshape(4, 1, 1, 1)
    y = batch_norm(x, None, None, training=training)
    np.testing.assert_allclose(y.ravel(), WORKED_Y, rtol=1e-5)


def test_input_is_not_modified_and_running_stats_are_updated_in_place() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32).reshape(4, 1, 1, 1)
    x_before = x.copy()
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    rm_id, rv_id = id(rm), id(rv)
    y = batch_norm(x, rm, rv, training=True)
    assert not np.shares_memory(y, x)
    np.testing.assert_array_equal(x, x_before)
    assert id(rm) == rm_id and id(rv) == rv_id and rm[0] != 0.0 and rv[0] != 1.0


def test_constant_channel_gives_zeros_not_nan() -> None:
    """Zero variance: (x - mean) is exactly 0, so the output is 0 (eps avoids 0/0)."""
    x = np.full((2, 1, 3, 3), 7.0, dtype=np.float32)
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    y = batch_norm(x, rm, rv, training=True, momentum=0.1)
    np.testing.assert_array_equal(y, np.zeros_like(x))
    np.testing.assert_allclose([rm[0], rv[0]], [0.7, 0.9], rtol=1e-6)


# ------------------------------------------------------------- batch_norm: dtypes


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int64, np.float32),
        (np.uint8, np.float32),
        (np.float16, np.float32),
    ],
)
def test_batch_norm_dtype(dtype, out_dtype) -> None:
    x = np.array([1, 2, 3, 4], dtype=dtype).reshape(4, 1, 1, 1)
    y = batch_norm(x, None, None, training=True)
    assert y.dtype == out_dtype
    np.testing.assert_allclose(y.ravel(), WORKED_Y, rtol=1e-5)


def test_variance_of_data_with_a_large_mean() -> None:
    """1000 + noise of std 0.1 in float32: E[x^2] - E[x]^2 would cancel catastrophically.

    The reference is numpy's two-pass variance of the same float32 values in float64.
    cbr's two-pass variance is off by (mean - float32(mean))^2 <= (ulp(1000) / 2)^2 ~ 1e-9,
    i.e. ~1e-7 of this variance (0.01).  Torch (CPU) shows the same ~1e-8 error here.
    """
    rng = np.random.default_rng(42)
    x = (1000.0 + 0.1 * rng.standard_normal((8, 2, 16, 16))).astype(np.float32)
    exact = x.astype(np.float64)
    mean = exact.mean(axis=(0, 2, 3))
    var = exact.var(axis=(0, 2, 3))
    n = x.size // 2
    # The data has teeth: a one-pass float32 variance is wrong by far more than 1e-5.
    x32 = x.reshape(8, 2, -1).transpose(1, 0, 2).reshape(2, -1)
    one_pass = (x32 * x32).mean(axis=1, dtype=np.float32) - x32.mean(axis=1, dtype=np.float32) ** 2
    assert np.abs(one_pass - var).max() / var.min() > 1e-3

    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    y = batch_norm(x, rm, rv, training=True, momentum=1.0)
    np.testing.assert_allclose(rm, mean, rtol=1e-6)
    np.testing.assert_allclose(rv, var * n / (n - 1), rtol=1e-5)

    # The output can be no better than subtracting a float32 mean: |error| up to
    # (ulp(1000) / 2) / std ~ 3e-4 (torch's x * a + b form does worse, ~5e-4).
    std = np.sqrt(var + 1e-5)
    expected = (exact - mean[None, :, None, None]) / std[None, :, None, None]
    atol = np.spacing(np.float32(1000.0)) / 2 / std.min() + 1e-5
    np.testing.assert_allclose(y, expected, rtol=0, atol=atol)


# --------------------------------------------------------------- relu, leaky_relu

SPECIALS = np.array([-2.0, -0.5, 0.0, 0.25, 3.0, np.nan, -np.inf, np.inf], dtype=np.float32)


def test_relu_values() -> None:
    out = relu(SPECIALS)
    expected = np.array([0, 0, 0, 0.25, 3, np.nan, 0, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)  # NaN == NaN here; -0.0 == 0.0


@pytest.mark.parametrize(
    ("slope", "expected"),
    [
        (0.01, [-0.02, -0.005, 0, 0.25, 3, np.nan, -np.inf, np.inf]),  # default slope
        (0.2, [-0.4, -0.1, 0, 0.25, 3, np.nan, -np.inf, np.inf]),
        (-0.5, [1.0, 0.25, 0, 0.25, 3, np.nan, np.inf, np.inf]),  # a negative slope flips
        (0.0, [0, 0, 0, 0.25, 3, np.nan, np.nan, np.inf]),  # -inf * 0 is NaN, as in torch
        (1.0, [-2.0, -0.5, 0, 0.25, 3, np.nan, -np.inf, np.inf]),
    ],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_leaky_relu_values(slope: float, expected: list[float]) -> None:
    out = leaky_relu(SPECIALS, slope) if slope != 0.01 else leaky_relu(SPECIALS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.array(expected, np.float32), rtol=1e-7, equal_nan=True)


def test_nan_propagates_in_float64() -> None:
    x = np.array([np.nan, -1.0, 1.0])
    assert np.isnan(relu(x)[0]) and np.isnan(leaky_relu(x)[0])
    assert relu(x).dtype == np.float64 and leaky_relu(x).dtype == np.float64
    np.testing.assert_array_equal(leaky_relu(x, 0.1)[1:], [-0.1, 1.0])


def test_activations_of_integers_are_float32() -> None:
    x = np.array([-3, 0, 5], dtype=np.int32)
    np.testing.assert_array_equal(relu(x), np.array([0, 0, 5], np.float32))
    assert relu(x).dtype == np.float32
    out = leaky_relu(x, 0.5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-1.5, 0, 5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_inplace(dtype) -> None:
    x = np.array([-1.0, 2.0, np.nan], dtype=dtype)
    out = relu(x, inplace=True)
    assert np.shares_memory(out, x) and out.dtype == dtype
    np.testing.assert_array_equal(x, np.array([0.0, 2.0, np.nan], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_inplace(dtype) -> None:
    x = np.array([-1.0, 2.0, np.nan, -4.0], dtype=dtype)
    out = leaky_relu(x, 0.25, inplace=True)
    assert np.shares_memory(out, x) and out.dtype == dtype
    np.testing.assert_array_equal(x, np.array([-0.25, 2.0, np.nan, -1.0], dtype))


def test_not_inplace_leaves_input_alone() -> None:
    x = np.array([-1.0, 2.0, np.nan], dtype=np.float32)
    before = x.copy()
    for out in (relu(x), leaky_relu(x), leaky_relu(x, 0.3)):
        assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(x, before)


def test_variance_over_many_small_planes_with_a_large_mean() -> None:
    """Each (sample, channel) plane is a block of 91 values (not a power of two): every
    block's mean must be exact for the merged variance to be, whatever the rounding of
    its float32 rough mean.  (Adding the correction to the unrounded mean was off by
    1.1e-4 here.)  The deviations are exact in float32, so 1e-9 leaves room only for
    the float64 merge."""
    rng = np.random.default_rng(0)
    x = (1000 + 0.01 * rng.standard_normal((8, 3, 7, 13))).astype(np.float32)
    exact = x.astype(np.float64)
    mean, var = channel_mean_var(x)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2, 3)), rtol=1e-9)


@pytest.mark.parametrize("activation", [relu, leaky_relu])
def test_activations_of_empty_arrays(activation) -> None:
    x = np.zeros((0, 3, 4), np.float32)
    out = activation(x)
    assert out.shape == (0, 3, 4) and out.dtype == np.float32


@pytest.mark.parametrize("slope", [0.01, 1.0, 0.0, -0.5, 2.0])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_leaky_relu_matches_its_definition(slope: float, inplace: bool, layout: str) -> None:
    """Both code paths (max(x, slope*x) for 0 < slope <= 1, a mask otherwise), on
    contiguous arrays (blockwise, several blocks) and strided views, against
    ``where(x > 0, x, slope * x)`` computed independently."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 3, 300, 200)).astype(np.float32)
    x = base if layout == "contiguous" else base[:, :, ::2, ::-1]
    expected = np.where(x > 0, x, np.float32(slope) * x)
    before = x.copy()
    out = leaky_relu(x, slope, inplace=inplace)
    np.testing.assert_array_equal(out, expected)
    assert np.shares_memory(out, x) is inplace
    if not inplace:
        np.testing.assert_array_equal(x, before)
