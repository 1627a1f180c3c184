"""Feature maps to pictures: colormaps, value ranges, colouring, labelled montages.

Pure numpy; every image is a ``uint8`` array of shape ``(H, W, 3)``. Encoding to PNG is
:mod:`cbr_cli.io.writers`'s job.

Value ranges
------------
A *signed* map (it has negative values: conv and BN outputs) is shown with a diverging
colormap on the symmetric range ``[-m, m]``, ``m = max|x|``, so 0 is always the centre
colour (white). A *non-negative* map (after ReLU) is shown with a sequential colormap on
``[0, max]``, so 0 is always the darkest colour. :func:`map_ranges` computes ranges
per channel, per stage or globally.

Edge cases, on purpose:

* Ranges are computed from the finite values only.
* An all-zero map (a dead channel after ReLU) has no scale: it gets the unit range
  ``[-1, 1]`` (signed) or ``[0, 1]`` (non-negative), so it renders as the colour of 0 -
  white in a diverging map, the darkest colour in a sequential one - and nothing divides
  by zero. The same holds for a map with no finite values at all.
* A constant nonzero map ``v`` gets ``[-|v|, |v|]`` or ``[0, v]``: it renders at an end
  of the colormap (the colour of ``v`` on its own scale).
* ``NaN`` renders as :data:`NAN_COLOR` (magenta, in none of the colormaps);
  ``+inf`` / ``-inf`` and other values outside the range clip to the end colours.

Labels
------
Text is drawn with a built-in 5x8 bitmap font (lowercase letters, digits and
``_:-.,=+/()[]<>#%?~|`` and space; uppercase is drawn as lowercase, other characters as
``?``), so montages come out as one finished image without a font dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cbr_cli.errors import CbrError

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

NAN_COLOR = (255, 0, 255)
"""RGB of NaN pixels: magenta."""
BACKGROUND = (40, 40, 40)
"""Montage background: dark grey, so white (zero) tile borders stay visible."""
INK = (235, 235, 235)
"""Colour of label text."""
NORMALIZE_MODES = ("per-channel", "per-stage", "global")


# ---------------------------------------------------------------------------------------
# Colormaps


@dataclass(frozen=True, eq=False)
class Colormap:
    """A 256-entry lookup table. ``diverging`` maps are meant for ranges centred on 0."""

    name: str
    lut: np.ndarray  # (256, 3) uint8
    diverging: bool
    description: str

    def __repr__(self) -> str:
        kind = "diverging" if self.diverging else "sequential"
        return f"Colormap({self.name!r}, {kind})"


def _hex(colors: str) -> np.ndarray:
    return np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in colors.split()], float)


def _interpolate(anchors: np.ndarray, n: int) -> np.ndarray:
    """``n`` colours linearly interpolated (in sRGB) between equally spaced anchors."""
    x = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1)


def _sequential(anchors: str) -> np.ndarray:
    return np.rint(_interpolate(_hex(anchors), 256)).astype(np.uint8)


def _diverging(anchors: str) -> np.ndarray:
    # Odd number of anchors, the middle one white. Entries 0..127 run from the first anchor
    # to white and 128..255 from white to the last, so entries 127 and 128 are both pure
    # white: 0 at the centre of a symmetric range is white whichever way it rounds.
    a = _hex(anchors)
    mid = len(a) // 2
    lower = _interpolate(a[: mid + 1], 128)
    upper = _interpolate(a[mid:], 128)
    return np.rint(np.concatenate([lower, upper])).astype(np.uint8)


COLORMAPS: dict[str, Colormap] = {
    "rdbu": Colormap(
        "rdbu",
        # ColorBrewer RdBu (11 classes), reversed so negative is blue, centre pure white.
        _diverging("053061 2166ac 4393c3 92c5de d1e5f0 ffffff fddbc7 f4a582 d6604d b2182b 67001f"),
        diverging=True,
        description="diverging: blue negative, white zero, red positive (default, signed)",
    ),
    "viridis": Colormap(
        "viridis",
        # matplotlib's viridis sampled at 10 points, linearly interpolated.
        _sequential("440154 482878 3e4989 31688e 26828e 1f9e89 35b779 6ece58 b5de2b fde725"),
        diverging=False,
        description="sequential: dark purple to yellow (default, non-negative)",
    ),
    "magma": Colormap(
        "magma",
        _sequential("000004 180f3d 440f76 721f81 9e2f7f cd4071 f1605d fd9668 feca8d fcfdbf"),
        diverging=False,
        description="sequential: black to pale yellow",
    ),
    "gray": Colormap(
        "gray",
        np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1),
        diverging=False,
        description="sequential: black to white",
    ),
}
"""Colormaps by name."""


def get_colormap(name: str | Colormap) -> Colormap:
    """The colormap called ``name`` (a :class:`Colormap` is passed through).

    Raises
    ------
    CbrError
        Unknown name, listing the choices.
    """
    if isinstance(name, Colormap):
        return name
    key = name.strip().lower()
    if key not in COLORMAPS:
        raise CbrError(f"colormap must be one of {list(COLORMAPS)}, but got colormap='{name}'")
    return COLORMAPS[key]


def default_colormap(signed: bool) -> Colormap:
    """``rdbu`` for signed maps, ``viridis`` for non-negative ones."""
    return COLORMAPS["rdbu" if signed else "viridis"]


# ---------------------------------------------------------------------------------------
# Value ranges


def _channels(x: np.ndarray) -> np.ndarray:
    """View ``(..., C, H, W)`` as ``(C, everything else)``."""
    a = np.asarray(x)
    if a.ndim < 3:
        raise ValueError(f"feature maps must have shape (..., C, H, W), but got {a.shape}")
    return np.moveaxis(a, -3, 0).reshape(a.shape[-3], -1)


def _finite_max(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Max over finite entries, and at least 0 (0 when there are none)."""
    return np.max(a, axis=axis, where=np.isfinite(a), initial=0.0)


