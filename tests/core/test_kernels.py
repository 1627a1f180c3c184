"""The kernel bank: textbook values, sums, orientation, rotations, names and parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbr_cli.core import kernels
from cbr_cli.core.kernel_bank import DIRECTIONS
from cbr_cli.core.kernels import (
    describe,
    expand_names,
    get_kernel,
    kernel_names,
    kernel_set,
    preview_ascii,
    stack_kernels,
    stack_shape,
)
from cbr_cli.errors import CbrError
from tests.helpers import run_python


def correlate_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Reference cross-correlation (no flip, like torch conv2d), 'valid' region, float64."""
    windows = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), kernel.shape)
    return np.einsum("ijkl,kl->ij", windows, kernel.astype(np.float64))


# Textbook values (Gonzalez & Woods; Jähne for Scharr), written out independently of the module.
TEXTBOOK = {
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "scharr_x": [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]],
    "scharr_y": [[-3, -10, -3], [0, 0, 0], [3, 10, 3]],
    "prewitt_x": [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
    "prewitt_y": [[-1, -1, -1], [0, 0, 0], [1, 1, 1]],
    "laplacian4": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "laplacian8": [[1, 1, 1], [1, -8, 1], [1, 1, 1]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "kirsch_n": [[5, 5, 5], [-3, 0, -3], [-3, -3, -3]],
    "kirsch_e": [[-3, -3, 5], [-3, 0, 5], [-3, -3, 5]],
    "compass_n": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
    "compass_ne": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
}


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_textbook_values(name: str) -> None:
    k = get_kernel(name)
    assert k.dtype == np.float32
    np.testing.assert_array_equal(k, np.array(TEXTBOOK[name], dtype=np.float32))


@pytest.mark.parametrize("name", kernel_names())
def test_every_kernel_is_float32_2d_and_fresh(name: str) -> None:
    k = get_kernel(name)
    assert k.dtype == np.float32
    assert k.ndim == 2
    assert np.isfinite(k).all()
    k[...] = 99  # callers may modify their copy without changing the bank
    assert not np.all(get_kernel(name) == 99)


ZERO_SUM = [
    *[f"{f}_{a}" for f in ("sobel", "scharr", "prewitt") for a in ("x", "y")],
    "laplacian4",
    "laplacian8",
    *[f"kirsch_{d}" for d in DIRECTIONS],
    *[f"compass_{d}" for d in DIRECTIONS],
]


@pytest.mark.parametrize("name", ZERO_SUM)
def test_derivative_kernels_sum_to_zero(name: str) -> None:
    assert get_kernel(name).sum() == 0  # small integers: exact in float32


@pytest.mark.parametrize("spec", ["identity", "identity:7", "sharpen", "emboss", "box", "box:4"])
def test_smoothing_and_sharpening_kernels_sum_to_one(spec: str) -> None:
    assert get_kernel(spec).sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-6)


