"""Text in pictures, with Pillow's bundled scalable font (``ImageFont.load_default(size=...)``).

The font (Aileron, embedded in Pillow >= 10.1) covers ASCII and most of Latin-1 but not,
e.g., ``×`` or ``−``: :func:`printable` maps those to ASCII look-alikes, so no label shows
a missing-glyph box. Text is anti-aliased onto the picture; sizes are in pixels (the font's
em size), a line is :func:`line_height` pixels tall.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import ImageFont

__all__ = [
    "INK",
    "MUTED",
    "WARN",
    "TextItem",
    "draw_text",
    "draw_texts",
    "fit_text",
    "font",
    "line_height",
    "printable",
    "text_size",
    "text_width",
]

INK = (235, 235, 235)
"""Colour of label text on the dark background."""
MUTED = (170, 170, 170)
"""Colour of secondary text (ranges, notes)."""
WARN = (255, 120, 90)
"""Colour of warnings in pictures: dead channels, clipped ranges."""
ELLIPSIS = "…"

_LOOKALIKES = str.maketrans({"×": "x", "−": "-", "–": "-", "—": "-", "µ": "u", "σ": "s"})

TextItem = tuple[str, int, int, Sequence[int], int]
"""``(text, y, x, color, size)``: one line of text, top-left corner at ``(y, x)``."""


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's default scalable font at ``size`` pixels (cached per size)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=max(1, int(size)))  # type: ignore[return-value]


def printable(text: str) -> str:
    """``text`` with characters the font lacks replaced by ASCII look-alikes."""
    return text.translate(_LOOKALIKES)


def line_height(size: int) -> int:
    """Pixels from the top of a line to the bottom of its descenders."""
    ascent, descent = font(size).getmetrics()
    return int(ascent + descent)


@lru_cache(maxsize=4096)
def text_width(text: str, size: int) -> int:
    """Advance width of ``text`` in pixels (cached: the same labels recur on every image)."""
    return int(np.ceil(font(size).getlength(printable(text))))


def text_size(text: str, size: int) -> tuple[int, int]:
    """``(height, width)`` in pixels of one line of ``text``."""
    return (line_height(size), text_width(text, size))


def fit_text(text: str, width: int, size: int) -> str:
    """``text``, cut to ``width`` pixels and ending in ``…`` when cut ("" if nothing fits)."""
    if text_width(text, size) <= width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with the ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_width(text[:mid] + ELLIPSIS, size) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + ELLIPSIS if lo > 0 else ""


@lru_cache(maxsize=4096)
def _ink(text: str, size: int) -> tuple[np.ndarray, int, int] | None:
    """The coverage (0-255) of one line of ``text`` as Pillow draws it with its top-left
    at ``(0, 0)``: an (h, w, 1) uint16 array cropped to the ink and the ink's ``(x, y)``
    offset from that corner; None for no ink. Cached: labels recur on every image."""
    from PIL import Image, ImageDraw

    face = font(size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), text, font=face
    )
    pad = 2  # textbbox holds all the ink (tested against Pillow); a margin for safety
    ox, oy = pad - min(left, 0), pad - min(top, 0)
    canvas = Image.new("L", (ox + max(right, 0) + pad, oy + max(bottom, 0) + pad), 0)
    ImageDraw.Draw(canvas).text((ox, oy), text, font=face, fill=255)
    box = canvas.getbbox()
    if box is None:
        return None
    mask = np.asarray(canvas.crop(box), dtype=np.uint16)[..., None]
    return mask, box[0] - ox, box[1] - oy


def draw_texts(image: np.ndarray, items: Iterable[TextItem]) -> None:
    """Draw lines of text into ``image`` of shape (H, W, 3), uint8, in place.

    Ink outside the image is clipped. Each line's coverage ``m`` is rendered once per
    text and size (:func:`_ink`) and blended in with its colour as Pillow's
    ``ImageDraw.text`` does (``fill_mask_L`` in its ``Paste.c``): ``(pixel * (255 - m) +
    colour * m) / 255``, rounded by ``DIV255``, so the pixels are the same; in numpy on
    the line's own rows and columns, with no copy of the picture into Pillow and back
    (that round trip was 3.5 of a 600x800 grid's 4.4 ms of labels).
    """
    height, width = image.shape[:2]
    for text, y, x, color, size in items:
        ink = _ink(printable(text), max(1, int(size)))
        if ink is None:
            continue
        mask, dx, dy = ink
        top, left = y + dy, x + dx
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + mask.shape[0], height), min(left + mask.shape[1], width)
        if y0 >= y1 or x0 >= x1:
            continue
        m = mask[y0 - top : y1 - top, x0 - left : x1 - left]
        region = image[y0:y1, x0:x1]
        # uint16 throughout: 255 * 255 + 128 and that plus its top byte fit in 16 bits.
        blend = region * (255 - m) + m * np.asarray(color, np.uint16) + 128
        blend += blend >> 8
        region[...] = blend >> 8


def draw_text(
    image: np.ndarray,
    text: str,
    y: int,
    x: int,
    color: Sequence[int] = INK,
    size: int = 12,
) -> None:
    """Draw one line of ``text`` into ``image`` (H, W, 3) in place, top-left at ``(y, x)``."""
    draw_texts(image, [(text, y, x, color, size)])
