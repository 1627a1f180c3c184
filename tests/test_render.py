"""Colormaps, value ranges, colouring, text and montage geometry."""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbr_cli.errors import CbrError
from cbr_cli.io import render
from cbr_cli.io.render import (
    BACKGROUND,
    COLORMAPS,
    INK,
    NAN_COLOR,
    Colorbar,
    colorbar,
    colorize,
    draw_text,
    get_colormap,
    map_ranges,
    montage,
    montage_shape,
    text_size,
    value_range,
)

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
    assert render.default_colormap(True).diverging
    assert not render.default_colormap(False).diverging


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


# -- value ranges ------------------------------------------------------------------------


def test_value_range_signed_is_symmetric() -> None:
    assert value_range(np.array([-1.0, 3.0])) == (-3.0, 3.0)
    assert value_range(np.array([-5.0, 3.0]), signed=True) == (-5.0, 5.0)
    assert value_range(np.array([1.0, 3.0]), signed=True) == (-3.0, 3.0)


def test_value_range_non_negative_starts_at_zero() -> None:
    assert value_range(np.array([1.0, 3.0])) == (0.0, 3.0)
    assert value_range(np.array([2.0, 2.0])) == (0.0, 2.0)  # constant: top colour


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_all_zero_map_gets_the_unit_range_and_the_colour_of_zero(dtype: type) -> None:
    dead = np.zeros((4, 5), dtype=dtype)
    assert value_range(dead) == (0.0, 1.0)
    assert value_range(dead, signed=True) == (-1.0, 1.0)
    seq = colorize(dead, *value_range(dead), "viridis")
    assert np.all(seq == COLORMAPS["viridis"].lut[0])
    div = colorize(dead, *value_range(dead, signed=True), "rdbu")
    assert np.all(div == 255)


def test_constant_negative_map_renders_at_the_blue_end() -> None:
    x = np.full((3, 3), -0.5)
    assert value_range(x) == (-0.5, 0.5)
    assert np.all(colorize(x, *value_range(x), "rdbu") == COLORMAPS["rdbu"].lut[0])


def test_non_finite_values_are_ignored_by_ranges() -> None:
    x = np.array([np.nan, np.inf, -np.inf, -2.0, 1.0])
    assert value_range(x) == (-2.0, 2.0)
    assert value_range(np.full(3, np.nan)) == (0.0, 1.0)
    assert not render.is_signed(np.array([np.nan, -np.inf, 1.0]))


def stages() -> list[np.ndarray]:
    conv = np.zeros((3, 2, 2))
    conv[0] = [[-4, 1], [0, 0]]
    conv[1] = [[2, 0], [0, 0]]  # channel 2 stays all zero
    relu = np.maximum(conv, 0)
    relu[1] = [[0, 8], [0, 0]]
    return [conv, relu]


def test_map_ranges_per_channel() -> None:
    r = map_ranges(stages(), "per-channel")
    assert r == [[(-4.0, 4.0), (-2.0, 2.0), (-1.0, 1.0)], [(0.0, 1.0), (0.0, 8.0), (0.0, 1.0)]]


def test_map_ranges_per_stage() -> None:
    r = map_ranges(stages(), "per-stage")
    assert r == [[(-4.0, 4.0)] * 3, [(0.0, 8.0)] * 3]


def test_map_ranges_global() -> None:
    r = map_ranges(stages(), "global")
    assert r == [[(-8.0, 8.0)] * 3, [(0.0, 8.0)] * 3]


def test_map_ranges_signed_override_and_batches() -> None:
    batch = np.stack(stages()[:1] * 2)  # (N=2, C=3, H, W)
    batch[1, 2, 0, 0] = -7.0
    assert map_ranges([batch], "per-channel", signed=False) == [
        [(0.0, 1.0), (0.0, 2.0), (0.0, 1.0)]
    ]
    assert map_ranges([batch], "per-channel", signed=[True])[0][2] == (-7.0, 7.0)
    with pytest.raises(ValueError, match="2 signed flags for 1 stages"):
        map_ranges([batch], signed=[True, False])


