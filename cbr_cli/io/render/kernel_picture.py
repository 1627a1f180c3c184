"""A conv layer's weights as one picture.

Three layouts, chosen by :func:`kernel_layout`:

``rgb``
    A first layer on an RGB input: each filter as one colour patch (as in the AlexNet
    paper's figure of its first-layer filters): ``0.5 + w / (2 max|w|)`` per filter, so grey
    is 0, a reddish pixel weighs red positively, and a filter that treats the three
    channels alike (every bank kernel) is grey-scale.
``single``
    One input channel (a grey-scale first layer): one diverging tile per filter, range
    symmetric per filter.
``pairs``
    2 to :data:`PAIRS_MAX_INPUTS` input channels: one diverging tile per (out, in) pair,
    a row per output channel, a column per input, on a range symmetric per output filter
    (so the inputs' contributions to one output compare).
``sum``
    More inputs: one diverging tile per output channel, the sum over its inputs (the
    filter's response to a grey input, all channels equal), range symmetric per filter.

Tiles are enlarged by whole-pixel repetition; small kernels with large cells print their
weights in the cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cbr_cli.io.render.colorize import colorize
from cbr_cli.io.render.montage import montage
from cbr_cli.io.render.resample import enlarge_nearest
from cbr_cli.io.render.text import TextItem, draw_texts, text_width

__all__ = ["PAIRS_MAX_INPUTS", "kernel_layout", "kernels_picture"]

PAIRS_MAX_INPUTS = 8
"""Most input channels drawn as one tile per (out, in) pair."""
_CELL = 80  # smallest tile side, pixels (3x3 kernels: 96, so the weights fit as numbers)
_NUMBERS_MIN = 30  # pixels per weight from which the weights are printed in the cells


def kernel_layout(weight_shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """``rgb``, ``single``, ``pairs`` or ``sum`` for a weight of shape (C_out, C_in, kH, kW).

    ``rgb=None`` means: colour patches when there are 3 input channels.
    """
    c_in = weight_shape[1]
    if (rgb is None and c_in == 3) or rgb:
        if c_in != 3:
            raise ValueError(f"colour patches need 3 input channels, but got {c_in}")
        return "rgb"
    if c_in == 1:
        return "single"
    return "pairs" if c_in <= PAIRS_MAX_INPUTS else "sum"


def _symmetric(m: float) -> float:
    return m if m > 0 and math.isfinite(m) else 1.0


def _print_weights(tile: np.ndarray, values: np.ndarray, factor: int) -> None:
    """Write each weight (2 significant digits) in its cell, black or white for contrast."""
    size = max(9, min(16, factor // 3))
    items: list[TextItem] = []
    for (i, j), v in np.ndenumerate(values):
        text = f"{v:.2g}".replace("e-0", "e-").replace("e+0", "e")
        y0, x0 = i * factor, j * factor
        luminance = tile[y0 + factor // 2, x0 + factor // 2] @ np.array([0.299, 0.587, 0.114])
        colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        x = x0 + (factor - text_width(text, size)) // 2
        items.append((text, y0 + (factor - size) // 2 - 1, x, colour, size))
    draw_texts(tile, items)


def kernels_picture(
    weight: np.ndarray,
    names: Sequence[str] | None = None,
    *,
    layer: str = "",
    rgb: bool | None = None,
) -> np.ndarray:
    """A conv weight as one labelled picture (layouts in the module docstring).

    Parameters
    ----------
    weight : ndarray of shape (C_out, C_in, kH, kW)
        PyTorch's layout (``groups`` > 1: ``C_in`` is the inputs per group).
    names : sequence of str, optional
        One per output channel, e.g. the bank's kernel names; default ``c0``, ``c1``, ...
    layer : str
        For the title.
    rgb : bool, optional
        Force (True) or forbid (False) colour patches; default: when ``C_in == 3``.

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"weight must have shape (C_out, C_in, kH, kW), but got {w.shape}")
    c_out, c_in, kh, kw = w.shape
    if names is None:
        names = [f"c{o}" for o in range(c_out)]
    if len(names) != c_out:
        raise ValueError(f"got {len(names)} names for {c_out} output channels")
    layout = kernel_layout(w.shape, rgb)
    side = max(kh, kw)
    factor = max(1, math.ceil((96 if side <= 3 else _CELL) / side))
    head = f"{layer} conv weight" if layer else "conv weight"
    title = f"{head} · {c_out}x{c_in}x{kh}x{kw}"
    tiles: list[np.ndarray] = []
    labels: list[str] = []
    sublabels: list[str] | None = None
    ncols = None

    if layout == "rgb":
        for o in range(c_out):
            m = _symmetric(float(np.max(np.abs(w[o]))))
            patch = np.clip(0.5 + np.moveaxis(w[o], 0, -1) / (2 * m), 0.0, 1.0)
            tiles.append(enlarge_nearest(np.rint(patch * 255).astype(np.uint8), factor))
        labels = list(names)
        title += "\none colour patch per filter (R, G, B weights), grey = 0, scaled per filter"
    else:
        if layout == "pairs":
            blocks = [(o, i, w[o, i]) for o in range(c_out) for i in range(c_in)]
            ncols = c_in
            sublabels = [f"in{i}" for _, i, _ in blocks]
            title += "\na row per output channel, a column per input; range ±max|w| per filter"
        elif layout == "single":
            blocks = [(o, 0, w[o, 0]) for o in range(c_out)]
            title += "\none tile per filter; range ±max|w| per filter"
        else:
            blocks = [(o, None, w[o].sum(axis=0)) for o in range(c_out)]
            title += f"\nsum over the {c_in} inputs per filter (response to a grey input)"
        for o, i, values in blocks:
            m = _symmetric(float(np.max(np.abs(w[o]) if i is not None else np.abs(values))))
            tile = enlarge_nearest(colorize(values, -m, m, "rdbu"), factor)
            if factor >= _NUMBERS_MIN:
                _print_weights(tile, values, factor)
            tiles.append(tile)
            labels.append(names[o] if not i else "")
    return montage(tiles, labels, ncols, title=title, sublabels=sublabels)
