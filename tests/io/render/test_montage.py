"""Text from Pillow's font, the colour bar (with clipping marks) and the montage geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbr_cli.io.render.colorbar import BACKGROUND, Colorbar, colorbar, colorbar_height
from cbr_cli.io.render.colormaps import COLORMAPS
from cbr_cli.io.render.montage import montage, montage_shape
from cbr_cli.io.render.text import (
    WARN,
    draw_text,
    draw_texts,
    fit_text,
    font,
    line_height,
    printable,
    text_size,
    text_width,
)

# -- text ------------------------------------------------------------------------------


def test_text_changes_pixels_only_where_it_is_drawn() -> None:
    canvas = np.zeros((40, 200, 3), np.uint8)
    draw_text(canvas, "Layer1 BN", 10, 20, color=(255, 255, 255), size=16)
    ink = canvas.any(axis=2)
    h, w = text_size("Layer1 BN", 16)
    ys, xs = np.nonzero(ink)
    assert ink.sum() > 50  # the label is there
    assert ys.min() >= 10 and ys.max() < 10 + h and xs.min() >= 20 and xs.max() <= 20 + w
    assert not ink[:, :20].any() and not ink[:10].any()


def test_capitals_differ_from_lowercase() -> None:
    a = np.zeros((24, 60, 3), np.uint8)
    b = np.zeros((24, 60, 3), np.uint8)
    draw_text(a, "BN", 0, 0, size=16)
    draw_text(b, "bn", 0, 0, size=16)
    assert not np.array_equal(a, b)


def test_text_scales_with_the_size() -> None:
    assert line_height(32) > 1.8 * line_height(16)
    assert text_width("channel", 32) > 1.8 * text_width("channel", 16)


def test_missing_glyphs_become_look_alikes() -> None:
    assert printable("8×508×508, −3") == "8x508x508, -3"


def test_fit_text_cuts_with_an_ellipsis() -> None:
    long = "a_very_long_label_indeed"
    cut = fit_text(long, 60, 12)
    assert cut.endswith("…") and text_width(cut, 12) <= 60 and long.startswith(cut[:-1])
    assert fit_text("ok", 60, 12) == "ok"
    assert fit_text(long, 1, 12) == ""


LINES = st.tuples(
    st.sampled_from(["c0", "12:sobel_x", "±0.256 (data -0.207..0.352)", "Wg", "…", " ", ""]),
    st.integers(-20, 60),  # y
    st.integers(-40, 120),  # x: some lines cut at an edge, some overlapping
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.sampled_from([7, 10, 12, 16, 23]),
)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(LINES, max_size=6), shade=st.integers(0, 255))
def test_drawn_text_is_pillows_text_pixel_for_pixel(lines, shade) -> None:
    # The reference: Pillow's own ImageDraw.text, line by line, on the same picture.
    from PIL import Image, ImageDraw

    start = np.full((48, 100, 3), shade, np.uint8)
    start[:, ::3] = 255 - shade  # a background that is not flat
    expected = Image.fromarray(start)
    draw = ImageDraw.Draw(expected)
    for text, y, x, color, size in lines:
        draw.text((x, y), printable(text), font=font(size), fill=color)
    got = start.copy()
    draw_texts(got, lines)
    np.testing.assert_array_equal(got, np.asarray(expected))


def test_text_is_clipped_at_the_edges() -> None:
    canvas = np.zeros((5, 7, 3), np.uint8)
    draw_text(canvas, "hello", -3, -4, size=14)
    draw_text(canvas, "x", 100, 100)
    assert canvas.any()


# -- colour bar ------------------------------------------------------------------------


def test_colorbar_ends_and_labels() -> None:
    strip = colorbar("rdbu", -2.0, 2.0, width=200, size=12)
    assert strip.shape == (colorbar_height(12, info=False), 200, 3)
    lut = COLORMAPS["rdbu"].lut
    row = strip[2]
    bar = np.flatnonzero(np.any(row != BACKGROUND, axis=1))
    assert row[bar[0]].tolist() == lut[0].tolist() and row[bar[-1]].tolist() == lut[255].tolist()
    labels = strip[colorbar_height(12, info=False) - line_height(12) :]
    assert np.any(labels != BACKGROUND)


@pytest.mark.parametrize(
    ("data", "marks"),
    [
        ((-1.0, 1.0), (False, False)),
        ((-5.0, 1.0), (True, False)),
        ((-1, 9.0), (False, True)),
        ((-5.0, 9.0), (True, True)),
    ],
)
def test_colorbar_marks_clipping_with_end_triangles(data, marks) -> None:
    lut = COLORMAPS["rdbu"].lut
    strip = colorbar("rdbu", -1.0, 1.0, 200, 12, data_min=data[0], data_max=data[1])
    assert strip.shape[0] == colorbar_height(12, info=True)
    bar_h = 11
    left = np.all(strip[:bar_h, :bar_h] == lut[0], axis=2).sum()  # the reserved end columns
    right = np.all(strip[:bar_h, -bar_h:] == lut[255], axis=2).sum()
    assert (left > 10, right > 10) == marks
    if not any(marks):
        assert left == right == 0


def test_colorbar_info_line_prints_the_true_extent() -> None:
    plain = colorbar("viridis", 0.0, 3.0, 300, 12, data_min=0.0, data_max=3.0)
    clipped = colorbar("viridis", 0.0, 3.0, 300, 12, data_min=0.0, data_max=12.5)
    info = slice(colorbar_height(12, False), None)
    assert np.any(plain[info] != BACKGROUND)
    assert not np.array_equal(plain[info], clipped[info])  # different numbers and words
    assert np.array_equal(plain[: info.start], colorbar("viridis", 0.0, 3.0, 300, 12)[: info.start])


# -- montage ---------------------------------------------------------------------------


def geometry(n, th, tw, ncols, pad, labelled, title, cbar, size=12):
    """The documented size formula, restated."""
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    band = line_height(size) + 2
    h = nrows * (th + band * labelled) + (nrows + 1) * pad
    h += (line_height(size) + 2) * title + (colorbar_height(size, False) + pad) * cbar
    w = max(ncols * tw + (ncols + 1) * pad, text_width("stage", size) + 2 * pad if title else 0)
    return h, w


@settings(max_examples=40, deadline=None)
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
        font_size=12,
    )
    expected = geometry(n, th, tw, ncols, pad, labelled, title, cbar)
    assert image.shape == (*expected, 3) and image.dtype == np.uint8
    kwargs = {"title": "stage" if title else None, "colorbar_info": False if cbar else None}
    assert montage_shape(
        [t.shape for t in tiles], labelled, ncols, pad, font_size=12, **kwargs
    ) == (expected)
    if not labelled and not title:  # text anti-aliasing could make a pixel of value 7
        assert np.count_nonzero(np.all(image == 7, axis=2)) == n * th * tw


@pytest.mark.parametrize(("n", "grid"), [(1, (1, 1)), (4, (2, 2)), (5, (2, 3)), (7, (3, 3))])
def test_default_grid_is_roughly_square(n: int, grid: tuple[int, int]) -> None:
    h, w = montage_shape([(10, 10, 3)] * n, labelled=False, pad=0)
    assert (h // 10, w // 10) == grid


def test_labels_put_ink_in_the_label_band_only() -> None:
    tiles = [np.zeros((20, 60, 3), np.uint8) for _ in range(4)]
    pad, band = 2, line_height(12) + 2
    image = montage(tiles, [f"Ch{i}" for i in range(4)], ncols=2, pad=pad, font_size=12)
    ink = np.any(image != BACKGROUND, axis=2) & np.any(image != 0, axis=2)
    cell_h, cell_w = band + 20, 60
    for i in range(4):
        row, col = divmod(i, 2)
        y = pad + row * (cell_h + pad)
        x = pad + col * (cell_w + pad)
        assert ink[y : y + band, x : x + cell_w].any(), i  # the label band has ink
        assert np.all(image[y + band : y + cell_h, x : x + cell_w] == 0), i  # the tile is intact
    unlabelled = montage(tiles, None, ncols=2, pad=pad)
    colours = {tuple(c) for c in np.unique(unlabelled.reshape(-1, 3), axis=0).tolist()}
    assert colours == {(0, 0, 0), tuple(BACKGROUND)}  # no text at all


def test_long_labels_stay_inside_their_cell() -> None:
    tiles = [np.zeros((10, 40, 3), np.uint8)] * 2
    image = montage(tiles, ["a_very_long_label_indeed"] * 2, ncols=2, pad=3, font_size=12)
    ink = np.any(image != BACKGROUND, axis=2)
    band = slice(0, line_height(12))
    assert not ink[band, :3].any()
    assert not ink[band, 3 + 40 : 3 + 40 + 3].any()  # the gap between the two cells
    assert ink[band, 3 : 3 + 40].any()


def test_mixed_tile_sizes_are_centred() -> None:
    big = np.full((10, 10, 3), 1, np.uint8)
    small = np.full((4, 6, 3), 2, np.uint8)
    image = montage([big, small], ncols=2, pad=0)
    assert image.shape == (10, 20, 3)
    assert np.all(image[3:7, 12:18] == 2)
    assert np.count_nonzero(np.all(image == 2, axis=2)) == 24


def test_auto_font_grows_with_tiles() -> None:
    small = montage_shape([(50, 50, 3)], labelled=True, pad=0)
    large = montage_shape([(600, 600, 3)], labelled=True, pad=0)
    assert small[0] - 50 == line_height(12) + 2
    assert large[0] - 600 == line_height(40) + 2  # capped at 40 px


def test_marked_tiles_get_a_frame_and_sublabels_a_second_line() -> None:
    tiles = [np.zeros((30, 30, 3), np.uint8)] * 2
    plain = montage(tiles, ["a", "b"], ncols=2, pad=4, font_size=12)
    marked = montage(tiles, ["a", "b"], ncols=2, pad=4, font_size=12, marked=[False, True])
    frame = np.all(marked == WARN, axis=2) & ~np.all(plain == WARN, axis=2)
    ys, xs = np.nonzero(frame)
    assert xs.min() >= 4 + 30 and ys.size >= 4 * 30  # around the second tile only
    sub = montage(tiles, ["a", "b"], ncols=2, pad=4, font_size=12, sublabels=["±1", "±2"])
    assert sub.shape[0] > plain.shape[0]


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
