"""The built-in kernel bank: the definitions of the named 2-D filters (no lookup).

Looking kernels up by name, parsing ``name:arg:arg`` and stacking them into weights is
:mod:`cbr_cli.core.kernels`.

Sign convention
---------------
Every kernel is a **cross-correlation** kernel, applied as PyTorch's ``conv2d``
applies its weights: without flipping, ``out[y, x] = sum_ij k[i, j] * img[y + i - c, x + j - c]``.
Rows grow downward and columns to the right (image coordinates), so:

* ``sobel_x`` / ``scharr_x`` / ``prewitt_x`` (left column negative, right column positive)
  respond **positively where intensity increases to the right**; on the ramp
  ``img = x`` they give 8, 32 and 6 respectively.
* ``sobel_y`` / ``scharr_y`` / ``prewitt_y`` (top row negative, bottom row positive)
  respond **positively where intensity increases downward**.
* ``kirsch_<d>`` and ``compass_<d>`` (Robinson) for ``d`` in n, ne, e, se, s, sw, w, nw
  respond most strongly where intensity increases **toward direction d** (n is up).
  Each is the previous one with its outer ring rotated 45 degrees clockwise, so
  ``compass_e == sobel_x`` and ``compass_s == sobel_y``.
* ``laplacian4`` / ``laplacian8`` and ``log`` have a **negative centre** (the usual
  discrete Laplacian): they are negative on bright blobs and positive on dark ones.
* ``emboss`` responds positively where intensity increases toward the bottom right.

Names and parameters
--------------------
A kernel is named ``name`` or ``name:arg:arg`` with positional parameters; an empty
argument keeps its default: ``box:5``, ``gaussian:7:1.5``, ``gaussian::2`` (5x5, sigma 2),
``log:9:1.4``. Names are case-insensitive. A *kernel set* (``sobel``, ``kirsch``,
``compass``, ``edges``, ...) names several kernels; :func:`expand_names`,
:func:`stack_kernels` and :func:`stack_shape` accept sets wherever they accept kernels.

Start-up cost
-------------
Importing this module does not import numpy (~130 ms): fixed kernels are stored as
nested tuples and turned into arrays only when built, and every kernel has a size rule,
so :func:`stack_shape` (all ``cbr shape`` needs) works without numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DIRECTIONS", "KERNELS", "KERNEL_SETS", "MAX_SIZE", "KernelDef", "Number", "Param"]

MAX_SIZE = 101
"""Largest side length a parametrised kernel may have."""

DIRECTIONS = ("n", "ne", "e", "se", "s", "sw", "w", "nw")
"""Compass directions, clockwise from north (up) in 45 degree steps."""

Number = int | float

Rows = tuple[tuple[int, ...], ...]
"""A fixed kernel's weights as nested tuples, row by row (kept numpy-free until built)."""


@dataclass(frozen=True)
class Param:
    """One positional kernel parameter: its type, default and the rule it must satisfy."""

    name: str
    kind: type  # int or float
    default: Number
    requirement: str  # completes "<name> must be ..."
    check: Callable[[Number], bool]


@dataclass(frozen=True)
class KernelDef:
    """A named kernel: a builder and a size rule, both taking its parameters by name.

    ``build`` returns the weights as an ndarray; ``shape`` returns their ``(kH, kW)``
    without numpy, so sizes are known without building (see :func:`stack_shape`).
    ``summary`` is a ``str.format`` template over the parameter names.
    """

    name: str
    summary: str
    build: Callable[..., np.ndarray]
    shape: Callable[..., tuple[int, int]]
    params: tuple[Param, ...] = ()


def _odd_size(default: int, minimum: int = 1) -> Param:
    return Param(
        "size",
        int,
        default,
        f"an odd integer in [{minimum}, {MAX_SIZE}]",
        lambda v: minimum <= v <= MAX_SIZE and v % 2 == 1,
    )


def _sigma(default: float) -> Param:
    return Param("sigma", float, default, "a finite number > 0", lambda v: 0 < v < math.inf)


def _square(size: int, **_: Number) -> tuple[int, int]:
    """Size rule of the parametrised kernels: ``size`` x ``size``."""
    return (size, size)


# ---------------------------------------------------------------------------------------
# Builders (float64 arithmetic, float32 result); numpy is imported on first use.


def _identity(size: int) -> np.ndarray:
    import numpy as np

    k = np.zeros((size, size), dtype=np.float64)
    k[size // 2, size // 2] = 1.0
    return k


def _box(size: int) -> np.ndarray:
    import numpy as np

    return np.full((size, size), 1.0 / (size * size))


def _gaussian(size: int, sigma: float) -> np.ndarray:
    import numpy as np

    r = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)


def _log(size: int, sigma: float) -> np.ndarray:
    import numpy as np

    # Samples of the Laplacian of the unit-mass Gaussian,
    #   (x^2 + y^2 - 2 sigma^2) / (2 pi sigma^6) * exp(-(x^2 + y^2) / (2 sigma^2)),
    # minus their mean so that the truncated kernel sums to exactly zero (flat areas -> 0).
    r = np.arange(size, dtype=np.float64) - size // 2
    rr = r[:, None] ** 2 + r[None, :] ** 2
    s2 = sigma * sigma
    k = (rr - 2.0 * s2) / (2.0 * math.pi * s2**3) * np.exp(-rr / (2.0 * s2))
    return k - k.mean()


def _transpose(rows: Rows) -> Rows:
    return tuple(zip(*rows, strict=True))


# The outer ring of a 3x3 kernel, clockwise from the top-left corner.
_RING = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))


