"""``cbr_cli.core.ops.conv2d`` against the plain-loop reference in ``tests/reference.py``.

Tolerances.  Let ``M[n, o, i, j] = |bias[o]| + sum |w| * |x|`` over the taps that output
reads (the reference applied to ``|x|``, ``|w|``, ``|b|``).  Rounding errors of a sum of
products scale with ``M``, not with the (possibly cancelling) output itself:

* ``method="direct"`` (im2col + GEMM, or tap-by-tap for depthwise) computes each output
  as a dot product of at most ``K = C_in/groups * kH * kW <= 48`` terms here, so
  ``|error| <= K * eps * M`` in the worst case -- 48 * 6e-8 ~ 3e-6 for float32, 5e-15
  for float64.  We allow ``1e-5 * M`` (float32) and ``1e-10 * M`` (float64) per element.
* ``method="fft"`` rounds in the spectrum, where every input sample touches every
  frequency; its error is bounded relative to the *global* magnitude
  ``G = max|x| * max_o sum|w[o]| + max|b|`` (what any output would be if every tap read
  the largest sample), not per element: an output whose taps all read zero padding is
  exactly 0 in the reference but ~1e-9 * G by FFT.  The same factors are applied to
  ``G``.  (An FFT of length L adds about ``eps * log2(L)``; at the sizes drawn here that
  is far below the factors.)  ``method="auto"`` may pick either engine, so it gets the
  FFT bound.

The reference itself was cross-checked against ``torch.nn.Conv2d`` in float64 (rtol
1e-10) when it was written, and ``tests/test_golden.py`` checks it against torch's
numbers again on every run.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from cbr_cli.core import conv_direct, conv_fft, threads
from cbr_cli.core.ops import conv2d
from cbr_cli.core.shapes import conv2d_geometry
from cbr_cli.errors import CbrError
from tests.reference import (
    PADDING_MODES,
    axis_padding,
    conv2d_reference,
    output_size,
    padding_allowed,
    to_pair,
)

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


@dataclass(frozen=True)
class ConvCase:
    """One convolution to run both ways.  ``batch=None`` means unbatched (C, H, W) input."""

    batch: int | None
    groups: int
    in_per_group: int
    out_per_group: int
    kernel: tuple[int, int]
    size: tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] | str = 0
    dilation: int | tuple[int, int] = 1
    padding_mode: str = "zeros"
    bias: bool = True
    dtype: str = "float32"
    method: str = "direct"
    contiguous: bool = True
    magnitude_exp: int = 0
    seed: int = 0

    def expected_out_hw(self) -> tuple[int, int] | None:
        """Output (H, W) by the reference's rules, or None if PyTorch/cbr must reject it."""
        return reference_out_hw(
            self.size, self.kernel, self.stride, self.padding, self.dilation, self.padding_mode
        )


def reference_out_hw(size, kernel, stride, padding, dilation, mode) -> tuple[int, int] | None:
    out = []
    for axis in (0, 1):
        k, s, d = to_pair(kernel)[axis], to_pair(stride)[axis], to_pair(dilation)[axis]
        before, after = axis_padding(padding, axis, size[axis], k, s, d)
        if not padding_allowed(mode, size[axis], before, after):
            return None
        out.append(output_size(size[axis], k, s, d, before, after))
    return (out[0], out[1]) if min(out) > 0 else None


def make_arrays(case: ConvCase):
    """Input, weight and bias of the case, in the case's dtype (bias None if not used)."""
    rng = np.random.default_rng(case.seed)
    dtype = np.dtype(case.dtype)
    c_in = case.groups * case.in_per_group
    c_out = case.groups * case.out_per_group
    shape = (c_in, *case.size) if case.batch is None else (case.batch, c_in, *case.size)
    scale = 10.0**case.magnitude_exp
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    w = rng.standard_normal((c_out, case.in_per_group, *case.kernel)).astype(dtype)
    b = (scale * rng.standard_normal(c_out)).astype(dtype) if case.bias else None
    if not case.contiguous:
        x, w = np.asfortranarray(x), np.asfortranarray(w)
    return x, w, b