@given(size=st.integers(0, 25).map(lambda i: 2 * i + 1), sigma=st.floats(0.1, 20.0))
def test_gaussian_sums_to_one_and_is_symmetric(size: int, sigma: float) -> None:
    k = get_kernel(f"gaussian:{size}:{sigma!r}")
    assert k.shape == (size, size)
    # float32 rounding of size^2 entries each <= 1: well inside 1e-5.
    assert k.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_array_equal(k, k[::-1, ::-1])
    assert k[size // 2, size // 2] == k.max()


@given(size=st.integers(1, 25).map(lambda i: 2 * i + 1), sigma=st.floats(0.3, 10.0))
def test_log_sums_to_zero_with_negative_centre(size: int, sigma: float) -> None:
    k = get_kernel(f"log:{size}:{sigma!r}")
    # Zero in float64 before the cast; each float32 entry carries <= 2^-24 relative error.
    assert abs(k.sum(dtype=np.float64)) <= size * size * np.abs(k).max() * 2**-23
    assert k[size // 2, size // 2] == k.min() < 0
    np.testing.assert_array_equal(k, k.T)


def test_log_default_matches_formula_at_centre() -> None:
    # Centre of the unsampled LoG is -1 / (pi sigma^4); the zero-sum shift is small for 9x9.
    k = get_kernel("log")
    assert k.shape == (9, 9)
    assert k[4, 4] == pytest.approx(-1 / (np.pi * 1.4**4), rel=0.05)


def test_gaussian_default_and_known_centre() -> None:
    k = get_kernel("gaussian")
    assert k.shape == (5, 5)
    g = np.exp(-(np.arange(-2, 3) ** 2) / 2.0)
    np.testing.assert_allclose(k, np.outer(g, g) / g.sum() ** 2, rtol=1e-6)


# -- orientation -------------------------------------------------------------------------

STEP_RIGHT = np.repeat(np.array([[0.0] * 5 + [1.0] * 5]), 8, axis=0)  # dark left, bright right


def test_sobel_x_positive_on_dark_to_bright_step_and_sobel_y_zero() -> None:
    rx = correlate_valid(STEP_RIGHT, get_kernel("sobel_x"))
    ry = correlate_valid(STEP_RIGHT, get_kernel("sobel_y"))
    assert rx.max() == 4 and rx.min() == 0  # 1 + 2 + 1 where the window straddles the step
    np.testing.assert_array_equal(ry, 0)


def test_y_kernels_positive_where_intensity_increases_downward() -> None:
    step_down = STEP_RIGHT.T  # dark top, bright bottom
    for name in ("sobel_y", "scharr_y", "prewitt_y"):
        assert correlate_valid(step_down, get_kernel(name)).min() == 0, name
        assert correlate_valid(step_down, get_kernel(name)).max() > 0, name
        np.testing.assert_array_equal(correlate_valid(step_down, get_kernel(name[:-1] + "x")), 0)


@pytest.mark.parametrize(("name", "gain"), [("sobel", 8), ("scharr", 32), ("prewitt", 6)])
def test_gradient_gain_on_unit_ramps(name: str, gain: int) -> None:
    y, x = np.mgrid[0:7, 0:7].astype(np.float64)
    np.testing.assert_array_equal(correlate_valid(x, get_kernel(f"{name}_x")), gain)
    np.testing.assert_array_equal(correlate_valid(y, get_kernel(f"{name}_y")), gain)
    np.testing.assert_array_equal(correlate_valid(x, get_kernel(f"{name}_y")), 0)


def test_laplacians_negative_on_a_bright_dot() -> None:
    dot = np.zeros((5, 5))
    dot[2, 2] = 1.0
    for name in ("laplacian4", "laplacian8", "log:5:0.8"):
        response = correlate_valid(dot, get_kernel(name))
        assert response[response.shape[0] // 2, response.shape[1] // 2] < 0, name


UNIT = {  # direction -> (dx, dy), y pointing down
    "n": (0, -1),
    "ne": (1, -1),
    "e": (1, 0),
    "se": (1, 1),
    "s": (0, 1),
    "sw": (-1, 1),
    "w": (-1, 0),
    "nw": (-1, -1),
}


@pytest.mark.parametrize("family", ["kirsch", "compass"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_compass_kernel_strongest_toward_its_direction(family: str, direction: str) -> None:
    dx, dy = UNIT[direction]
    y, x = np.mgrid[0:3, 0:3].astype(np.float64)
    ramp = dx * x + dy * y  # intensity increases toward `direction`
    responses = {d: correlate_valid(ramp, get_kernel(f"{family}_{d}"))[0, 0] for d in DIRECTIONS}
    best = max(responses.values())
    assert [d for d, r in responses.items() if r == best] == [direction]


@pytest.mark.parametrize("family", ["kirsch", "compass"])
def test_compass_families_rotate_by_90_degrees_every_two_steps(family: str) -> None:
    bank = [get_kernel(f"{family}_{d}") for d in DIRECTIONS]
    for i in range(8):
        # Two steps clockwise (45 degrees each) = the whole kernel rotated 90 degrees clockwise.
        np.testing.assert_array_equal(bank[(i + 2) % 8], np.rot90(bank[i], k=-1))


def test_kirsch_neighbours_shift_the_ring_by_one() -> None:
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    bank = [get_kernel(f"kirsch_{d}") for d in DIRECTIONS]
    for i in range(8):
        a = [bank[i][p] for p in ring]
        b = [bank[(i + 1) % 8][p] for p in ring]
        assert b == a[-1:] + a[:-1]
        assert bank[i][1, 1] == 0
        assert sorted(a) == [-3] * 5 + [5] * 3


def test_compass_relations() -> None:
    np.testing.assert_array_equal(get_kernel("compass_e"), get_kernel("sobel_x"))
    np.testing.assert_array_equal(get_kernel("compass_s"), get_kernel("sobel_y"))
    for i, d in enumerate(DIRECTIONS):
        opposite = DIRECTIONS[(i + 4) % 8]
        np.testing.assert_array_equal(
            get_kernel(f"compass_{d}"), -get_kernel(f"compass_{opposite}")
        )


# -- names and parameters ----------------------------------------------------------------


def test_parameters_parse_with_defaults_and_case() -> None:
    assert get_kernel("box:5").shape == (5, 5)
    assert get_kernel("box:4").shape == (4, 4)  # even sizes are legal, as in PyTorch
    np.testing.assert_array_equal(get_kernel("gaussian::2"), get_kernel("gaussian:5:2.0"))
    np.testing.assert_array_equal(get_kernel("gaussian:5"), get_kernel("gaussian"))
    np.testing.assert_array_equal(get_kernel(" Sobel_X "), get_kernel("sobel_x"))
    assert get_kernel("log:9:1.4").shape == (9, 9)


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(CbrError, match=r"unknown kernel 'sobelx'; did you mean 'sobel_x'") as e:
        get_kernel("sobelx")
    assert e.value.exit_code == 2
    with pytest.raises(CbrError, match=r"did you mean 'gaussian'"):
        get_kernel("gausian:5")
    with pytest.raises(CbrError, match=r"^unknown kernel 'zzz' \(`cbr kernels`"):
        get_kernel("zzz")


def test_set_name_is_not_a_kernel() -> None:
    with pytest.raises(CbrError, match=r"'kirsch' is a kernel set.*kirsch_n"):
        get_kernel("kirsch")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "gaussian:4",
            r"kernel 'gaussian:4': size must be an odd integer in \[1, 101\], but got '4'",
        ),
        ("gaussian:5:0", r"sigma must be a finite number > 0, but got '0'"),
        ("gaussian:5:-1", r"sigma must be a finite number > 0, but got '-1'"),
        ("gaussian:5:abc", r"sigma must be .*, but got 'abc'"),
        ("gaussian:5:inf", r"sigma must be .*, but got 'inf'"),
        ("gaussian:5:nan", r"sigma must be .*, but got 'nan'"),
        ("gaussian:1.5", r"size must be an odd integer .*, but got '1.5'"),
        ("gaussian:103", r"size must be .*, but got '103'"),
        ("box:0", r"size must be an integer in \[1, 101\], but got '0'"),
        ("box:3:3", r"kernel 'box' takes at most 1 parameter\(s\) \(box:size\)"),
        ("log:1", r"size must be an odd integer in \[3, 101\], but got '1'"),
        ("log:9:1:2", r"at most 2 parameter\(s\) \(log:size:sigma\)"),
        ("sobel_x:3", r"kernel 'sobel_x' takes no parameters, but got 'sobel_x:3'"),
        ("identity:2", r"size must be an odd integer"),
    ],
)
def test_bad_parameters_are_named(spec: str, message: str) -> None:
    with pytest.raises(CbrError, match=message):
        get_kernel(spec)


def test_describe() -> None:
    assert describe("gaussian:7:1.5") == "Gaussian blur 7x7, sigma 1.5, sums to 1"
    assert "increases to the right" in describe("sobel_x")
    assert describe("sobel") == "set of 2 kernels: sobel_x, sobel_y"
    for name in kernel_names():
        text = describe(name)
        assert text and "\n" not in text and "{" not in text
    with pytest.raises(CbrError, match="unknown kernel"):
        describe("nope")


def test_kernel_sets() -> None:
    assert kernel_set("kirsch") == [f"kirsch_{d}" for d in DIRECTIONS]
    assert kernel_set("compass") == [f"compass_{d}" for d in DIRECTIONS]
    assert kernel_set("sobel") == ["sobel_x", "sobel_y"]
    for name in kernels.set_names():
        assert expand_names(kernel_set(name)) == kernel_set(name)  # members are valid specs
    with pytest.raises(CbrError, match=r"unknown kernel set 'kirch'; did you mean 'kirsch'"):
        kernel_set("kirch")
    assert set(kernels.set_names()).isdisjoint(kernel_names())


def test_expand_names_expands_sets_in_place() -> None:
    assert expand_names(["identity", "Sobel", "box:5"]) == [
        "identity",
        "sobel_x",
        "sobel_y",
        "box:5",
    ]
    with pytest.raises(CbrError, match="unknown kernel"):
        expand_names(["sobel", "nope"])


# -- stacking ----------------------------------------------------------------------------


def test_stack_pads_smaller_kernels_centred() -> None:
    w = stack_kernels(["sobel_x", "gaussian", "identity:1"])
    assert w.shape == (3, 5, 5) and w.dtype == np.float32
    np.testing.assert_array_equal(w[0, 1:4, 1:4], get_kernel("sobel_x"))
    assert np.count_nonzero(w[0]) == np.count_nonzero(get_kernel("sobel_x"))
    np.testing.assert_array_equal(w[1], get_kernel("gaussian"))
    assert w[2, 2, 2] == 1 and w[2].sum() == 1


def test_zero_padding_keeps_the_response() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((12, 12))
    w = stack_kernels(["sobel_x", "log:7:1.0"])
    small = correlate_valid(image, get_kernel("sobel_x"))  # 10x10
    padded = correlate_valid(image, w[0])  # 6x6: the same centres, minus a 2-pixel border
    np.testing.assert_allclose(padded, small[2:-2, 2:-2], rtol=1e-12)


def test_stack_expands_sets() -> None:
    assert stack_kernels(["kirsch"]).shape == (8, 3, 3)
    assert stack_kernels(["edges"]).shape[0] == len(expand_names(["edges"]))


def test_stack_rejects_mixed_parity() -> None:
    with pytest.raises(CbrError, match=r"kernel 'box:4' \(4x4\) cannot be centred in the 5x5"):
        stack_kernels(["gaussian", "box:4"])
    assert stack_kernels(["box:2", "box:4"]).shape == (2, 4, 4)  # all even: fine


def test_stack_rejects_empty() -> None:
    with pytest.raises(CbrError, match="no kernels"):
        stack_kernels([])


# -- stack shape without numpy -------------------------------------------------------------

SHAPE_STACKS = [
    *([name] for name in kernel_names()),
    *([name] for name in kernels.set_names()),
    ["box:1"],
    ["box:4"],
    ["box:101"],
    ["identity:1"],
    ["identity:7"],
    ["gaussian::2"],
    ["gaussian:7:1.5"],
    ["gaussian:101:20"],
    ["log:3"],
    ["log:9:1.4"],
    ["log:11:2"],
    [" Sobel_X ", "GAUSSIAN:7"],
    ["sobel", "gaussian:7:1.5"],
    ["kirsch", "compass", "log:5:0.8"],
    ["box:2", "box:4", "box:8"],
    ["identity:1", "sobel_x", "box:5", "log:9:1.4", "edges"],
    ["demo", "demo"],
]


@pytest.mark.parametrize("names", SHAPE_STACKS, ids=lambda names: "+".join(names))
def test_stack_shape_equals_built_shape(names: list[str]) -> None:
    shape = stack_shape(names)
    assert shape == stack_kernels(names).shape
    assert all(type(n) is int for n in shape)  # plain ints, not numpy scalars
    assert shape[0] == len(expand_names(names))


def _outcome(
    function: Callable[[Sequence[str]], tuple[int, ...]], names: Sequence[str]
) -> tuple[object, ...]:
    """``("ok", shape)`` or ``("error", message, exit_code)``: what a caller can observe."""
    try:
        return ("ok", tuple(function(names)))
    except CbrError as exc:
        return ("error", str(exc), exc.exit_code)


def _built_shape(names: Sequence[str]) -> tuple[int, ...]:
    return stack_kernels(names).shape


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["box:4", "sobel_x"],
            r"^kernel 'sobel_x' \(3x3\) cannot be centred in the 4x4 stack: sizes in one stack "
            r"must all be odd or all be even$",
        ),
        (["kirsch", "box:2"], r"^kernel 'box:2' \(2x2\) cannot be centred in the 3x3 stack"),
        (["nope"], r"^unknown kernel 'nope'"),
        (["sobel", "sobelx"], r"^unknown kernel 'sobelx'; did you mean 'sobel_x'"),
        (["gaussian:4"], r"size must be an odd integer in \[1, 101\], but got '4'"),
        (["gaussian::0"], r"sigma must be a finite number > 0, but got '0'"),
        (["log:1"], r"size must be an odd integer in \[3, 101\], but got '1'"),
        (["box:102"], r"size must be an integer in \[1, 101\], but got '102'"),
        (["box:3:3"], r"takes at most 1 parameter\(s\) \(box:size\)"),
        (["sobel_x:3"], r"^kernel 'sobel_x' takes no parameters"),
        (["kirsch:3"], r"^'kirsch' is a kernel set, not a single kernel"),
        ([], r"^no kernels given$"),
    ],
)
def test_stack_shape_rejects_as_stack_kernels_does(names: list[str], message: str) -> None:
    with pytest.raises(CbrError, match=message):
        stack_shape(names)
    assert _outcome(stack_shape, names) == _outcome(_built_shape, names)


