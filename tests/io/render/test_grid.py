"""Stage grids: area-average shrinking, nearest enlarging, per-panel ranges, dead marks."""

from __future__ import annotations

import numpy as np
import pytest

from cbr_cli.io.render.colorize import colorize
from cbr_cli.io.render.grid import GRID_TILE_MIN, grid_tile_scale, stage_grid
from cbr_cli.io.render.ranges import display_ranges
from cbr_cli.io.render.resample import (
    TileScale,
    downscale_area,
    enlarge_nearest,
    fit_to_tile,
    tile_scale,
)
from cbr_cli.io.render.text import WARN, line_height


def fine_edges(size: int = 1200, period: int = 12, offset: int = 5) -> np.ndarray:
    """A Laplacian-like map: one-pixel lines (+1 with -0.5 on each side), zero elsewhere,
    placed so that taking every ``period``-th pixel misses all of them."""
    x = np.zeros((size, size), np.float32)
    x[offset::period] = 1.0
    x[offset - 1 :: period] = -0.5
    x[offset + 1 :: period] = -0.5
    return x


def darkness(rgb: np.ndarray) -> float:
    """Mean ink per pixel: how far the colours are from white (the colour of 0)."""
    return float(np.mean(255.0 - rgb.astype(np.float64)))


def test_area_average_keeps_a_fine_edge_maps_energy() -> None:
    rgb = colorize(fine_edges(), -1.0, 1.0, "rdbu")
    full = darkness(rgb)
    assert full > 10.0
    shrunk = downscale_area(rgb, 12)
    assert shrunk.shape == (100, 100, 3)
    assert darkness(shrunk) == pytest.approx(full, rel=0.02)  # a box filter keeps the mean
    every_nth = rgb[::12, ::12]
    assert darkness(every_nth) < 0.01 * full  # the old subsampling: the edges are gone


def test_downscale_handles_ragged_edges_and_factor_one() -> None:
    rgb = np.zeros((25, 13, 3), np.uint8)
    rgb[-1, -1] = 240
    small = downscale_area(rgb, 4)
    assert small.shape == (7, 4, 3)
    assert small[-1, -1, 0] == 240  # the last block holds only that pixel
    assert downscale_area(rgb, 1) is rgb


def test_enlarge_nearest_repeats_pixels() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = enlarge_nearest(rgb, 4)
    assert big.shape == (8, 12, 3)
    np.testing.assert_array_equal(big[::4, ::4], rgb)
    np.testing.assert_array_equal(big[3, 11], rgb[0, 2])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3000, 2000), TileScale(12, 1)),
        ((508, 508), TileScale(2, 1)),
        ((256, 100), TileScale(1, 1)),
        ((96, 96), TileScale(1, 1)),
        ((20, 20), TileScale(1, 5)),
        ((1, 1), TileScale(1, 96)),
        ((1, 300), TileScale(2, 1)),
    ],
)
def test_tile_scale(shape: tuple[int, int], expected: TileScale) -> None:
    scale = tile_scale(shape)
    assert scale == expected
    side = max(shape)
    shown = -(-side // scale.down) * scale.up
    assert shown <= 256 and (shown >= GRID_TILE_MIN or scale.down > 1)


def test_tile_scale_describes_itself() -> None:
    assert TileScale(12, 1).describe() == "shown at 1/12 (area average)"
    assert TileScale(1, 5).describe() == "shown 5x (nearest)"
    assert TileScale(1, 1).describe() == ""


def stage(channels: int = 4, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((channels, size, size)).astype(np.float32)
    return x * np.arange(1, channels + 1, dtype=np.float32)[:, None, None]


def test_small_maps_are_enlarged_to_a_legible_tile() -> None:
    data = stage(8, 20)
    ranges = display_ranges([data], "per-stage", True, "p99.5")[0]
    grid = stage_grid(data, ranges, "rdbu", layer="layer1", stage="conv")
    assert grid.shape[1] >= 3 * 100  # three columns of 100 px tiles (20 px x 5)
    rgb = colorize(data[0], *ranges[0].as_tuple(), "rdbu")
    big = fit_to_tile(rgb, grid_tile_scale(8, (20, 20)))
    assert big.shape == (100, 100, 3)
    # The enlarged first tile is in the picture, pixel for pixel.
    corners = np.argwhere(np.all(grid == big[0, 0], axis=2))
    assert any(np.array_equal(grid[y : y + 100, x : x + 100], big) for y, x in corners)


def test_per_channel_grids_label_each_panel_with_its_range() -> None:
    data = stage()
    louder = data.copy()
    louder[1] *= 16  # a power of two: per-channel colours stay exactly the same

    def grid(x: np.ndarray) -> np.ndarray:
        ranges = display_ranges([x], "per-channel", True)[0]
        return stage_grid(x, ranges, "rdbu", normalize="per-channel")

    a, b = grid(data), grid(louder)
    assert a.shape == b.shape
    rows = np.flatnonzero(np.any(a != b, axis=(1, 2)))
    cols = np.flatnonzero(np.any(a != b, axis=(0, 2)))
    assert rows.size  # only the range label of panel 1 changed: one short line of text
    assert rows.max() - rows.min() < line_height(12)
    assert cols.min() > 40  # panel 1 is the second column


def test_dead_channels_are_marked() -> None:
    data = np.maximum(stage(4), 0)
    data[2] = 0.0
    ranges = display_ranges([data], "per-stage", False)[0]
    grid = stage_grid(data, ranges, "viridis", ["a", "b", "c", "d"])
    alive = data.copy()
    alive[2] = 1e-3
    unmarked = stage_grid(alive, display_ranges([alive], "per-stage", False)[0], "viridis")
    assert np.all(grid == WARN, axis=2).sum() > 4 * 100  # a frame around a 100 px tile
    assert np.all(unmarked == WARN, axis=2).sum() == 0
    explicit = stage_grid(data, ranges, "viridis", dead=[False] * 4)
    assert np.all(explicit == WARN, axis=2).sum() == 0


def test_stage_grid_rejects_mismatched_ranges() -> None:
    data = stage()
    with pytest.raises(ValueError, match="3 ranges for 4 channels"):
        stage_grid(data, display_ranges([data[:3]], "per-stage", True)[0], "rdbu")