def _range_from_magnitude(m: float, signed: bool) -> tuple[float, float]:
    m = float(m)
    if m == 0.0:
        m = 1.0  # all-zero (or no finite value): unit range, renders as the colour of 0
    return (-m, m) if signed else (0.0, m)


def is_signed(x: np.ndarray) -> bool:
    """True if any finite value is negative (such maps get a diverging colormap)."""
    a = np.asarray(x)
    return bool(np.any(a < 0, where=np.isfinite(a)))


def value_range(x: np.ndarray, signed: bool | None = None) -> tuple[float, float]:
    """The display range of one array: ``(-m, m)`` if signed, else ``(0, max)``.

    ``signed=None`` decides with :func:`is_signed`. See the module docstring for all-zero
    and non-finite data.
    """
    a = np.asarray(x)
    if signed is None:
        signed = is_signed(a)
    return _range_from_magnitude(_finite_max(np.abs(a) if signed else a), signed)


def map_ranges(
    stages: Sequence[np.ndarray],
    normalize: str = "per-stage",
    signed: bool | Sequence[bool] | None = None,
) -> list[list[tuple[float, float]]]:
    """Display ranges for every channel of every stage.

    Parameters
    ----------
    stages : sequence of ndarray of shape (..., C, H, W)
        Feature maps per stage (leading axes, e.g. a batch, are pooled).
    normalize : {"per-channel", "per-stage", "global"}
        ``per-channel``: each channel on its own scale. ``per-stage``: the channels of a
        stage share one scale (so they can be compared). ``global``: one magnitude
        ``m = max|x|`` over all stages; signed stages use ``[-m, m]``, others ``[0, m]``.
    signed : bool, sequence of bool (one per stage) or None
        Whether each stage is shown as signed; ``None`` decides per stage with
        :func:`is_signed`. Channels of one stage always share their signedness.

    Returns
    -------
    ranges : list of list of (vmin, vmax)
        ``ranges[s][c]`` for stage ``s``, channel ``c``; ``vmin < vmax`` always.

    Raises
    ------
    CbrError
        Unknown ``normalize``.
    """
    if normalize not in NORMALIZE_MODES:
        raise CbrError(
            f"normalize must be one of {list(NORMALIZE_MODES)}, but got normalize='{normalize}'"
        )
    if signed is None or isinstance(signed, bool):
        flags = [is_signed(s) if signed is None else signed for s in stages]
    else:
        flags = [bool(f) for f in signed]
        if len(flags) != len(stages):
            raise ValueError(f"got {len(flags)} signed flags for {len(stages)} stages")

    per_channel = []  # per stage: (C,) magnitudes
    for stage, flag in zip(stages, flags, strict=True):
        a = _channels(stage)
        per_channel.append(_finite_max(np.abs(a) if flag else a, axis=1))

    if normalize == "global":
        m = max((float(_finite_max(np.abs(_channels(s)))) for s in stages), default=0.0)
        return [
            [_range_from_magnitude(m, flag)] * len(mags)
            for mags, flag in zip(per_channel, flags, strict=True)
        ]
    if normalize == "per-stage":
        return [
            [_range_from_magnitude(_finite_max(mags), flag)] * len(mags)
            for mags, flag in zip(per_channel, flags, strict=True)
        ]
    return [
        [_range_from_magnitude(m, flag) for m in mags]
        for mags, flag in zip(per_channel, flags, strict=True)
    ]