def run_cbr(case: ConvCase, x, w, b) -> np.ndarray:
    return conv2d(
        x,
        w,
        b,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        padding_mode=case.padding_mode,
        method=case.method,
    )


def run_reference(case: ConvCase, x, w, b) -> np.ndarray:
    return conv2d_reference(
        x, w, b, case.stride, case.padding, case.dilation, case.groups, case.padding_mode
    )


def assert_matches_reference(case: ConvCase, got, x, w, b) -> None:
    expected = run_reference(case, x, w, b)
    magnitude = run_reference(case, np.abs(x), np.abs(w), None if b is None else np.abs(b))
    assert got.shape == expected.shape
    tol = TOLERANCE[got.dtype]
    if case.method == "direct":
        # Zero only where every tap reads zero padding: then the output must be exact.
        bound = tol * magnitude
    else:
        per_output_channel = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
        largest = np.abs(x).max() * per_output_channel.max()
        bound = tol * (largest + (0.0 if b is None else np.abs(b).max()))
    error = np.abs(got.astype(np.float64) - expected)
    bound = np.broadcast_to(bound, error.shape)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert (error <= bound).all(), (
        f"{case}: |got - expected| = {error[worst]:.3g} > {bound[worst]:.3g} at {worst}"
    )


# ------------------------------------------------------------------ strategies

pairs_or_ints = st.one_of(st.integers(1, 2), st.tuples(st.integers(1, 3), st.integers(1, 2)))
paddings = st.one_of(
    st.sampled_from(["valid", "same", "full"]),
    st.integers(0, 2),
    st.tuples(st.integers(0, 3), st.integers(0, 2)),
)


