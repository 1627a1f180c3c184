"""The colour bar under a grid: the colormap over ``[vmin, vmax]``, its end values, and
whether (and how far) the data reach beyond them.

Layout, top to bottom: the bar (with a triangle at each end whose values are clipped, in
that end's colour, as matplotlib's ``extend`` arrows), the tick line (``vmin``, 0 when
inside, ``vmax``), then - when the true data extent is given - one info line:
``<note> · data min A, max B · clipped above`` (or ``below`` / ``at both ends``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cbr_cli.io.render.colorize import colorize, solid
from cbr_cli.io.render.colormaps import Colormap, get_colormap
from cbr_cli.io.render.text import INK, MUTED, TextItem, draw_texts, fit_text, line_height
from cbr_cli.io.render.text import text_width as _text_width

__all__ = ["BACKGROUND", "Colorbar", "colorbar", "colorbar_height", "format_value"]

BACKGROUND = (40, 40, 40)
"""Picture background: dark grey, so white (zero) tiles stay visible."""
_GAP = 2


class Colorbar(NamedTuple):
    """What a colour bar shows: ``cmap`` over ``[vmin, vmax]``.

    ``data_min``/``data_max`` (the true extent) add the info line and the clipping
    triangles; ``note`` starts the info line (e.g. ``range p99.5 of |x|``); ``ticks``
    replaces the three tick labels (e.g. ``("-r", "0", "+r")`` for per-panel ranges).
    """

    cmap: str | Colormap
    vmin: float
    vmax: float
    data_min: float | None = None
    data_max: float | None = None
    note: str | None = None
    ticks: tuple[str, str, str] | None = None


def format_value(v: float) -> str:
    """A tick value, 3 significant digits: ``-20.9``, ``0.0312``, ``1.5e+04``."""
    return f"{v:.3g}"


def _bar_height(size: int) -> int:
    return max(6, round(size * 0.9))


def colorbar_height(size: int, info: bool) -> int:
    """Height of :func:`colorbar`'s strip: bar, gap, tick line, and the info line if any."""
    return _bar_height(size) + _GAP + line_height(size) + (line_height(size) if info else 0)


def _clip_words(low: bool, high: bool) -> str:
    if low and high:
        return "clipped at both ends"
    return "clipped above" if high else "clipped below" if low else "nothing clipped"


def colorbar(
    cmap: str | Colormap,
    vmin: float,
    vmax: float,
    width: int,
    size: int = 12,
    background: Sequence[int] = BACKGROUND,
    *,
    data_min: float | None = None,
    data_max: float | None = None,
    note: str | None = None,
    ticks: tuple[str, str, str] | None = None,
) -> np.ndarray:
    """A horizontal colour strip with its end values (and 0, if inside) written below.

    Returns
    -------
    strip : ndarray of shape (colorbar_height(size, info), width, 3), uint8
        ``info`` is whether ``data_min`` and ``data_max`` are given.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, but got {width}")
    lut = get_colormap(cmap).lut
    info = data_min is not None and data_max is not None
    bar_h = _bar_height(size)
    out = solid(colorbar_height(size, info), width, background)
    arrow = min(bar_h, max(0, (width - 2) // 4))  # room kept for the clipping triangles
    x0, x1 = arrow + 1 if arrow else 0, width - (arrow + 1 if arrow else 0)
    values = np.linspace(vmin, vmax, max(1, x1 - x0))
    out[:bar_h, x0:x1] = colorize(values, vmin, vmax, cmap)[None, :, :]
    low = info and data_min < vmin  # type: ignore[operator]
    high = info and data_max > vmax  # type: ignore[operator]
    if arrow:
        rows = np.arange(bar_h)[:, None]
        half = (bar_h - 1) / 2
        cols = np.arange(arrow)[None, :]
        # A triangle pointing outwards: full height at the bar, a point at the far end.
        reach = (cols + 0.5) * (half + 0.5) / arrow
        outline = np.abs(rows - half) <= reach
        inside = (np.abs(rows - half) <= reach - 1.5) & (cols >= 1)  # a light rim: dark ends
        for clipped, side, colour in ((low, slice(0, arrow), lut[0]), (high, None, lut[255])):
            if not clipped:
                continue
            flip = side is None
            region = out[:bar_h, width - arrow :] if flip else out[:bar_h, side]
            region[outline[:, ::-1] if flip else outline] = MUTED
            region[inside[:, ::-1] if flip else inside] = colour

    y = bar_h + _GAP
    left, middle, right = ticks or (format_value(vmin), "0", format_value(vmax))
    items: list[TextItem] = [(left, y, x0, INK, size)]
    right_w = _text_width(right, size)
    items.append((right, y, max(0, x1 - right_w), INK, size))
    if ticks is not None or vmin < 0 < vmax:
        if ticks is None:
            centre = x0 + round((0 - vmin) / (vmax - vmin) * (x1 - x0 - 1))
        else:
            centre = (x0 + x1) // 2
        mid_w = _text_width(middle, size)
        start = centre - mid_w // 2
        if start > x0 + _text_width(left, size) + 4 and start + mid_w < x1 - right_w - 4:
            items.append((middle, y, start, INK, size))
    if info:
        extent = f"data min {format_value(data_min)}, max {format_value(data_max)}"  # type: ignore[arg-type]
        line = " · ".join(p for p in (note, extent, _clip_words(low, high)) if p)
        items.append((fit_text(line, width, size), y + line_height(size), 0, MUTED, size))
    draw_texts(out, items)
    return out
