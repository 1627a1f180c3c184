"""One stage's channels as a finished grid picture: coloured, resampled, labelled, with a
title that states the normalisation and scale, per-panel ranges and dead channels marked.

Tile size: with ``k = ceil(sqrt(C))`` columns, tiles are at most
``max(16, min(GRID_TILE_MAX, GRID_SIDE_MAX // k))`` pixels on a side (bigger maps shrink
by area averaging, :mod:`~cbr_cli.io.render.resample`) and at least ``GRID_TILE_MIN``
(smaller maps grow by whole-pixel repetition, so labels fit and pixels stay pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cbr_cli.io.render.colorbar import Colorbar, format_value
from cbr_cli.io.render.colorize import colorize
from cbr_cli.io.render.colormaps import Colormap, get_colormap
from cbr_cli.io.render.montage import montage
from cbr_cli.io.render.ranges import DEFAULT_RULE, DisplayRange, RangeRule, parse_range
from cbr_cli.io.render.resample import TileScale, fit_to_tile, tile_scale

__all__ = [
    "GRID_SIDE_MAX",
    "GRID_TILE_MAX",
    "GRID_TILE_MIN",
    "grid_from_tiles",
    "grid_tile_scale",
    "normalize_note",
    "range_label",
    "stage_grid",
]

GRID_TILE_MAX = 256
"""Largest side of a tile; bigger maps are shrunk (area average) for the grid only."""
GRID_TILE_MIN = 96
"""Smallest side of a tile; smaller maps are enlarged (nearest neighbour)."""
GRID_SIDE_MAX = 4096
"""Largest side of the tiles' area of a grid: many channels get smaller tiles."""


def grid_tile_scale(channels: int, shape: tuple[int, int]) -> TileScale:
    """How a stage of ``channels`` maps of ``shape`` (H, W) is scaled in its grid."""
    columns = math.ceil(math.sqrt(max(channels, 1)))
    tile_max = max(16, min(GRID_TILE_MAX, GRID_SIDE_MAX // columns))
    return tile_scale(shape, tile_max, min(GRID_TILE_MIN, tile_max))


def normalize_note(normalize: str, rule: RangeRule, signed: bool) -> str:
    """The sentence a picture states about its colour ranges."""
    how = rule.describe(signed)
    if normalize == "per-channel":
        return f"per-channel ranges ({how}): each panel on its own scale"
    if normalize == "global":
        return f"one range for all stages ({how})"
    return f"shared range ({how}): channels comparable"


def range_label(r: DisplayRange | tuple[float, float]) -> str:
    """A panel's range, e.g. ``±3.21`` or ``0-5.1``, with the data extent when clipped."""
    vmin, vmax = (r.vmin, r.vmax) if isinstance(r, DisplayRange) else r
    text = f"±{format_value(vmax)}" if vmin < 0 else f"0-{format_value(vmax)}"
    if isinstance(r, DisplayRange) and r.clipped:
        text += f" (data {format_value(r.data_min)}..{format_value(r.data_max)})"
    return text


def stage_grid(
    data: np.ndarray,
    ranges: Sequence[DisplayRange],
    cmap: str | Colormap,
    labels: Sequence[str] | None = None,
    *,
    layer: str = "",
    stage: str = "",
    normalize: str = "per-stage",
    rule: RangeRule | str = DEFAULT_RULE,
    dead: Sequence[bool] | None = None,
    colored: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """All channels of one stage output as one labelled grid.

    Parameters
    ----------
    data : ndarray of shape (C, H, W)
    ranges : sequence of DisplayRange, one per channel
        From :func:`~cbr_cli.io.render.ranges.display_ranges`.
    cmap : str or Colormap
    labels : sequence of str, optional
        Default ``c0``, ``c1``, ...
    layer, stage : str
        For the title, e.g. ``layer1`` and ``bn``.
    normalize : {"per-channel", "per-stage", "global"}
        How ``ranges`` were made; stated in the title. ``per-channel`` adds each panel's
        range under its label and a colour bar in units of that range.
    rule : RangeRule or str
        The range rule, stated in the title.
    dead : sequence of bool, optional
        Channels to mark; default: those whose data are all zero.
    colored : sequence of ndarray of shape (H, W, 3), uint8, optional
        The channels already coloured at full size (saves colouring them again).

    Returns
    -------
    image : ndarray of shape (Hg, Wg, 3), uint8
        See :func:`~cbr_cli.io.render.montage.montage` for the geometry.
    """
    channels, height, width = data.shape
    if len(ranges) != channels:
        raise ValueError(f"got {len(ranges)} ranges for {channels} channels")
    cmap = get_colormap(cmap)
    scale = grid_tile_scale(channels, (height, width))
    tiles = []
    for c in range(channels):
        rgb = colored[c] if colored is not None else colorize(data[c], *ranges[c].as_tuple(), cmap)
        tiles.append(fit_to_tile(rgb, scale))
    return grid_from_tiles(
        tiles,
        (channels, height, width),
        ranges,
        cmap,
        labels,
        layer=layer,
        stage=stage,
        normalize=normalize,
        rule=rule,
        dead=dead,
    )


def grid_from_tiles(
    tiles: Sequence[np.ndarray],
    shape: tuple[int, int, int],
    ranges: Sequence[DisplayRange],
    cmap: str | Colormap,
    labels: Sequence[str] | None = None,
    *,
    layer: str = "",
    stage: str = "",
    normalize: str = "per-stage",
    rule: RangeRule | str = DEFAULT_RULE,
    dead: Sequence[bool] | None = None,
) -> np.ndarray:
    """:func:`stage_grid` from tiles already coloured and fitted (``fit_to_tile`` with
    :func:`grid_tile_scale`), one channel at a time, so no full-size copy of every
    channel is held at once. ``shape`` is the stage's (C, H, W)."""
    channels, height, width = shape
    rule = parse_range(rule)
    cmap = get_colormap(cmap)
    signed = ranges[0].vmin < 0
    scale = grid_tile_scale(channels, (height, width))
    if labels is None:
        labels = [f"c{c}" for c in range(channels)]
    if dead is None:
        dead = [r.data_min == 0.0 and r.data_max == 0.0 for r in ranges]
    shown = [f"{label} · dead" if d else label for label, d in zip(labels, dead, strict=True)]

    head = " ".join(p for p in (layer, stage) if p)
    title = f"{head} · {channels}x{height}x{width}" if head else f"{channels}x{height}x{width}"
    notes = [normalize_note(normalize, rule, signed), scale.describe()]
    title += "\n" + " · ".join(n for n in notes if n)
    if normalize == "per-channel":
        ticks = ("-r", "0", "+r") if signed else ("0", "", "r")
        bar = Colorbar(cmap, -1.0 if signed else 0.0, 1.0, ticks=ticks)
        sublabels = [range_label(r) for r in ranges]
    else:
        bar = Colorbar(
            cmap,
            min(r.vmin for r in ranges),
            max(r.vmax for r in ranges),
            data_min=min(r.data_min for r in ranges),
            data_max=max(r.data_max for r in ranges),
            note=f"range {rule.describe(signed)}",
        )
        sublabels = None
    return montage(
        tiles, shown, title=title, colorbar_spec=bar, sublabels=sublabels, marked=list(dead)
    )