@st.composite
def conv_cases(draw) -> ConvCase:
    groups = draw(st.integers(1, 3))
    # in_per_group == 1 with out_per_group == 1 is depthwise; out_per_group > 1 with
    # in_per_group == 1 is a channel multiplier.
    return ConvCase(
        batch=draw(st.one_of(st.none(), st.integers(1, 2))),
        groups=groups,
        in_per_group=draw(st.integers(1, 3)),
        out_per_group=draw(st.integers(1, 2)),
        kernel=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        size=(draw(st.integers(1, 7)), draw(st.integers(1, 7))),
        stride=draw(pairs_or_ints),
        padding=draw(paddings),
        dilation=draw(pairs_or_ints),
        padding_mode=draw(st.sampled_from(PADDING_MODES)),
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        method=draw(st.sampled_from(["direct", "fft", "auto"])),
        contiguous=draw(st.booleans()),
        magnitude_exp=draw(st.sampled_from([-3, 0, 3])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# ------------------------------------------------------------------ properties

# Named cases worth running on every run, whatever hypothesis draws.
PINNED = [
    # depthwise (groups == C_in == C_out), reflect, 'same' with an even kernel (odd total)
    ConvCase(1, 3, 1, 1, (2, 4), (5, 6), padding="same", padding_mode="reflect"),
    ConvCase(2, 3, 1, 1, (3, 3), (6, 5), padding="same", padding_mode="reflect", method="fft"),
    # channel multiplier (groups == C_in, C_out = 2 * C_in), stride 2
    ConvCase(2, 2, 1, 2, (3, 3), (7, 7), stride=2, padding=1, dtype="float64"),
    # TensorFlow 'same' with stride > 1, even and odd sizes, circular
    ConvCase(None, 1, 2, 3, (3, 2), (7, 6), stride=2, padding="same", padding_mode="circular"),
    ConvCase(1, 1, 2, 2, (4, 4), (5, 7), stride=(3, 2), padding="same", method="fft"),
    # dilation with 'same' and 'full'
    ConvCase(1, 1, 2, 2, (3, 2), (7, 7), padding="same", dilation=(2, 3), padding_mode="replicate"),
    ConvCase(1, 2, 2, 1, (2, 3), (4, 4), padding="full", dilation=2, method="fft"),
    # 'full' reflect at the limit (padding == size - 1)
    ConvCase(1, 1, 1, 1, (3, 3), (3, 3), padding="full", padding_mode="reflect"),
    # circular at its limit (padding == size)
    ConvCase(1, 1, 1, 2, (3, 3), (2, 2), padding=2, padding_mode="circular", dtype="float64"),
    # found by hypothesis: every tap of the only output reads zero padding; FFT is not exact
    ConvCase(
        batch=None,
        groups=1,
        in_per_group=1,
        out_per_group=1,
        kernel=(1, 2),
        size=(1, 1),
        padding="same",
        dilation=2,
        bias=False,
        method="fft",
        contiguous=False,
        magnitude_exp=-3,
    ),
    # big and tiny magnitudes, non-contiguous input
    ConvCase(2, 1, 3, 2, (3, 3), (6, 6), padding=1, magnitude_exp=3, contiguous=False),
    ConvCase(1, 1, 3, 2, (3, 3), (6, 6), padding=1, magnitude_exp=-3, method="fft"),
]


def with_pinned(test):
    for case in PINNED:
        test = example(case=case)(test)
    return test


@settings(max_examples=400, deadline=None)
@with_pinned
@given(case=conv_cases())
def test_conv2d_matches_reference(case: ConvCase) -> None:
    check_against_reference(case)


# Tunables of the engines; at 1 byte (value) every im2col chunk, row-tap chunk,
# depthwise chunk, depthwise-taps band and FFT (overlap-save) tile is a single output
# row, and part-rows are a single column (MIN_CHUNK_COLUMNS 1), so every chunking branch
# of the engines runs on the tiny images hypothesis draws.
SMALLEST_CHUNKS = {
    "IM2COL_CHUNK_BYTES": 1,
    "ROW_TAP_CHUNK_BYTES": 1,
    "DEPTHWISE_CHUNK_BYTES": 1,
    "DEPTHWISE_TAP_VALUES": 1,
    "FFT_MEMORY_BYTES": 1,
    "MIN_CHUNK_COLUMNS": 1,
}
# The direct engine's paths (see conv2d_direct): "row taps" forces them on every case
# with vertical stride 1 and several input channels per group, whatever the chunk
# budget; "full im2col" never takes them, nor the depthwise taps (one input channel per
# group, stride 1: taken by default).  The defaults pick row taps by GEMM depth, which
# the tiny cases drawn here never reach.
DIRECT_PATHS = {
    "row taps": {"ROW_TAP_MIN_K": 1, "ROW_TAP_MIN_ROWS": 0, "ROW_TAP_MIN_COLUMNS": 0},
    "full im2col": {"ROW_TAP_MIN_K": 10**9, "depthwise_taps": lambda c_in_g, geo: False},
}


def _engine_of(name: str) -> object:
    """The engine module that owns a tuning constant."""
    return conv_fft if name.startswith("FFT_") else conv_direct


@settings(max_examples=150, deadline=None)
@with_pinned
@given(case=conv_cases())
@pytest.mark.parametrize("path", list(DIRECT_PATHS))
def test_conv2d_in_one_row_chunks_matches_reference(path: str, case: ConvCase) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SMALLEST_CHUNKS, **DIRECT_PATHS[path]}.items():
            patch.setattr(_engine_of(name), name, value)  # raises if the name is gone
        check_against_reference(case)


@settings(max_examples=300, deadline=None)
@with_pinned
@given(case=conv_cases())
def test_conv2d_row_taps_match_reference(case: ConvCase) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in DIRECT_PATHS["row taps"].items():
            patch.setattr(_engine_of(name), name, value)
        check_against_reference(case)


@pytest.mark.parametrize(
    ("c_in_g", "kernel", "stride_h", "size", "batch", "expected"),
    [
        (64, (3, 3), 1, (256, 256), 1, (11, 256)),  # deep: (4096 - 192*2) // (192 + 128)
        (11, (3, 3), 1, (256, 256), 1, (73, 256)),  # K = 33: (4096 - 33*2) // (33 + 22)
        (10, (3, 3), 1, (256, 256), 1, None),  # K = 30 < ROW_TAP_MIN_K
        (5, (7, 7), 1, (256, 256), 1, (86, 256)),  # (4096 - 35*6) // (35 + 10)
        (64, (3, 3), 2, (256, 256), 1, None),  # strided rows
        (1, (3, 64), 1, (256, 256), 1, None),  # one channel per group
        (12, (13, 13), 1, (256, 512), 1, None),  # not one whole row fits the budget
        (16, (13, 13), 1, (256, 256), 1, (6, 256)),  # (4096 - 208*12) // (208 + 32)
        (64, (3, 3), 1, (64, 64), 1, (32, 64)),  # half the rows each, for two threads
        (64, (3, 3), 1, (64, 64), 2, (50, 64)),  # a sample each: (16384 - 384) // 320
        (128, (3, 3), 1, (24, 24), 2, None),  # 24 x 24 < ROW_TAP_MIN_COLUMNS
        (64, (3, 3), 1, (40, 40), 1, None),  # 20 x 40, for two threads
    ],
)
def test_row_tap_chunks(c_in_g, kernel, stride_h, size, batch, expected) -> None:
    """Row taps: stride 1, depth C_in/groups * kW >= 32, 2+ whole rows, 1024+ positions;
    as many rows as 4 MiB hold (band, output, partial sum), a chunk per thread."""
    threads.set_threads(2)
    try:
        geo = conv2d_geometry(size, kernel, (stride_h, 1), "same" if stride_h == 1 else 1)
        chunk = conv_direct.row_tap_chunk(batch, 1, c_in_g, c_in_g, kernel, geo)
    finally:
        threads.set_threads(None)
    assert chunk == expected


@pytest.mark.parametrize(
    ("channels", "size", "kernel", "expected"),
    [
        (64, (256, 256), (3, 3), (7, 256)),  # whole channels, 512 Ki // (256 * 258)
        (16, (1024, 1024), (3, 3), (1, 342)),  # 1024 * 1026 / 512 Ki: three bands
        (1, (2048, 2048), (3, 3), (1, 228)),  # 2048 * 2050 / 512 Ki: 9 bands
        (1, (64, 64), (3, 3), (1, 32)),  # one small channel: a band per thread
        (256, (32, 32), (3, 3), (128, 32)),  # no more than leave each thread a task
        (3, (40, 40), (1, 1), (2, 40)),
    ],
)
def test_depthwise_chunks(channels, size, kernel, expected) -> None:
    """Depthwise taps: bands of equal height below 512 Ki values of padded rows, else
    whole channels, as many as fit, a task per thread at least."""
    threads.set_threads(2)
    try:
        geo = conv2d_geometry(size, kernel, 1, "same")
        chunk = conv_direct.depthwise_chunk(channels, geo)
    finally:
        threads.set_threads(None)
    assert chunk == expected


def check_against_reference(case: ConvCase) -> None:
    x, w, b = make_arrays(case)
    x_before = x.copy()
    if case.expected_out_hw() is None:
        event("rejected: empty output or padding beyond PyTorch's limits")
        with pytest.raises(CbrError):
            run_cbr(case, x, w, b)
        return
    event(f"compared: method={case.method}")
    got = run_cbr(case, x, w, b)
    assert got.dtype == x.dtype
    assert got.ndim == x.ndim
    np.testing.assert_array_equal(x, x_before)  # the input is not modified
    assert_matches_reference(case, got, x, w, b)


@settings(max_examples=300, deadline=None)
@example(size=(1, 1), kernel=(1, 1), stride=1, padding=0, dilation=1, mode="reflect")
@example(size=(3, 5), kernel=(4, 2), stride=1, padding="valid", dilation=1, mode="zeros")
@example(size=(3, 3), kernel=(2, 2), stride=1, padding="full", dilation=3, mode="reflect")
@example(size=(4, 4), kernel=(1, 1), stride=1, padding=4, dilation=1, mode="circular")
@example(size=(4, 4), kernel=(1, 1), stride=1, padding=5, dilation=1, mode="circular")
@example(size=(1, 9), kernel=(1, 5), stride=(1, 4), padding="same", dilation=2, mode="zeros")
@given(
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    kernel=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    stride=st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))),
    padding=st.one_of(
        st.sampled_from(["valid", "same", "full"]),
        st.integers(0, 6),
        st.tuples(st.integers(0, 6), st.integers(0, 6)),
    ),
    dilation=st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    mode=st.sampled_from(PADDING_MODES),
)
def test_geometry_equals_output_shape_or_both_reject(
    size, kernel, stride, padding, dilation, mode
) -> None:
    """``conv2d_geometry(...).out_hw`` is the real output shape, or both raise CbrError."""
    try:
        predicted = conv2d_geometry(size, kernel, stride, padding, dilation, mode).out_hw
    except CbrError:
        predicted = None
    x = np.zeros((1, 1, *size), dtype=np.float32)
    w = np.ones((1, 1, *kernel), dtype=np.float32)
    try:
        actual = conv2d(x, w, None, stride, padding, dilation, 1, mode, method="direct")
    except CbrError:
        actual_hw = None
    else:
        actual_hw = actual.shape[2:]
    assert predicted == actual_hw
    # ... and both agree with the reference's independent arithmetic and limits.
    assert predicted == reference_out_hw(size, kernel, stride, padding, dilation, mode)


