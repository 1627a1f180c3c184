"""The kernels picture: colour patches for RGB first layers, pair tiles, per-filter sums."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cbr_cli.io.render.colormaps import COLORMAPS
from cbr_cli.io.render.kernel_picture import kernel_layout, kernels_picture

RED_END = COLORMAPS["rdbu"].lut[255]


def blobs(image: np.ndarray, colour) -> list[tuple[float, float, int]]:
    """Connected regions of exactly ``colour``: (centre y, centre x, pixels), row-major."""
    mask = np.all(image == np.asarray(colour, np.uint8), axis=2)
    labels, n = ndimage.label(mask)
    centres = ndimage.center_of_mass(mask, labels, range(1, n + 1))
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return [(float(y), float(x), int(s)) for (y, x), s in zip(centres, sizes, strict=True)]


@pytest.mark.parametrize(
    ("shape", "rgb", "layout"),
    [
        ((8, 3, 5, 5), None, "rgb"),
        ((8, 3, 5, 5), False, "pairs"),
        ((4, 1, 3, 3), None, "single"),
        ((4, 8, 3, 3), None, "pairs"),
        ((4, 9, 3, 3), None, "sum"),
    ],
)
def test_layout_choice(shape, rgb, layout) -> None:
    assert kernel_layout(shape, rgb) == layout


def test_colour_patches_show_each_filters_rgb_weights() -> None:
    w = np.zeros((2, 3, 5, 5))
    w[0, 0, 2, 2] = 1.0  # filter 0: red centre
    w[1, 2, 0, 0] = -2.0  # filter 1: negative blue in the corner
    image = kernels_picture(w, ["red", "anti-blue"])
    factor = 16  # ceil(80 / 5)
    (red,) = blobs(image, (255, 128, 128))
    (yellow,) = blobs(image, (128, 128, 0))
    assert red[2] == yellow[2] == factor * factor
    assert yellow[1] > red[1]  # the second filter is right of the first
    grey = [b for b in blobs(image, (128, 128, 128)) if b[2] > 100]  # not text anti-aliasing
    assert len(grey) == 2  # grey = 0 around them, one per patch


def test_pair_tiles_are_rows_per_output_and_columns_per_input() -> None:
    c_out, c_in = 3, 2
    w = np.zeros((c_out, c_in, 5, 5))
    for o in range(c_out):
        for i in range(c_in):
            w[o, i, o, i] = 1.0
    image = kernels_picture(w, [f"k{o}" for o in range(c_out)])
    found = blobs(image, RED_END)
    assert [s for *_, s in found] == [16 * 16] * (c_out * c_in)
    ys = np.array([y for y, _, _ in found]).reshape(c_out, c_in)
    xs = np.array([x for _, x, _ in found]).reshape(c_out, c_in)
    assert np.all(np.diff(ys[:, 0]) > 80) and np.allclose(ys[:, 0], ys[:, 1])  # rows: outputs
    assert np.all(np.diff(xs, axis=1) > 80)  # columns: inputs


def test_many_inputs_are_summed_per_filter() -> None:
    w = np.zeros((4, 12, 5, 5))
    w[:, :, 1, 1] = 0.25  # sums to 3 in every filter
    w[:, 0, 3, 3] = -0.5
    image = kernels_picture(w)
    assert len(blobs(image, RED_END)) == 4
    assert len(blobs(image, COLORMAPS["rdbu"].lut[round(255 * (1 - 0.5 / 3) / 2)])) <= 4


def test_small_kernels_print_their_weights_and_names_label_the_tiles() -> None:
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 1.0
    with_numbers = kernels_picture(w, ["a"])
    (centre,) = blobs(with_numbers, RED_END)
    assert centre[2] < 32 * 32  # the digit "1" is drawn inside the red cell
    other_name = kernels_picture(w, ["sharpen"])
    assert with_numbers.shape == other_name.shape and not np.array_equal(with_numbers, other_name)


def test_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match=r"\(C_out, C_in, kH, kW\)"):
        kernels_picture(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="2 names for 3 output channels"):
        kernels_picture(np.zeros((3, 1, 3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="colour patches need 3 input channels"):
        kernels_picture(np.zeros((3, 2, 3, 3)), rgb=True)
