"""Compatibility shim: the rendering code lives in :mod:`cbr_cli.io.render` (issue 10).

Re-exports what ``apply.py`` and ``cli_options.py`` use today; the coordinator removes
this module once they import from the package.
"""

from __future__ import annotations

from cbr_cli.io.render.colorbar import BACKGROUND, Colorbar, colorbar
from cbr_cli.io.render.colorize import color_index, colorize
from cbr_cli.io.render.colormaps import (
    COLORMAPS,
    NAN_COLOR,
    Colormap,
    default_colormap,
    get_colormap,
)
from cbr_cli.io.render.montage import montage, montage_shape
from cbr_cli.io.render.ranges import NORMALIZE_MODES, is_signed, map_ranges, value_range
from cbr_cli.io.render.text import INK, draw_text, text_size

__all__ = [
    "BACKGROUND",
    "COLORMAPS",
    "INK",
    "NAN_COLOR",
    "NORMALIZE_MODES",
    "Colorbar",
    "Colormap",
    "color_index",
    "colorbar",
    "colorize",
    "default_colormap",
    "draw_text",
    "get_colormap",
    "is_signed",
    "map_ranges",
    "montage",
    "montage_shape",
    "text_size",
    "value_range",
]