# ---------------------------------------------------------------- worked examples


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("zeros", [0, 0, 1, 2, 3, 0, 0]),
        ("reflect", [3, 2, 1, 2, 3, 2, 1]),  # mirrors about the edge, no repeat
        ("replicate", [1, 1, 1, 2, 3, 3, 3]),
        ("circular", [2, 3, 1, 2, 3, 1, 2]),
    ],
)
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_padding_modes_by_hand(mode: str, expected: list[int], method: str) -> None:
    """A 1x1 identity kernel shows the padded input itself."""
    x = np.array([[[[1.0, 2.0, 3.0]]]])
    out = conv2d(x, np.ones((1, 1, 1, 1)), padding=(0, 2), padding_mode=mode, method=method)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_same_even_kernel_pads_after(method: str) -> None:
    """Kernel [1, 10], 'same': total padding 1, all of it on the right (as PyTorch)."""
    x = np.array([[[[1.0, 2.0, 3.0, 4.0]]]])
    w = np.array([[[[1.0, 10.0]]]])
    out = conv2d(x, w, padding="same", method=method)
    np.testing.assert_allclose(out[0, 0, 0], [21, 32, 43, 4], rtol=1e-12)


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        # out = ceil(5/2) = 3, total = 2*2 + 3 - 5 = 2 -> (1, 1): [0 1 2 3 4 5 0]
        (5, [3, 9, 9]),
        # out = ceil(6/2) = 3, total = 2*2 + 3 - 6 = 1 -> (0, 1): [1 2 3 4 5 6 0]
        (6, [6, 12, 11]),
    ],
)
def test_same_with_stride_follows_tensorflow(width: int, expected: list[int]) -> None:
    x = np.arange(1.0, width + 1).reshape(1, 1, 1, width)
    out = conv2d(x, np.ones((1, 1, 1, 3)), stride=2, padding="same")
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-12)