def _ring_rotations(north: Sequence[int]) -> list[Rows]:
    """The 8 compass rotations (n, ne, ..., nw) of a 3x3 kernel given by its north ring.

    Rotation ``step`` moves every ring value ``step`` places clockwise (45 degrees each);
    the centre is 0.
    """
    rotations = []
    for step in range(len(DIRECTIONS)):
        ring = [*north[-step:], *north[:-step]] if step else list(north)
        k = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
        for (i, j), value in zip(_RING, ring, strict=True):
            k[i][j] = value
        rotations.append(tuple(tuple(row) for row in k))
    return rotations


_DIRECTION_WORDS = ("up", "up-right", "right", "down-right", "down", "down-left", "left", "up-left")


def _compass_family(prefix: str, north: Sequence[int], text: str) -> dict[str, tuple[Rows, str]]:
    """``{prefix_d: (kernel, description)}`` for the 8 directions d."""
    return {
        f"{prefix}_{d}": (k, f"{text} {d} ({word})")
        for d, word, k in zip(DIRECTIONS, _DIRECTION_WORDS, _ring_rotations(north), strict=True)
    }


_SOBEL_X: Rows = ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))
_SCHARR_X: Rows = ((-3, 0, 3), (-10, 0, 10), (-3, 0, 3))
_PREWITT_X: Rows = ((-1, 0, 1), (-1, 0, 1), (-1, 0, 1))
_FIXED: dict[str, tuple[Rows, str]] = {
    "sharpen": (
        ((0, -1, 0), (-1, 5, -1), (0, -1, 0)),
        "sharpen 3x3: identity minus the 4-neighbour Laplacian, sums to 1",
    ),
    "sobel_x": (_SOBEL_X, "Sobel 3x3, positive where intensity increases to the right"),
    "sobel_y": (_transpose(_SOBEL_X), "Sobel 3x3, positive where intensity increases downward"),
    "scharr_x": (_SCHARR_X, "Scharr 3x3, positive where intensity increases to the right"),
    "scharr_y": (
        _transpose(_SCHARR_X),
        "Scharr 3x3, positive where intensity increases downward",
    ),
    "prewitt_x": (_PREWITT_X, "Prewitt 3x3, positive where intensity increases to the right"),
    "prewitt_y": (
        _transpose(_PREWITT_X),
        "Prewitt 3x3, positive where intensity increases downward",
    ),
    "laplacian4": (
        ((0, 1, 0), (1, -4, 1), (0, 1, 0)),
        "4-neighbour Laplacian 3x3, centre -4, sums to 0",
    ),
    "laplacian8": (
        ((1, 1, 1), (1, -8, 1), (1, 1, 1)),
        "8-neighbour Laplacian 3x3, centre -8, sums to 0",
    ),
    "emboss": (
        ((-2, -1, 0), (-1, 1, 1), (0, 1, 2)),
        "emboss 3x3, positive where intensity increases toward the bottom right, sums to 1",
    ),
}
_FIXED.update(
    _compass_family(
        "kirsch", [5, 5, 5, -3, -3, -3, -3, -3], "Kirsch 3x3, strongest where intensity increases"
    )
)
_FIXED.update(
    _compass_family(
        "compass",
        [1, 2, 1, 0, -1, -2, -1, 0],
        "Robinson compass 3x3, strongest where intensity increases",
    )
)


def _constant(name: str, rows: Rows, summary: str) -> KernelDef:
    """A parameterless kernel: a fresh float64 array of ``rows`` on every build."""

    def build() -> np.ndarray:
        import numpy as np

        return np.array(rows, dtype=np.float64)

    shape = (len(rows), len(rows[0]))
    return KernelDef(name, summary, build, lambda: shape)


KERNELS: dict[str, KernelDef] = {
    "identity": KernelDef(
        "identity", "identity {size}x{size}: 1 at the centre", _identity, _square, (_odd_size(3),)
    ),
    "box": KernelDef(
        "box",
        "box blur {size}x{size}, every weight 1/{size}^2, sums to 1",
        _box,
        _square,
        # Even sizes are allowed, as in PyTorch; they have no centre pixel.
        (Param("size", int, 3, f"an integer in [1, {MAX_SIZE}]", lambda v: 1 <= v <= MAX_SIZE),),
    ),
    "gaussian": KernelDef(
        "gaussian",
        "Gaussian blur {size}x{size}, sigma {sigma:g}, sums to 1",
        _gaussian,
        _square,
        (_odd_size(5), _sigma(1.0)),
    ),
    "log": KernelDef(
        "log",
        "Laplacian of Gaussian {size}x{size}, sigma {sigma:g}, negative centre, sums to 0",
        _log,
        _square,
        (_odd_size(9, minimum=3), _sigma(1.4)),
    ),
    **{name: _constant(name, rows, text) for name, (rows, text) in _FIXED.items()},
}
"""Registry of kernel definitions, by base name, in display order."""

KERNEL_SETS: dict[str, tuple[str, ...]] = {
    "sobel": ("sobel_x", "sobel_y"),
    "scharr": ("scharr_x", "scharr_y"),
    "prewitt": ("prewitt_x", "prewitt_y"),
    "kirsch": tuple(f"kirsch_{d}" for d in DIRECTIONS),
    "compass": tuple(f"compass_{d}" for d in DIRECTIONS),
    "edges": ("sobel_x", "sobel_y", "kirsch_ne", "kirsch_nw", "laplacian8", "log:5:0.8"),
    "demo": (
        "identity",
        "gaussian",
        "sharpen",
        "emboss",
        "sobel_x",
        "sobel_y",
        "laplacian4",
        "log:5:0.8",
    ),
}
"""Named groups of kernels (members are kernel specs), in display order."""