# ---------------------------------------------------------------------------------------
# Colouring


def color_index(
    channel: np.ndarray, vmin: float, vmax: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Colormap indices of a map: ``vmin`` -> 0, ``vmax`` -> 255, linear, rounded, clipped.

    Returns
    -------
    index : ndarray of the shape of ``channel``, uint8
    nan : ndarray of bool or None
        Where ``channel`` is NaN (its index there is meaningless), or None if nowhere.

    Raises
    ------
    CbrError
        Non-finite range or ``vmin >= vmax``.
    """
    lo, hi = float(vmin), float(vmax)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise CbrError(f"the colour range needs finite vmin < vmax, but got [{vmin}, {vmax}]")
    x = np.asarray(channel)
    if x.dtype != np.float32:  # float32 maps are coloured in float32 (4x less traffic)
        x = x.astype(np.float64)
    span = hi - lo  # Python floats: inf, not an error, for ranges wider than the float max
    # One buffer, in place: t = clip((x - lo) / span * 255, 0, 255), rounded to an index.
    # NaN survives clip and is reported separately; the cast of NaN is then irrelevant.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if span > float(np.finfo(x.dtype).max):  # halve all so the span is representable
            lo, span = lo / 2, hi / 2 - lo / 2
            x = x / 2
        t = np.subtract(x, x.dtype.type(lo))
        t /= x.dtype.type(span)  # divide first: 255 / span overflows for tiny spans
        t *= 255
        np.clip(t, 0, 255, out=t)
        np.rint(t, out=t)
        index = t.astype(np.uint8)
    nan = np.isnan(x)
    return index, (nan if nan.any() else None)


def colorize(
    channel: np.ndarray, vmin: float, vmax: float, cmap: str | Colormap = "rdbu"
) -> np.ndarray:
    """Map values to colours: ``vmin`` -> first colour, ``vmax`` -> last, linear between.

    Parameters
    ----------
    channel : ndarray of shape (H, W)
        Any real dtype; any shape works and gains a trailing colour axis.
    vmin, vmax : float
        Finite, ``vmin < vmax``. Values outside (and +-inf) clip to the end colours.
    cmap : str or Colormap

    Returns
    -------
    rgb : ndarray of shape (H, W, 3), uint8
        ``NaN`` pixels are :data:`NAN_COLOR`.

    Raises
    ------
    CbrError
        Non-finite range or ``vmin >= vmax``.
    """
    lut = get_colormap(cmap).lut
    index, nan = color_index(channel, vmin, vmax)
    rgb = np.take(lut, index, axis=0)
    if nan is not None:
        rgb[nan] = NAN_COLOR
    return rgb


# ---------------------------------------------------------------------------------------
# Bitmap font: 5 columns x 8 rows per glyph ("#" ink), row 6 is the baseline, row 7 holds
# descenders. Rows are separated by spaces; missing trailing rows are blank.

GLYPH_H, GLYPH_W = 8, 5
_ADVANCE = GLYPH_W + 1  # one blank column between characters

_FONT_ROWS = {
    " ": "",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "a": "..... ..... .###. ....# .#### #...# .####",
    "b": "#.... #.... #.##. ##..# #...# #...# ####.",
    "c": "..... ..... .###. #.... #.... #...# .###.",
    "d": "....# ....# .##.# #..## #...# #...# .####",
    "e": "..... ..... .###. #...# ##### #.... .###.",
    "f": "..##. .#..# .#... ###.. .#... .#... .#...",
    "g": "..... ..... .#### #...# #...# .#### ....# .###.",
    "h": "#.... #.... #.##. ##..# #...# #...# #...#",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
    "j": "...#. ..... ..##. ...#. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "m": "..... ..... ##.#. #.#.# #.#.# #...# #...#",
    "n": "..... ..... #.##. ##..# #...# #...# #...#",
    "o": "..... ..... .###. #...# #...# #...# .###.",
    "p": "..... ..... ####. #...# #...# ####. #.... #....",
    "q": "..... ..... .#### #...# #...# .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #....",
    "s": "..... ..... .###. #.... .###. ....# ####.",
    "t": ".#... .#... ###.. .#... .#... .#..# ..##.",
    "u": "..... ..... #...# #...# #...# #..## .##.#",
    "v": "..... ..... #...# #...# #...# .#.#. ..#..",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#.",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...#",
    "y": "..... ..... #...# #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... #####",
    "_": "..... ..... ..... ..... ..... ..... ..... #####",
    "-": "..... ..... ..... .###.",
    ":": "..... ..... ..#.. ..... ..... ..#..",
    ".": "..... ..... ..... ..... ..... ..... ..#..",
    ",": "..... ..... ..... ..... ..... ..#.. ..#.. .#...",
    "=": "..... ..... ##### ..... ##### .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#..",
    "/": "....# ...#. ...#. ..#.. .#... .#... #....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "[": ".###. .#... .#... .#... .#... .#... .###.",
    "]": ".###. ...#. ...#. ...#. ...#. ...#. .###.",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "~": "..... ..... .#... #.#.# ...#.",
    "|": "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
}


def _parse_font(rows_by_char: dict[str, str]) -> dict[str, np.ndarray]:
    font = {}
    for char, text in rows_by_char.items():
        rows = text.split()
        rows += ["....."] * (GLYPH_H - len(rows))
        font[char] = np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    return font


FONT = _parse_font(_FONT_ROWS)
"""Glyph bitmaps, ``(8, 5)`` bool arrays by character."""


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """``(height, width)`` in pixels of ``text`` drawn at integer ``scale``."""
    if not text:
        return (GLYPH_H * scale, 0)
    return (GLYPH_H * scale, (len(text) * _ADVANCE - 1) * scale)


def draw_text(
    image: np.ndarray,
    text: str,
    y: int,
    x: int,
    color: Sequence[int] = INK,
    scale: int = 1,
) -> None:
    """Draw ``text`` into ``image`` (H, W, 3) in place, top-left corner at ``(y, x)``.

    Ink outside the image is clipped.
    """
    height, width = image.shape[:2]
    for i, char in enumerate(text.lower()):
        glyph = FONT.get(char, FONT["?"])
        if scale > 1:
            glyph = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        gy, gx = y, x + i * _ADVANCE * scale
        # Clip the glyph to the image.
        y0, x0 = max(gy, 0), max(gx, 0)
        y1, x1 = min(gy + glyph.shape[0], height), min(gx + glyph.shape[1], width)
        if y0 >= y1 or x0 >= x1:
            continue
        mask = glyph[y0 - gy : y1 - gy, x0 - gx : x1 - gx]
        image[y0:y1, x0:x1][mask] = color


def _fit(text: str, width: int, scale: int) -> str:
    """``text`` cut to ``width`` pixels, ending in ``~`` when cut."""
    max_chars = (width + scale) // (_ADVANCE * scale)
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "~" if max_chars > 0 else ""


# ---------------------------------------------------------------------------------------
# Colour bar and montage


class Colorbar(NamedTuple):
    """What a montage's colour bar shows: a colormap over ``[vmin, vmax]``."""

    cmap: str | Colormap
    vmin: float
    vmax: float


def _format_value(v: float) -> str:
    return f"{v:.3g}"


def colorbar(
    cmap: str | Colormap,
    vmin: float,
    vmax: float,
    width: int,
    scale: int = 1,
    background: Sequence[int] = BACKGROUND,
) -> np.ndarray:
    """A horizontal colour strip with its end values (and 0, if inside) written below.

    Returns
    -------
    strip : ndarray of shape (GLYPH_H * scale * 2 + scale, width, 3), uint8
        A bar ``GLYPH_H * scale`` tall, a ``scale`` gap, then one line of labels.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, but got {width}")
    bar_h = GLYPH_H * scale
    out = np.empty((2 * bar_h + scale, width, 3), dtype=np.uint8)
    out[:] = background
    values = np.linspace(vmin, vmax, width)
    out[:bar_h] = colorize(values, vmin, vmax, cmap)[None, :, :]
    label_y = bar_h + scale
    low, high = _format_value(vmin), _format_value(vmax)
    draw_text(out, low, label_y, 0, scale=scale)
    high_w = text_size(high, scale)[1]
    draw_text(out, high, label_y, width - high_w, scale=scale)
    if vmin < 0 < vmax:
        zero_x = round((0 - vmin) / (vmax - vmin) * (width - 1))
        zero_w = text_size("0", scale)[1]
        left = zero_x - zero_w // 2
        # Only when it does not collide with the end labels.
        if left > text_size(low, scale)[1] + scale and left + zero_w < width - high_w - scale:
            draw_text(out, "0", label_y, left, scale=scale)
    return out


def _auto_scale(cell_w: int) -> int:
    """Label scale: 1 for tiles up to ~200 px wide, growing to 4 for large tiles."""
    return int(min(max(cell_w // 200 + 1, 1), 4))


@dataclass(frozen=True)
class _Layout:
    nrows: int
    ncols: int
    tile_h: int
    tile_w: int
    scale: int
    label_band: int
    title_band: int
    colorbar_band: int
    height: int
    width: int


def _layout(
    tile_shapes: Sequence[tuple[int, ...]],
    labelled: bool,
    ncols: int | None,
    pad: int,
    title: bool,
    colorbar: bool,
    label_scale: int | None,
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
    scale = _auto_scale(tile_w) if label_scale is None else label_scale
    band = (GLYPH_H + 2) * scale
    label_band = band if labelled else 0
    title_band = band if title else 0
    colorbar_band = (2 * GLYPH_H + 1) * scale + pad if colorbar else 0
    height = title_band + nrows * (tile_h + label_band) + (nrows + 1) * pad + colorbar_band
    width = ncols * tile_w + (ncols + 1) * pad
    return _Layout(
        nrows, ncols, tile_h, tile_w, scale, label_band, title_band, colorbar_band, height, width
    )


def montage_shape(
    tile_shapes: Sequence[tuple[int, ...]],
    labelled: bool = True,
    ncols: int | None = None,
    pad: int = 4,
    *,
    title: bool = False,
    colorbar: bool = False,
    label_scale: int | None = None,
) -> tuple[int, int]:
    """``(height, width)`` of :func:`montage`'s output; see there for the formula."""
    lay = _layout(tile_shapes, labelled, ncols, pad, title, colorbar, label_scale)
    return lay.height, lay.width


def montage(
    tiles: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    pad: int = 4,
    *,
    title: str | None = None,
    colorbar_spec: Colorbar | None = None,
    label_scale: int | None = None,
    background: Sequence[int] = BACKGROUND,
) -> np.ndarray:
    """Lay tiles out in a labelled grid, row by row, as one image.

    Parameters
    ----------
    tiles : sequence of ndarray of shape (h_i, w_i, 3), uint8
        Each is centred in a cell of the largest tile size ``(Th, Tw)``.
    labels : sequence of str, optional
        One per tile, drawn in a band above it (cut with ``~`` when too long).
    ncols : int, optional
        Columns; default ``ceil(sqrt(n))`` (roughly square). ``nrows = ceil(n / ncols)``.
    pad : int
        Background pixels around and between cells.
    title : str, optional
        One line of text above the grid.
    colorbar_spec : Colorbar, optional
        A :func:`colorbar` strip below the grid, as wide as the grid.
    label_scale : int, optional
        Integer text magnification; default grows with the tile width (1 up to 199 px).

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8
        With ``s`` the label scale and ``B = (8 + 2) * s`` the height of a text band::

            W = ncols * Tw + (ncols + 1) * pad
            H = nrows * (Th + B * labelled) + (nrows + 1) * pad
                + B * (title given) + ((2 * 8 + 1) * s + pad) * (colorbar given)
    """
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"got {len(labels)} labels for {len(tiles)} tiles")
    for i, tile in enumerate(tiles):
        if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3:
            raise ValueError(f"tile {i} must be uint8 (H, W, 3), but got {tile.dtype} {tile.shape}")
    lay = _layout(
        [t.shape for t in tiles],
        labels is not None,
        ncols,
        pad,
        title is not None,
        colorbar_spec is not None,
        label_scale,
    )
    s = lay.scale
    out = np.empty((lay.height, lay.width, 3), dtype=np.uint8)
    out[:] = background
    if title is not None:
        draw_text(out, _fit(title, lay.width - 2 * pad, s), pad + s, pad, scale=s)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, lay.ncols)
        cy = lay.title_band + pad + row * (lay.tile_h + lay.label_band + pad)
        cx = pad + col * (lay.tile_w + pad)
        if labels is not None:
            draw_text(out, _fit(labels[i], lay.tile_w, s), cy + s, cx, scale=s)
        ty = cy + lay.label_band + (lay.tile_h - tile.shape[0]) // 2
        tx = cx + (lay.tile_w - tile.shape[1]) // 2
        out[ty : ty + tile.shape[0], tx : tx + tile.shape[1]] = tile
    if colorbar_spec is not None:
        strip = colorbar(*colorbar_spec, width=lay.width - 2 * pad, scale=s, background=background)
        y = lay.height - pad - strip.shape[0]
        out[y : y + strip.shape[0], pad : lay.width - pad] = strip
    return out