def test_identity_kernel_is_exact() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    w = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    np.testing.assert_array_equal(conv2d(x, w, method="direct"), x)


# ---------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    ("in_dtype", "w_dtype", "out_dtype"),
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float32),  # the input's dtype decides
        (np.float64, np.float32, np.float64),
        (np.int64, np.float32, np.float32),  # integers -> float32
        (np.int8, np.int8, np.float32),
        (np.uint8, np.float64, np.float32),
        (np.bool_, np.float32, np.float32),
        (np.float16, np.float16, np.float32),
    ],
)
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_output_dtype(in_dtype, w_dtype, out_dtype, method: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=(1, 2, 5, 5)).astype(in_dtype)
    w = rng.integers(-3, 4, size=(2, 2, 3, 3)).astype(w_dtype)
    out = conv2d(x, w, padding=1, method=method)
    assert out.dtype == out_dtype
    # Integer data: the float32 result is exact for direct (|sum| < 2**24); FFT within 1e-5 * M.
    expected = conv2d_reference(x.astype(np.float64), w.astype(np.float64), padding=1)
    magnitude = conv2d_reference(
        np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), padding=1
    )
    np.testing.assert_array_less(np.abs(out - expected), 1e-5 * magnitude.max() + 1e-30)


def test_unbatched_equals_batch_of_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    single = conv2d(x, w, b, padding="same", padding_mode="reflect")
    batched = conv2d(x[None], w, b, padding="same", padding_mode="reflect")
    assert single.shape == (4, 6, 5)
    np.testing.assert_array_equal(single, batched[0])


