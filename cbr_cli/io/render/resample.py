"""Fitting coloured maps into grid tiles: shrink by area averaging, enlarge by repetition.

Shrinking averages the *colours* of each ``f x f`` block (Pillow's ``Image.reduce``, a box
filter, in sRGB): what the eye would see from further away. A one-pixel edge then still
darkens its block instead of vanishing, as it does when every f-th pixel is taken
(which aliases fine edges - Laplacian panels - away). Enlarging small maps repeats each
pixel ``u x u`` times (nearest neighbour), so the pixels stay visible as pixels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "TileScale",
    "downscale_area",
    "enlarge_nearest",
    "fit_index_to_tile",
    "fit_to_tile",
    "tile_scale",
]


class TileScale(NamedTuple):
    """A map is shown ``up`` times larger or ``down`` times smaller (one of them is 1)."""

    down: int
    up: int

    def describe(self) -> str:
        """``""`` at 1:1, else e.g. ``shown at 1/12 (area average)`` or ``shown 4x (nearest)``."""
        if self.down > 1:
            return f"shown at 1/{self.down} (area average)"
        if self.up > 1:
            return f"shown {self.up}x (nearest)"
        return ""


def tile_scale(shape: tuple[int, int], tile_max: int = 256, tile_min: int = 96) -> TileScale:
    """The integer factor that fits a map of ``shape`` (H, W) in ``[tile_min, tile_max]``.

    ``down = ceil(max(H, W) / tile_max)``; a map smaller than ``tile_min`` gets
    ``up = ceil(tile_min / max(H, W))``, capped so that it stays within ``tile_max``.
    """
    side = max(int(shape[0]), int(shape[1]), 1)
    if side > tile_max:
        return TileScale(math.ceil(side / tile_max), 1)
    if side < tile_min:
        return TileScale(1, max(1, min(math.ceil(tile_min / side), tile_max // side)))
    return TileScale(1, 1)


def downscale_area(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Each ``factor x factor`` block replaced by its mean colour.

    Parameters
    ----------
    rgb : ndarray of shape (H, W, 3), uint8
    factor : int >= 1

    Returns
    -------
    small : ndarray of shape (ceil(H / factor), ceil(W / factor), 3), uint8
        Blocks at the right and bottom edges that are cut short average what they hold.
    """
    if factor <= 1:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).reduce(int(factor)))


def enlarge_nearest(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel repeated ``factor x factor`` times: shape ``(H * f, W * f, 3)``."""
    if factor <= 1:
        return rgb
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def fit_to_tile(rgb: np.ndarray, scale: TileScale) -> np.ndarray:
    """``rgb`` shrunk or enlarged by ``scale`` (see :func:`tile_scale`)."""
    if scale.down > 1:
        return downscale_area(rgb, scale.down)
    return enlarge_nearest(rgb, scale.up)


def fit_index_to_tile(index: np.ndarray, lut: np.ndarray, scale: TileScale) -> np.ndarray:
    """``fit_to_tile(lut[index], scale)``, the same pixels, without a full-size RGB array
    in numpy: Pillow colours a palette image and shrinks it in C.

    Parameters
    ----------
    index : ndarray of shape (H, W), uint8
        Colormap indices (:func:`~cbr_cli.io.render.colorize.color_index`).
    lut : ndarray of shape (256, 3), uint8
    """
    from PIL import Image

    height, width = index.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(index, dtype=np.uint8))
    image.putpalette(np.ascontiguousarray(lut, dtype=np.uint8).tobytes())
    rgb = image.convert("RGB")
    if scale.down > 1:
        return np.asarray(rgb.reduce(int(scale.down)))
    return enlarge_nearest(np.asarray(rgb), scale.up)
