"""The palette path of the grid tiles gives the pixels of the numpy path."""

from __future__ import annotations

import numpy as np
import pytest

from cbr_cli.io.render.colorize import lookup
from cbr_cli.io.render.colormaps import get_colormap
from cbr_cli.io.render.resample import TileScale, fit_index_to_tile, fit_to_tile


@pytest.mark.parametrize("shape", [(37, 53), (256, 256), (5, 1), (1024, 300)])
@pytest.mark.parametrize(
    "scale", [TileScale(1, 1), TileScale(3, 1), TileScale(8, 1), TileScale(1, 4)]
)
@pytest.mark.parametrize("cmap", ["rdbu", "viridis"])
def test_palette_tiles_equal_numpy_tiles(shape, scale, cmap) -> None:
    rng = np.random.default_rng(sum(shape) + scale.down + scale.up)
    index = rng.integers(0, 256, shape, dtype=np.uint8)
    lut = get_colormap(cmap).lut
    expected = fit_to_tile(np.take(lut, index, axis=0), scale)
    np.testing.assert_array_equal(fit_index_to_tile(index, lut, scale), expected)
    np.testing.assert_array_equal(lookup(index, lut), np.take(lut, index, axis=0))