_SIZES = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 101, 102])
_SPECS = st.one_of(
    st.sampled_from([*kernel_names(), *kernels.set_names(), "sobelx", "Sobel_X", "sobel_x:3"]),
    st.builds("box:{}".format, _SIZES),
    st.builds("identity:{}".format, _SIZES),
    st.builds("gaussian:{}:{}".format, _SIZES, st.sampled_from(["", "0.5", "2", "0", "x"])),
    st.builds("log:{}:{}".format, _SIZES, st.sampled_from(["", "1.4", "-1"])),
)


@given(names=st.lists(_SPECS, max_size=5))
def test_stack_shape_agrees_with_stack_kernels_or_both_reject(names: list[str]) -> None:
    assert _outcome(stack_shape, names) == _outcome(_built_shape, names)


def test_stack_shape_does_not_import_numpy() -> None:
    code = (
        "import sys, cbr_cli.core.kernels; "
        "print(cbr_cli.core.kernels.stack_shape(['sobel', 'gaussian:7:1.5'])); "
        "print('numpy' in sys.modules)"
    )
    result = run_python(code)
    assert result.stdout.splitlines() == ["(3, 7, 7)", "False"]


# -- preview -----------------------------------------------------------------------------


def test_preview_integer_kernel() -> None:
    assert preview_ascii(get_kernel("sobel_x")) == "-1  0  1\n-2  0  2\n-1  0  1"


def test_preview_float_kernel_and_no_negative_zero() -> None:
    text = preview_ascii(np.array([[0.5, -1e-9], [0.25, 1.0]]))
    assert text == "0.5000 0.0000\n0.2500 1.0000"


def test_preview_crops_large_kernels() -> None:
    text = preview_ascii(get_kernel("gaussian:31:5"), max_size=5)
    lines = text.splitlines()
    assert lines[0] == "centre 5x5 of 31x31:"
    assert len(lines) == 6 and all(len(line.split()) == 5 for line in lines[1:])