# ------------------------------------------------- taps that only read zero padding


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [
        (5, 1, "same", 300),  # only the centre tap reads the 9x7 image
        ((3, 4), (2, 1), "same", (40, 7)),
        (3, 1, (50, 20), 20),  # explicit padding wider than the image
        (2, 3, "full", 25),
    ],
)
def test_taps_reading_only_zero_padding_match_the_reference(
    method: str, kernel, stride, padding, dilation
) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 7))
    w = rng.standard_normal((4, 3, *to_pair(kernel)))
    b = rng.standard_normal(4)
    got = conv2d(x, w, b, stride, padding, dilation, method=method)
    expected = conv2d_reference(x, w, b, stride, padding, dilation)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_large_dilation_same_does_not_pad_the_whole_input(method: str) -> None:
    # Dilation 1000 with a 5x5 kernel and "same" padding pads 16x16 to 4016x4016
    # (2 channels: 129 MB of float32); every tap but the centre reads only zeros.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 16, 16)).astype(np.float32)
    w = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    tracemalloc.start()
    try:
        got = conv2d(x, w, None, 1, "same", 1000, method=method)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak
    expected = np.einsum("oc,nchw->nohw", w[:, :, 2, 2].astype(np.float64), x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_fft_cost_counts_the_tiles_the_engine_makes_for_float64() -> None:
    """float64 spectra are twice as large: the engine cuts more tiles, and so must the model."""
    from cbr_cli.core.conv_cost import _FFT_FIXED, fft_seconds
    from cbr_cli.core.conv_fft import fft_plan

    geo = conv2d_geometry((1024, 1024), (15, 15), 1, 7, 1)
    assert fft_plan(16, 16, 1, geo, 8).tiles > fft_plan(16, 16, 1, geo, 4).tiles
    single, double = (fft_seconds(1, 16, 16, 1, (15, 15), geo, size) for size in (4, 8))
    tiles4, tiles8 = (fft_plan(16, 16, 1, geo, size).tiles for size in (4, 8))
    # Kernel spectra are paid once; each tile adds the same per-tile cost, so the variable
    # part grows with the tile count (the tiles are shorter, hence cheaper, but more).
    assert double > single > _FFT_FIXED
    assert tiles8 / tiles4 > 3


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize(("channels", "mult", "size"), [(16, 1, (300, 310)), (2, 3, (900, 800))])
def test_depthwise_scratch_is_what_the_model_counts(mode: str, channels, mult, size) -> None:
    """The memory check's scratch_bytes counts the depthwise-taps path's allocations beyond
    its output (bands, accumulators; the padded input for a padding mode other than zeros)
    to within 5% (what it leaves out is small: the reordered taps, the engine's own
    bookkeeping), and is not more than 1.5x of them."""
    from cbr_cli.core.conv_cost import scratch_bytes

    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, channels, *size)).astype(np.float32)
    w = rng.standard_normal((channels * mult, 1, 3, 3)).astype(np.float32)
    output = x.nbytes * mult
    geo = conv2d_geometry(size, (3, 3), 1, 1, 1, mode)
    counted = scratch_bytes(1, channels, channels * mult, channels, (3, 3), geo, mode)
    threads.set_threads(2)
    tracemalloc.start()
    try:
        conv2d(x, w, None, 1, 1, 1, channels, mode, method="direct")
        peak = tracemalloc.get_traced_memory()[1] - output
    finally:
        tracemalloc.stop()
        threads.set_threads(None)
    assert 0.95 * peak <= counted <= 1.5 * peak, (peak, counted)
