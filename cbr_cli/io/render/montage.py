"""Tiles -> one labelled grid picture (like ``skimage.util.montage``, with text).

Geometry (all in pixels; ``s`` the font size, ``L = line_height(s)``)::

    cell     Th x Tw = the largest tile; smaller tiles are centred in their cell
    label    B = L + 2 above each tile when labels are given,
             plus S = line_height(round(0.85 s)) for a second line (sublabels)
    title    T = (lines * L + 2) when a title is given (lines split at "\\n")
    bar      K = colorbar_height(s, info) + pad when a colour bar is given
    W = max(ncols * Tw + (ncols + 1) * pad, widest title line + 2 * pad)
    H = T + nrows * (Th + B + S) + (nrows + 1) * pad + K

with ``nrows = ceil(n / ncols)`` and ``ncols = ceil(sqrt(n))`` by default. Text that does
not fit its cell is cut with ``…``. Marked tiles (dead channels) get a frame in
:data:`~cbr_cli.io.render.text.WARN` in the padding around them, and a label in that colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cbr_cli.io.render.colorbar import BACKGROUND, Colorbar, colorbar, colorbar_height
from cbr_cli.io.render.colorize import fill, solid
from cbr_cli.io.render.text import (
    INK,
    MUTED,
    WARN,
    TextItem,
    draw_texts,
    fit_text,
    line_height,
    text_width,
)

__all__ = ["BACKGROUND", "auto_font_size", "montage", "montage_shape"]


def auto_font_size(tile_w: int) -> int:
    """Label size for tiles ``tile_w`` wide: 12 px up to 168 px tiles, growing to 40."""
    return int(min(max(tile_w // 14, 12), 40))


def _sub_size(size: int) -> int:
    return max(9, round(size * 0.85))


@dataclass(frozen=True)
class _Layout:
    nrows: int
    ncols: int
    tile_h: int
    tile_w: int
    size: int
    label_band: int
    sub_band: int
    title_band: int
    colorbar_band: int
    grid_x: int
    height: int
    width: int


def _layout(
    tile_shapes: Sequence[tuple[int, ...]],
    labelled: bool,
    ncols: int | None,
    pad: int,
    title: str | None,
    colorbar_info: bool | None,
    font_size: int | None,
    sublabelled: bool,
) -> _Layout:
    n = len(tile_shapes)
    if n == 0:
        raise ValueError("montage needs at least one tile")
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    tile_h = max(s[0] for s in tile_shapes)
    tile_w = max(s[1] for s in tile_shapes)
    size = auto_font_size(tile_w) if font_size is None else int(font_size)
    lh = line_height(size)
    label_band = lh + 2 if labelled else 0
    sub_band = line_height(_sub_size(size)) if sublabelled else 0
    lines = title.split("\n") if title is not None else []
    title_band = len(lines) * lh + 2 if lines else 0
    colorbar_band = 0 if colorbar_info is None else colorbar_height(size, colorbar_info) + pad
    grid_w = ncols * tile_w + (ncols + 1) * pad
    width = max([grid_w, *(text_width(line, size) + 2 * pad for line in lines)])
    height = title_band + nrows * (tile_h + label_band + sub_band) + (nrows + 1) * pad
    height += colorbar_band
    return _Layout(
        nrows,
        ncols,
        tile_h,
        tile_w,
        size,
        label_band,
        sub_band,
        title_band,
        colorbar_band,
        (width - grid_w) // 2,
        height,
        width,
    )


def montage_shape(
    tile_shapes: Sequence[tuple[int, ...]],
    labelled: bool = True,
    ncols: int | None = None,
    pad: int = 4,
    *,
    title: str | None = None,
    colorbar_info: bool | None = None,
    font_size: int | None = None,
    sublabelled: bool = False,
) -> tuple[int, int]:
    """``(height, width)`` of :func:`montage`'s output (formula in the module docstring).

    ``colorbar_info``: None for no colour bar, else whether it has the info line.
    """
    lay = _layout(tile_shapes, labelled, ncols, pad, title, colorbar_info, font_size, sublabelled)
    return lay.height, lay.width


def montage(
    tiles: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    pad: int = 4,
    *,
    title: str | None = None,
    colorbar_spec: Colorbar | None = None,
    font_size: int | None = None,
    background: Sequence[int] = BACKGROUND,
    sublabels: Sequence[str] | None = None,
    marked: Sequence[bool] | None = None,
) -> np.ndarray:
    """Lay tiles out in a labelled grid, row by row, as one image.

    Parameters
    ----------
    tiles : sequence of ndarray of shape (h_i, w_i, 3), uint8
        Each is centred in a cell of the largest tile size ``(Th, Tw)``.
    labels : sequence of str, optional
        One per tile, drawn in a band above it.
    ncols : int, optional
        Columns; default ``ceil(sqrt(n))`` (roughly square).
    pad : int
        Background pixels around and between cells.
    title : str, optional
        Text above the grid; ``"\\n"`` starts a new line.
    colorbar_spec : Colorbar, optional
        A :func:`~cbr_cli.io.render.colorbar.colorbar` strip below the grid.
    font_size : int, optional
        Text size in pixels; default :func:`auto_font_size` of the tile width.
    sublabels : sequence of str, optional
        A second, smaller line under each label (e.g. the panel's range).
    marked : sequence of bool, optional
        Tiles to mark (dead channels): a frame around the tile and the label in WARN.

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8
        ``H``, ``W`` as in the module docstring (:func:`montage_shape`).
    """
    n = len(tiles)
    for name, seq in (("labels", labels), ("sublabels", sublabels), ("marks", marked)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"got {len(seq)} {name} for {n} tiles")
    for i, tile in enumerate(tiles):
        if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3:
            raise ValueError(f"tile {i} must be uint8 (H, W, 3), but got {tile.dtype} {tile.shape}")
    info = None
    if colorbar_spec is not None:
        info = colorbar_spec.data_min is not None and colorbar_spec.data_max is not None
    lay = _layout(
        [t.shape for t in tiles],
        labels is not None or sublabels is not None,
        ncols,
        pad,
        title,
        info,
        font_size,
        sublabels is not None,
    )
    s = lay.size
    out = solid(lay.height, lay.width, background)
    items: list[TextItem] = []
    if title is not None:
        for k, line in enumerate(title.split("\n")):
            colour = INK if k == 0 else MUTED
            items.append(
                (fit_text(line, lay.width - 2 * pad, s), 1 + k * line_height(s), pad, colour, s)
            )
    frame = min(2, pad)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, lay.ncols)
        cy = lay.title_band + pad + row * (lay.tile_h + lay.label_band + lay.sub_band + pad)
        cx = lay.grid_x + pad + col * (lay.tile_w + pad)
        mark = marked is not None and bool(marked[i])
        if labels is not None:
            items.append((fit_text(labels[i], lay.tile_w, s), cy, cx, WARN if mark else INK, s))
        if sublabels is not None:
            sub = _sub_size(s)
            y = cy + lay.label_band
            items.append((fit_text(sublabels[i], lay.tile_w, sub), y, cx, MUTED, sub))
        ty = cy + lay.label_band + lay.sub_band + (lay.tile_h - tile.shape[0]) // 2
        tx = cx + (lay.tile_w - tile.shape[1]) // 2
        if mark and frame:
            fill(
                out[
                    ty - frame : ty + tile.shape[0] + frame, tx - frame : tx + tile.shape[1] + frame
                ],
                WARN,
            )
        out[ty : ty + tile.shape[0], tx : tx + tile.shape[1]] = tile
    if colorbar_spec is not None:
        strip = colorbar(
            colorbar_spec.cmap,
            colorbar_spec.vmin,
            colorbar_spec.vmax,
            width=lay.width - 2 * pad,
            size=s,
            background=background,
            data_min=colorbar_spec.data_min,
            data_max=colorbar_spec.data_max,
            note=colorbar_spec.note,
            ticks=colorbar_spec.ticks,
        )
        y = lay.height - pad - strip.shape[0]
        out[y : y + strip.shape[0], pad : lay.width - pad] = strip
    draw_texts(out, items)
    return out
