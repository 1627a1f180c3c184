"""Feature maps -> pictures: colormaps, value ranges, colouring, grids, colour bars, text,
kernel pictures, histograms and the HTML report (issue 10).

Modules, one job each: :mod:`.colormaps` (lookup tables), :mod:`.ranges` (display ranges:
``--range max|pNN``, per-stage normalisation), :mod:`.colorize` (values -> colours),
:mod:`.text` (Pillow's scalable font), :mod:`.resample` (area-average shrink, nearest
enlarge), :mod:`.colorbar`, :mod:`.montage` (labelled grid layout), :mod:`.grid` (one
stage's channels as a finished grid), :mod:`.kernel_picture`, :mod:`.histograms`
(matplotlib, imported on use), :mod:`.report_context` and :mod:`.report` (Jinja2 HTML).
"""

from cbr_cli.io.render.colorbar import BACKGROUND, Colorbar, colorbar
from cbr_cli.io.render.colorize import color_index, colorize, lookup
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
    "lookup",
    "map_ranges",
    "montage",
    "montage_shape",
    "text_size",
    "value_range",
]
