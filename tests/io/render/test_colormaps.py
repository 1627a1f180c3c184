"""Colormaps and colouring (values -> colours)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbr_cli.errors import CbrError
from cbr_cli.io.render import colormaps
from cbr_cli.io.render.colorize import colorize, fill, solid
from cbr_cli.io.render.colormaps import COLORMAPS, NAN_COLOR, get_colormap
from cbr_cli.io.render.ranges import map_ranges, value_range

# Any floating-point warning (divide by zero, invalid value, overflow) is a test failure.
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _raise_on_fp_errors() -> Iterator[None]:
    with np.errstate(all="raise"):
        yield


WHITE = [255, 255, 255]


def rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i : i + 2], 16) for i in (0, 2, 4)]


# -- colormaps ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_colormap_tables(name: str) -> None:
    cmap = COLORMAPS[name]
    assert cmap.lut.shape == (256, 3) and cmap.lut.dtype == np.uint8
    assert NAN_COLOR not in [tuple(c) for c in cmap.lut.tolist()]


def test_diverging_ends_and_white_centre() -> None:
    lut = COLORMAPS["rdbu"].lut
    assert COLORMAPS["rdbu"].diverging
    assert lut[0].tolist() == rgb("053061")  # darkest blue: most negative
    assert lut[255].tolist() == rgb("67001f")  # darkest red: most positive
    assert lut[127].tolist() == WHITE and lut[128].tolist() == WHITE
    lower, upper = lut[:127].astype(int), lut[129:].astype(int)
    assert np.all(lower[:, 2] >= lower[:, 0]) and np.all(upper[:, 0] >= upper[:, 2])
    # Lightness rises to the centre and falls after it.
    assert np.all(np.diff(lut[:128].astype(int).sum(axis=1)) >= 0)
    assert np.all(np.diff(lut[128:].astype(int).sum(axis=1)) <= 0)


def test_sequential_ends() -> None:
    assert COLORMAPS["viridis"].lut[0].tolist() == rgb("440154")
    assert COLORMAPS["viridis"].lut[255].tolist() == rgb("fde725")
    assert COLORMAPS["magma"].lut[0].tolist() == rgb("000004")
    np.testing.assert_array_equal(COLORMAPS["gray"].lut[:, 0], np.arange(256))
    assert not COLORMAPS["viridis"].diverging


def test_get_colormap() -> None:
    assert get_colormap("Viridis") is COLORMAPS["viridis"]
    assert get_colormap(COLORMAPS["gray"]) is COLORMAPS["gray"]
    with pytest.raises(CbrError, match=r"colormap must be one of \['rdbu', .*'gray'\], but got"):
        get_colormap("jet")
    assert colormaps.default_colormap(True).diverging
    assert not colormaps.default_colormap(False).diverging


# -- colorize ----------------------------------------------------------------------------


def test_colorize_ends_centre_and_clipping() -> None:
    x = np.array([[-2.0, -1.0, 0.0], [1.0, 2.0, 0.5]])
    out = colorize(x, -1.0, 1.0, "rdbu")
    lut = COLORMAPS["rdbu"].lut
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == out[0, 1].tolist() == lut[0].tolist()
    assert out[0, 2].tolist() == WHITE
    assert out[1, 0].tolist() == out[1, 1].tolist() == lut[255].tolist()
    assert out[1, 2].tolist() == lut[round(0.75 * 255)].tolist()


def test_colorize_gray_is_linear() -> None:
    x = np.linspace(0.0, 1.0, 256)
    np.testing.assert_array_equal(colorize(x, 0.0, 1.0, "gray")[:, 0], np.arange(256))


def test_colorize_nan_and_inf() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32)
    out = colorize(x, 0.0, 1.0, "viridis")
    lut = COLORMAPS["viridis"].lut
    assert out[0].tolist() == list(NAN_COLOR)
    assert out[1].tolist() == lut[255].tolist()
    assert out[2].tolist() == lut[0].tolist()
    assert out[3].tolist() == lut[0].tolist()


@pytest.mark.parametrize(
    ("vmin", "vmax"), [(0.0, 0.0), (1.0, -1.0), (0.0, math.nan), (-math.inf, 1.0)]
)
def test_colorize_rejects_bad_ranges(vmin: float, vmax: float) -> None:
    with pytest.raises(CbrError, match="needs finite vmin < vmax"):
        colorize(np.zeros((2, 2)), vmin, vmax)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_values_colorize_without_warnings(dtype: type) -> None:
    info = np.finfo(dtype)
    for x in (
        np.array([-info.max, 0.0, info.max, info.max / 2], dtype=dtype),  # span overflows
        np.array([info.smallest_subnormal, -info.tiny, 0.0], dtype=dtype),
        np.array([info.tiny, 1e30], dtype=dtype),  # tiny / huge underflows
    ):
        vmin, vmax = value_range(x)
        out = colorize(x, vmin, vmax, "rdbu")
        i = np.argmax(np.abs(x))  # the largest magnitude sits at an end of the map
        assert out[i].tolist() == COLORMAPS["rdbu"].lut[255 if x[i] > 0 else 0].tolist()
        if vmin < 0:
            assert out[x == 0].tolist() == [WHITE]


@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=12),
    st.sampled_from(sorted(COLORMAPS)),
)
def test_any_values_colorize_without_warnings(values: list[float], name: str) -> None:
    with np.errstate(all="raise"):
        x = np.array(values, dtype=np.float32).reshape(1, 1, -1)
        ((vmin, vmax),) = map_ranges([x], "per-channel")[0]
        assert vmin < vmax and math.isfinite(vmin) and math.isfinite(vmax)
        out = colorize(x[0], vmin, vmax, name)
    assert out.shape == (1, len(values), 3)
    np.testing.assert_array_equal(np.isnan(x[0, 0]), np.all(out[0] == NAN_COLOR, axis=1))


@given(
    st.integers(0, 40),
    st.integers(0, 40),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
)
def test_solid_is_every_pixel_the_colour(height: int, width: int, colour) -> None:
    image = solid(height, width, colour)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    expected = np.empty((height, width, 3), np.uint8)
    expected[:] = colour  # numpy's broadcast: the slow way solid replaces
    np.testing.assert_array_equal(image, expected)


@given(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12), st.integers(0, 12))
def test_fill_paints_exactly_the_region_of_a_view(
    top: int, left: int, rows: int, cols: int
) -> None:
    image = np.arange(20 * 24 * 3, dtype=np.uint8).reshape(20, 24, 3)
    expected = image.copy()
    expected[top : top + rows, left : left + cols] = (7, 8, 9)
    fill(image[top : top + rows, left : left + cols], (7, 8, 9))
    np.testing.assert_array_equal(image, expected)