def test_map_ranges_rejects_unknown_mode() -> None:
    with pytest.raises(CbrError, match=r"normalize must be one of \['per-channel', 'per-stage'"):
        map_ranges(stages(), "per-image")


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


# -- text --------------------------------------------------------------------------------


def test_font_glyphs() -> None:
    assert all(g.shape == (render.GLYPH_H, render.GLYPH_W) for g in render.FONT.values())
    for char in "abcdefghijklmnopqrstuvwxyz0123456789_:-.":
        assert render.FONT[char].any(), char
    assert not render.FONT[" "].any()


def test_text_size_and_drawing() -> None:
    assert text_size("ab", scale=2) == (16, 22)
    canvas = np.zeros((8, 11, 3), np.uint8)
    draw_text(canvas, "ab", 0, 0, color=(1, 2, 3))
    ink = np.all(canvas == (1, 2, 3), axis=2)
    np.testing.assert_array_equal(ink[:, :5], render.FONT["a"])
    np.testing.assert_array_equal(ink[:, 5], False)  # the gap column
    np.testing.assert_array_equal(ink[:, 6:], render.FONT["b"])


def test_unknown_characters_draw_as_question_mark_and_uppercase_as_lowercase() -> None:
    a = np.zeros((8, 5, 3), np.uint8)
    b = np.zeros((8, 5, 3), np.uint8)
    draw_text(a, "€", 0, 0)
    draw_text(b, "?", 0, 0)
    np.testing.assert_array_equal(a, b)
    draw_text(a, "K", 0, 0)
    draw_text(b, "k", 0, 0)
    np.testing.assert_array_equal(a, b)


def test_text_is_clipped_at_the_edges() -> None:
    canvas = np.zeros((5, 7, 3), np.uint8)
    draw_text(canvas, "hello", -3, -4, scale=2)
    draw_text(canvas, "x", 100, 100)
    assert canvas.any()


# -- colour bar and montage --------------------------------------------------------------


def test_colorbar_strip() -> None:
    strip = colorbar("rdbu", -2.0, 2.0, width=120)
    assert strip.shape == (2 * 8 + 1, 120, 3)
    lut = COLORMAPS["rdbu"].lut
    assert strip[0, 0].tolist() == lut[0].tolist()
    assert strip[0, -1].tolist() == lut[255].tolist()
    labels = strip[9:]
    assert np.any(np.all(labels == INK, axis=2))


def geometry(n, th, tw, ncols, pad, labelled, title, cbar, s=1):
    """The documented size formula, restated."""
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    band = 10 * s
    h = nrows * (th + band * labelled) + (nrows + 1) * pad + band * title
    h += (17 * s + pad) * cbar
    return h, ncols * tw + (ncols + 1) * pad


@given(
    n=st.integers(1, 12),
    th=st.integers(1, 20),
    tw=st.integers(1, 20),
    ncols=st.one_of(st.none(), st.integers(1, 12)),
    pad=st.integers(0, 5),
    labelled=st.booleans(),
    title=st.booleans(),
    cbar=st.booleans(),
)
def test_montage_size_formula(n, th, tw, ncols, pad, labelled, title, cbar) -> None:
    if ncols is not None:
        ncols = min(ncols, n)
    tiles = [np.full((th, tw, 3), 7, np.uint8)] * n
    image = montage(
        tiles,
        labels=[f"c{i}" for i in range(n)] if labelled else None,
        ncols=ncols,
        pad=pad,
        title="stage" if title else None,
        colorbar_spec=Colorbar("viridis", 0.0, 1.0) if cbar else None,
        label_scale=1,
    )
    expected = geometry(n, th, tw, ncols, pad, labelled, title, cbar)
    assert image.shape == (*expected, 3) and image.dtype == np.uint8
    shapes = [t.shape for t in tiles]
    kwargs = {"title": title, "colorbar": cbar, "label_scale": 1}
    assert montage_shape(shapes, labelled, ncols, pad, **kwargs) == expected
    # Every tile pixel lands in the picture.
    assert np.count_nonzero(np.all(image == 7, axis=2)) == n * th * tw


