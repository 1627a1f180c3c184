"""Every invalid argument of ``cbr_cli.core.ops`` raises ``CbrError`` naming it and its value.

Each case is ``(call, fragments)``: the call must raise exactly :class:`CbrError` (not a
numpy ``ValueError`` or an ``IndexError`` from deep inside), and its message must contain
every fragment -- the parameter's name and the bad value as the user wrote it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cbr_cli.core.ops import batch_norm, conv2d, leaky_relu, relu
from cbr_cli.core.shapes import conv2d_geometry
from cbr_cli.errors import CbrError

X = np.zeros((1, 3, 5, 5), dtype=np.float32)
W = np.ones((4, 3, 3, 3), dtype=np.float32)


def conv(**kwargs) -> Callable[[], object]:
    """A conv2d call on X and W with some arguments replaced."""
    args = {"input": X, "weight": W, **kwargs}
    return lambda: conv2d(**args)


def bn(**kwargs) -> Callable[[], object]:
    """A batch_norm call on (2, 3, 4, 4) data with some arguments replaced."""
    args = {
        "input": np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4),
        "running_mean": np.zeros(3, np.float32),
        "running_var": np.ones(3, np.float32),
        **kwargs,
    }
    return lambda: batch_norm(**args)


def with_nan(shape: tuple[int, ...], value: float = np.nan) -> np.ndarray:
    a = np.ones(shape, dtype=np.float32)
    a.flat[a.size // 2] = value
    return a


def geometry(**kwargs) -> Callable[[], object]:
    args = {"size_in": (5, 5), "kernel_size": 3, **kwargs}
    return lambda: conv2d_geometry(**args)


CONV_CASES = {
    # stride / dilation
    "stride 0": (conv(stride=0), ["stride", "0"]),
    "stride negative in a pair": (conv(stride=(1, -2)), ["stride", "(1, -2)"]),
    "stride float": (conv(stride=1.5), ["stride", "1.5"]),
    "stride string": (conv(stride="2"), ["stride", "'2'"]),
    "stride bool": (conv(stride=True), ["stride", "True"]),
    "stride triple": (conv(stride=(1, 2, 3)), ["stride", "(1, 2, 3)"]),
    "dilation 0": (conv(dilation=0), ["dilation", "0"]),
    "dilation negative in a pair": (conv(dilation=(0, 1)), ["dilation", "(0, 1)"]),
    "dilation float": (conv(dilation=2.0), ["dilation", "2.0"]),
    # padding
    "padding negative": (conv(padding=-1), ["padding", "-1"]),
    "padding float": (conv(padding=0.5), ["padding", "0.5"]),
    "padding single-element tuple": (conv(padding=(1,)), ["padding", "(1,)"]),
    "padding None": (conv(padding=None), ["padding", "None"]),
    "padding bad string": (conv(padding="sam"), ["padding", "'sam'", "valid", "same", "full"]),
    "padding_mode": (
        conv(padding=1, padding_mode="foo"),
        [
            "padding_mode must be one of ['zeros', 'reflect', 'replicate', 'circular'], "
            "but got padding_mode='foo'"
        ],
    ),
    "padding_mode case": (conv(padding_mode="Zeros"), ["padding_mode", "'Zeros'"]),
    "reflect padding == size": (
        conv(padding=5, padding_mode="reflect"),
        ["reflect", "padding", "5", "(5)"],
    ),
    "reflect padding == size, width only": (
        lambda: conv2d(
            np.zeros((1, 1, 9, 2)), np.ones((1, 1, 1, 1)), padding=(1, 2), padding_mode="reflect"
        ),
        ["reflect", "width", "padding=2"],
    ),
    "reflect 'full' too wide": (
        lambda: conv2d(
            np.zeros((1, 1, 3, 3)), np.ones((1, 1, 4, 4)), padding="full", padding_mode="reflect"
        ),
        ["reflect", "padding=3"],
    ),
    "circular padding > size": (
        conv(padding=6, padding_mode="circular"),
        ["circular", "padding", "6", "(5)"],
    ),
    # groups and channels
    "groups 0": (conv(groups=0), ["groups", "0"]),
    "groups float": (conv(groups=1.0), ["groups", "1.0"]),
    "groups bool": (conv(groups=True), ["groups", "True"]),
    "groups does not divide C_in": (
        lambda: conv2d(np.zeros((1, 3, 5, 5)), np.ones((4, 1, 3, 3)), groups=2),
        ["groups", "2", "3"],
    ),
    "groups does not divide C_out": (
        lambda: conv2d(np.zeros((1, 4, 5, 5)), np.ones((3, 2, 3, 3)), groups=2),
        ["groups", "2", "3"],
    ),
    "weight/input channels": (
        lambda: conv2d(np.zeros((1, 3, 5, 5)), np.ones((4, 2, 3, 3))),
        ["weight", "(4, 2, 3, 3)", "3"],
    ),
    "weight/input channels with groups": (
        lambda: conv2d(np.zeros((1, 4, 5, 5)), np.ones((4, 1, 3, 3)), groups=2),
        ["weight", "groups=2", "4"],
    ),
    # shapes
    "empty output": (
        lambda: conv2d(np.zeros((1, 1, 3, 3)), np.ones((1, 1, 5, 5))),
        ["kernel_size", "(5, 5)", "3x3", "empty"],
    ),
    "empty output through dilation": (
        lambda: conv2d(np.zeros((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), dilation=3),
        ["kernel_size", "dilation", "(3, 3)", "7x7", "5x5"],
    ),
    "input 2-D": (lambda: conv2d(np.zeros((5, 5)), W), ["input", "(5, 5)"]),
    "input 5-D": (lambda: conv2d(np.zeros((1, 1, 3, 5, 5)), W), ["input", "(1, 1, 3, 5, 5)"]),
    "weight 3-D": (lambda: conv2d(X, np.ones((4, 3, 3))), ["weight", "(4, 3, 3)"]),
    "bias shape": (conv(bias=np.zeros(3)), ["bias", "(4,)", "(3,)"]),
    "complex input": (lambda: conv2d(X.astype(np.complex64), W), ["input", "complex64"]),
    # non-finite parameters
    "NaN in weight": (conv(weight=with_nan(W.shape)), ["weight", "NaN"]),
    "inf in weight": (conv(weight=with_nan(W.shape, np.inf)), ["weight", "inf"]),
    "NaN in bias": (conv(bias=with_nan((4,))), ["bias", "NaN"]),
    # engine
    "method": (
        conv(method="fast"),
        ["method must be one of ['auto', 'direct', 'fft'], but got method='fast'"],
    ),
}

GEOMETRY_CASES = {
    "kernel_size 0": (geometry(kernel_size=0), ["kernel_size", "0"]),
    "kernel_size float": (geometry(kernel_size=2.5), ["kernel_size", "2.5"]),
    "kernel_size string": (geometry(kernel_size="3"), ["kernel_size", "'3'"]),
    "kernel_size single": (geometry(kernel_size=(3,)), ["kernel_size", "(3,)"]),
    "kernel_size negative in a pair": (geometry(kernel_size=(3, -1)), ["kernel_size", "(3, -1)"]),
    "stride": (geometry(stride=-1), ["stride", "-1"]),
    "padding string": (geometry(padding="half"), ["padding", "'half'"]),
    "padding_mode": (geometry(padding_mode="mirror"), ["padding_mode", "'mirror'"]),
    "empty": (geometry(kernel_size=6), ["kernel_size", "(6, 6)", "5x5"]),
}

BN_CASES = {
    "negative running_var": (
        bn(running_var=np.array([1.0, -0.5, 1.0], np.float32)),
        ["running_var", "-0.5"],
    ),
    "running_mean shape": (
        bn(running_mean=np.zeros(2, np.float32)),
        ["running_mean", "(3,)", "(2,)"],
    ),
    "running_var shape": (bn(running_var=np.ones((3, 1), np.float32)), ["running_var", "(3, 1)"]),
    "weight shape": (bn(weight=np.ones(4)), ["weight", "(3,)", "(4,)"]),
    "bias shape": (bn(bias=np.zeros(())), ["bias", "(3,)", "()"]),
    "NaN in running_mean": (bn(running_mean=with_nan((3,))), ["running_mean", "NaN"]),
    "NaN in weight": (bn(weight=with_nan((3,))), ["weight", "NaN"]),
    "inf in bias": (bn(bias=with_nan((3,), np.inf)), ["bias", "inf"]),
    "only running_mean": (bn(running_var=None), ["running_mean", "running_var"]),
    "eps 0": (bn(eps=0.0), ["eps", "0.0"]),
    "eps negative": (bn(eps=-1e-5), ["eps", "-1e-05"]),
    "eps NaN": (bn(eps=float("nan")), ["eps", "nan"]),
    "eps string": (bn(eps="1e-5"), ["eps", "'1e-5'"]),
    "momentum above 1": (bn(momentum=1.5), ["momentum", "1.5"]),
    "momentum negative": (bn(momentum=-0.1), ["momentum", "-0.1"]),
    "momentum NaN": (bn(momentum=float("nan")), ["momentum", "nan"]),
    "momentum None": (bn(momentum=None), ["momentum", "None"]),
    "one value per channel in training": (
        lambda: batch_norm(np.ones((1, 3, 1, 1)), None, None, training=True),
        ["more than 1 value per channel", "(1, 3, 1, 1)"],
    ),
    "one value per channel in training, with running stats": (
        bn(input=np.ones((1, 3)), training=True),
        ["more than 1 value per channel", "(1, 3)"],
    ),
    "input 1-D": (bn(input=np.ones(3)), ["input", "(3,)"]),
    "running stats are lists in training": (
        bn(running_mean=[0.0, 0.0, 0.0], running_var=[1.0, 1.0, 1.0], training=True),
        ["running_mean", "numpy arrays"],
    ),
    "integer running stats in training": (
        bn(running_mean=np.zeros(3, np.int64), training=True),
        ["running_mean", "float"],
    ),
}

ACTIVATION_CASES = {
    "leaky_relu slope NaN": (lambda: leaky_relu(X, float("nan")), ["negative_slope", "nan"]),
    "leaky_relu slope string": (lambda: leaky_relu(X, "0.1"), ["negative_slope", "'0.1'"]),
    "relu complex": (lambda: relu(np.ones(3, np.complex128)), ["input", "complex128"]),
}

ALL_CASES = {**CONV_CASES, **GEOMETRY_CASES, **BN_CASES, **ACTIVATION_CASES}


@pytest.mark.parametrize(("call", "fragments"), ALL_CASES.values(), ids=ALL_CASES.keys())
def test_raises_cbr_error_naming_parameter_and_value(
    call: Callable[[], object], fragments: list[str]
) -> None:
    with pytest.raises(CbrError) as info:
        call()
    assert type(info.value) is CbrError
    message = str(info.value)
    assert "\n" not in message  # one line, for the CLI's `error: ...`
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_failed_training_step_leaves_running_stats_alone() -> None:
    """A rejected call must not half-update the caller's buffers."""
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(CbrError):
        batch_norm(np.ones((2, 3, 2, 2)), rm, rv, weight=np.ones(4), training=True)
    np.testing.assert_array_equal(rm, np.zeros(3))
    np.testing.assert_array_equal(rv, np.ones(3))


@pytest.mark.parametrize(
    "call",
    [
        lambda: bn(eps=np.float32(1e-5), training=True)(),
        lambda: bn(momentum=np.float32(0.1), training=True)(),
        lambda: leaky_relu(X, np.float32(0.2)),
    ],
    ids=["eps", "momentum", "negative_slope"],
)
def test_numpy_float32_scalars_are_numbers(call: Callable[[], object]) -> None:
    """``F.batch_norm(..., eps=np.float32(1e-5))`` and ``F.leaky_relu(x, np.float32(0.2))``
    work in torch.  Regression: cbr once said ``eps must be a positive number, but got
    eps=np.float32(1e-05)`` (``isinstance(np.float32(1), float)`` is False)."""
    out = call()
    assert isinstance(out, np.ndarray) and np.isfinite(out).all()
