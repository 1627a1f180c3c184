"""Colormaps: 256-entry lookup tables, diverging (centred on 0) or sequential.

A *signed* map (it has negative values: conv and BN outputs) is drawn with a diverging
map on a symmetric range, so 0 is always the centre colour (white); a non-negative map
(after ReLU) with a sequential one from 0, so 0 is always the darkest colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbr_cli.errors import CbrError

__all__ = ["COLORMAPS", "NAN_COLOR", "Colormap", "default_colormap", "get_colormap"]

NAN_COLOR = (255, 0, 255)
"""RGB of NaN pixels: magenta (in none of the colormaps)."""


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