@pytest.mark.parametrize(("n", "grid"), [(1, (1, 1)), (4, (2, 2)), (5, (2, 3)), (7, (3, 3))])
def test_default_grid_is_roughly_square(n: int, grid: tuple[int, int]) -> None:
    h, w = montage_shape([(10, 10, 3)] * n, labelled=False, pad=0)
    assert (h // 10, w // 10) == grid


def test_labels_put_ink_in_the_label_band_only() -> None:
    tiles = [np.zeros((20, 30, 3), np.uint8) for _ in range(4)]
    pad = 2
    image = montage(tiles, [f"ch{i}" for i in range(4)], ncols=2, pad=pad, label_scale=1)
    ink = np.all(image == INK, axis=2)
    cell_h, cell_w = 10 + 20, 30
    for i in range(4):
        row, col = divmod(i, 2)
        y = pad + row * (cell_h + pad)
        x = pad + col * (cell_w + pad)
        assert ink[y : y + 10, x : x + cell_w].any(), i  # the label band has ink
        assert not ink[y + 10 : y + cell_h, x : x + cell_w].any(), i  # the tile has none
        # The tile itself is where the formula says.
        assert np.all(image[y + 10 : y + cell_h, x : x + cell_w] == 0)
    unlabelled = montage(tiles, None, ncols=2, pad=pad)
    assert not np.all(unlabelled == INK, axis=2).any()


def test_long_labels_stay_inside_their_cell() -> None:
    tiles = [np.zeros((10, 24, 3), np.uint8)] * 2
    image = montage(tiles, ["a_very_long_label_indeed"] * 2, ncols=2, pad=3, label_scale=1)
    ink = np.all(image == INK, axis=2)
    assert not ink[:, :3].any()
    assert not ink[:, 3 + 24 : 3 + 24 + 3].any()  # the gap between the two cells
    assert ink[:, 3 : 3 + 24].any()


def test_mixed_tile_sizes_are_centred() -> None:
    big = np.full((10, 10, 3), 1, np.uint8)
    small = np.full((4, 6, 3), 2, np.uint8)
    image = montage([big, small], ncols=2, pad=0)
    assert image.shape == (10, 20, 3)
    assert np.all(image[3:7, 12:18] == 2)
    assert np.count_nonzero(np.all(image == 2, axis=2)) == 24


def test_auto_label_scale_grows_with_tiles() -> None:
    small = montage_shape([(50, 50, 3)], labelled=True, pad=0)
    large = montage_shape([(400, 400, 3)], labelled=True, pad=0)
    assert small[0] - 50 == 10
    assert large[0] - 400 == 30  # scale 3 for 400 px tiles


def test_montage_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one tile"):
        montage([])
    with pytest.raises(ValueError, match="2 labels for 1 tiles"):
        montage([np.zeros((2, 2, 3), np.uint8)], ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        montage([np.zeros((2, 2, 3), np.float32)])


def test_background_shows_between_tiles() -> None:
    image = montage([np.full((4, 4, 3), 255, np.uint8)] * 2, ncols=2, pad=2)
    assert image[0, 0].tolist() == list(BACKGROUND)
    assert image[3, 7].tolist() == list(BACKGROUND)  # the gap between the tiles


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", ["io/render.py", "core/kernels.py"])
def test_pure_numpy_modules_do_not_import_pillow(module: str) -> None:
    roots = imported_roots(Path(render.__file__).parents[1] / module)
    assert "numpy" in roots
    assert roots.isdisjoint({"PIL", "typer", "rich", "scipy"})
