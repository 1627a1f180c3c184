"""The built-in kernel bank: named 2-D filters as float32 numpy arrays.

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

import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cbr_cli.errors import CbrError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "KERNELS",
    "KERNEL_SETS",
    "MAX_SIZE",
    "describe",
    "expand_names",
    "get_kernel",
    "kernel_names",
    "kernel_set",
    "parse_kernel_spec",
    "preview_ascii",
    "set_names",
    "stack_kernels",
    "stack_shape",
]

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


# ---------------------------------------------------------------------------------------
# Lookup


def kernel_names() -> list[str]:
    """Base names of all built-in kernels, in display order."""
    return list(KERNELS)


def set_names() -> list[str]:
    """Names of all kernel sets, in display order."""
    return list(KERNEL_SETS)


def _normalise(spec: str) -> str:
    return spec.strip().lower()


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + ", ".join(f"'{c}'" for c in close) + "?"
    return ""


def _unknown(name: str) -> CbrError:
    choices = [*KERNELS, *KERNEL_SETS]
    return CbrError(
        f"unknown kernel '{name}'{_suggest(name, choices)} (`cbr kernels` lists them all)"
    )


_INT_RE = re.compile(r"[+-]?[0-9]+")


def _parse_arg(spec: str, param: Param, text: str) -> Number:
    text = text.strip()
    if text == "":
        return param.default
    value: Number | None = None
    if param.kind is int:
        if _INT_RE.fullmatch(text):
            value = int(text)
    else:
        try:
            value = float(text)
        except ValueError:
            value = None
    if value is None or not param.check(value):
        raise CbrError(
            f"kernel '{spec}': {param.name} must be {param.requirement}, but got '{text}'"
        )
    return value


def parse_kernel_spec(spec: str) -> tuple[str, dict[str, Number]]:
    """Split ``name:arg:arg`` into the base name and all parameters (defaults filled in).

    Raises
    ------
    CbrError
        Unknown name (with close matches), a set name, too many or invalid parameters.
    """
    text = _normalise(spec)
    name, *args = text.split(":")
    name = name.strip()
    if name in KERNEL_SETS and name not in KERNELS:
        members = ", ".join(KERNEL_SETS[name])
        raise CbrError(f"'{name}' is a kernel set, not a single kernel ({members})")
    if name not in KERNELS:
        raise _unknown(name)
    kdef = KERNELS[name]
    if len(args) > len(kdef.params):
        if not kdef.params:
            raise CbrError(f"kernel '{name}' takes no parameters, but got '{text}'")
        expected = ":".join(p.name for p in kdef.params)
        raise CbrError(
            f"kernel '{name}' takes at most {len(kdef.params)} parameter(s) "
            f"({name}:{expected}), but got '{text}'"
        )
    values = {p.name: p.default for p in kdef.params}
    for param, arg in zip(kdef.params, args, strict=False):
        values[param.name] = _parse_arg(text, param, arg)
    return name, values


def get_kernel(spec: str) -> np.ndarray:
    """The kernel named by ``spec`` (``name`` or ``name:arg:arg``).

    Returns
    -------
    kernel : ndarray of shape (kH, kW), float32
        A fresh array (safe to modify), for cross-correlation as ``torch.nn.functional.conv2d``.

    Raises
    ------
    CbrError
        Unknown name (listing close matches), or bad parameters (naming them).
    """
    name, params = parse_kernel_spec(spec)
    return _build(name, params)


def _build(name: str, params: dict[str, Number]) -> np.ndarray:
    """Build a parsed kernel as float32, checking it against its size rule."""
    import numpy as np

    kdef = KERNELS[name]
    kernel = np.asarray(kdef.build(**params), dtype=np.float32)
    if kernel.shape != kdef.shape(**params):  # a bug in this module, not a user error
        raise RuntimeError(
            f"kernel '{name}' built with shape {kernel.shape}, "
            f"but its size rule says {kdef.shape(**params)}"
        )
    return kernel


def describe(spec: str) -> str:
    """One-line description of a kernel (parameters filled in) or of a kernel set."""
    key = _normalise(spec)
    if key in KERNEL_SETS:
        members = KERNEL_SETS[key]
        return f"set of {len(members)} kernels: " + ", ".join(members)
    name, params = parse_kernel_spec(spec)
    return KERNELS[name].summary.format(**params)


def kernel_set(name: str) -> list[str]:
    """The kernel specs in the set ``name`` (e.g. ``kirsch`` -> the 8 Kirsch kernels).

    Raises
    ------
    CbrError
        ``name`` is not a set (with close matches among the set names).
    """
    key = _normalise(name)
    if key not in KERNEL_SETS:
        hint = _suggest(key, list(KERNEL_SETS))
        raise CbrError(f"unknown kernel set '{key}'{hint} (sets: {', '.join(KERNEL_SETS)})")
    return list(KERNEL_SETS[key])


def expand_names(names: Sequence[str]) -> list[str]:
    """Replace every set name by its members; validate and normalise every kernel spec.

    The result is one spec per output channel of :func:`stack_kernels`, in the same order,
    suitable as channel labels.
    """
    out: list[str] = []
    for spec in names:
        key = _normalise(spec)
        if key in KERNEL_SETS:
            out.extend(KERNEL_SETS[key])
        else:
            parse_kernel_spec(key)
            out.append(key)
    return out


@dataclass(frozen=True)
class _Placed:
    """One kernel of a stack: what to build, its size, and where it goes."""

    name: str  # base name
    params: dict[str, Number]
    shape: tuple[int, int]  # (kh, kw), from the size rule
    offset: tuple[int, int]  # (top, left) in the stack: centred


@dataclass(frozen=True)
class _StackPlan:
    """A validated stack: its size and where every kernel goes."""

    size: tuple[int, int]  # (kH, kW): the largest size per axis
    members: tuple[_Placed, ...]  # one per output channel, in order


def _plan_stack(names: Sequence[str]) -> _StackPlan:
    """Expand, validate and lay out a stack from the size rules alone (no numpy).

    The one place that decides a stack's shape and its errors, for both
    :func:`stack_kernels` and :func:`stack_shape`.
    """
    specs = expand_names(names)
    if not specs:
        raise CbrError("no kernels given")
    parsed = [(spec, *parse_kernel_spec(spec)) for spec in specs]
    shapes = [KERNELS[name].shape(**params) for _, name, params in parsed]
    kh = max(h for h, _ in shapes)
    kw = max(w for _, w in shapes)
    members = []
    for (spec, name, params), (h, w) in zip(parsed, shapes, strict=True):
        dh, dw = kh - h, kw - w
        if dh % 2 or dw % 2:
            raise CbrError(
                f"kernel '{spec}' ({h}x{w}) cannot be centred in the "
                f"{kh}x{kw} stack: sizes in one stack must all be odd or all be even"
            )
        members.append(_Placed(name, params, (h, w), (dh // 2, dw // 2)))
    return _StackPlan((kh, kw), tuple(members))


def stack_shape(names: Sequence[str]) -> tuple[int, int, int]:
    """The shape of ``stack_kernels(names)``, from the kernels' size rules, without numpy.

    Validates exactly as :func:`stack_kernels` does and raises the same errors, but builds
    no arrays and does not import numpy (for ``cbr shape``, which is start-up critical).

    Returns
    -------
    shape : tuple of int, (K, kH, kW)
        ``K = len(expand_names(names))``; ``kH``, ``kW`` the largest kernel size per axis.

    Raises
    ------
    CbrError
        Empty list, unknown or invalid kernel, or sizes that cannot be centred together.
    """
    plan = _plan_stack(names)
    return (len(plan.members), *plan.size)


def stack_kernels(names: Sequence[str]) -> np.ndarray:
    """Stack kernels (sets expanded) into one weight array, padding smaller ones with zeros.

    A kernel of size ``k`` is centred in the stack's size ``K`` (the largest size per axis)
    with ``(K - k) / 2`` zeros on each side, which leaves its response unchanged. That needs
    ``K - k`` even: mixing odd and even sizes of different lengths is an error.

    Returns
    -------
    weights : ndarray of shape (K, kH, kW), float32
        ``K = len(expand_names(names))``; the shape is :func:`stack_shape`'s.

    Raises
    ------
    CbrError
        Empty list, unknown or invalid kernel, or sizes that cannot be centred together.
    """
    import numpy as np

    plan = _plan_stack(names)
    out = np.zeros((len(plan.members), *plan.size), dtype=np.float32)
    for i, member in enumerate(plan.members):
        (h, w), (top, left) = member.shape, member.offset
        out[i, top : top + h, left : left + w] = _build(member.name, member.params)
    return out


# ---------------------------------------------------------------------------------------
# Text preview


def preview_ascii(kernel: np.ndarray, max_size: int = 9, decimals: int = 4) -> str:
    """The kernel's numbers as right-aligned text columns, for ``cbr kernels``.

    Integer-valued kernels print as integers, others with ``decimals`` decimals. A kernel
    larger than ``max_size`` along an axis shows its central ``max_size`` rows/columns,
    after a header line saying so.
    """
    import numpy as np

    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"kernel must be 2-D, but got shape {k.shape}")
    header = ""
    h, w = k.shape
    if h > max_size or w > max_size:
        ch, cw = min(h, max_size), min(w, max_size)
        top, left = (h - ch) // 2, (w - cw) // 2
        k = k[top : top + ch, left : left + cw]
        header = f"centre {ch}x{cw} of {h}x{w}:\n"
    if np.all(np.isfinite(k)) and np.all(k == np.round(k)):
        cells = [[str(int(v)) for v in row] for row in k]
    else:
        # "-0.0000" (a tiny negative value) reads as noise: print it as "0.0000".
        zero = f"{0.0:.{decimals}f}"
        cells = [[f"{v:.{decimals}f}" for v in row] for row in k]
        cells = [[zero if c == f"-{zero}" else c for c in row] for row in cells]
    width = max(len(c) for row in cells for c in row)
    return header + "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)
