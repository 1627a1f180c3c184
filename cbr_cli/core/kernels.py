"""Kernels by name: look up, parse ``name:arg:arg``, expand sets, stack into conv weights.

Besides the bank's names, a kernel can be typed inline, as ImageMagick takes it:
``WxH:v,v,...`` (width first, then the values row by row, separated by commas or
spaces; ``3x3:-1,0,1,-2,0,2,-1,0,1``) or a bare list whose length is an odd square
(``-1,0,1,-2,0,2,-1,0,1`` is 3x3). :func:`inline_spec` writes the canonical form
(``3x3:-1,0,1,...``), which is what the pipeline stores, and :func:`kernel_label` a
short label for pictures and tables.

The definitions (and the sign convention: every kernel is a cross-correlation kernel, as
PyTorch applies weights) are in :mod:`cbr_cli.core.kernel_bank`. Names are
case-insensitive; an empty argument keeps its default (``gaussian::2``). Importing this
module does not import numpy: :func:`stack_shape` (all ``cbr shape`` needs) works without it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cbr_cli.core.kernel_bank import KERNEL_SETS, KERNELS, MAX_SIZE, Number, Param
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
    "inline_spec",
    "is_inline",
    "kernel_label",
    "kernel_names",
    "kernel_set",
    "parse_kernel_spec",
    "preview_ascii",
    "set_names",
    "stack_kernels",
    "stack_shape",
]


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


_INLINE_HEAD = re.compile(r"\s*([0-9]+)\s*x\s*([0-9]+)\s*:(.*)", re.DOTALL)
_INLINE_BODY = re.compile(r"[\s,;]*[-+0-9.]")
MAX_INLINE = MAX_SIZE
"""Largest side of an inline kernel (as the bank's kernels)."""


@dataclass(frozen=True)
class InlineKernel:
    """A kernel typed as numbers: ``rows`` (kH of them, kW values each)."""

    rows: tuple[tuple[float, ...], ...]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.rows[0])

    @property
    def spec(self) -> str:
        """Canonical ``WxH:v,v,...`` (ImageMagick's order: width first)."""
        values = ",".join(_show_number(v) for row in self.rows for v in row)
        return f"{self.shape[1]}x{self.shape[0]}:{values}"


def _show_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"


def is_inline(spec: str) -> bool:
    """Whether ``spec`` is typed as numbers (``WxH:...`` or a bare list), not a name."""
    return bool(_INLINE_HEAD.match(spec) or _INLINE_BODY.match(spec))


def _numbers(text: str, spec: str) -> list[float]:
    import math

    out = []
    for token in re.split(r"[\s,;]+", text.strip()):
        if token == "":
            continue
        try:
            value = float(token)
        except ValueError:
            raise CbrError(f"inline kernel {_shown(spec)}: {token!r} is not a number") from None
        if not math.isfinite(value):
            raise CbrError(f"inline kernel {_shown(spec)}: {token!r} is not a finite number")
        out.append(value)
    return out


def parse_inline(spec: str) -> InlineKernel:
    """An inline kernel: ``WxH:`` and W*H values row by row, or an odd-square list.

    Raises
    ------
    CbrError
        Not numbers, a count that does not match ``WxH`` (or is not an odd square), or a
        side above :data:`MAX_INLINE`; the message quotes the value.
    """
    head = _INLINE_HEAD.match(spec)
    if head:
        width, height = int(head.group(1)), int(head.group(2))
        values = _numbers(head.group(3), spec)
        if not (1 <= width <= MAX_INLINE and 1 <= height <= MAX_INLINE):
            raise CbrError(
                f"inline kernel {_shown(spec)}: WxH must be between 1 and {MAX_INLINE} "
                f"(got {width}x{height})"
            )
        if len(values) != width * height:
            raise CbrError(
                f"inline kernel {_shown(spec)}: {width}x{height} (width x height, as "
                f"ImageMagick) needs {width * height} values, row by row (got {len(values)})"
            )
    else:
        values = _numbers(spec, spec)
        side = round(len(values) ** 0.5)
        if side * side != len(values) or side % 2 == 0:
            raise CbrError(
                f"inline kernel {_shown(spec)}: {len(values)} values are not an odd square "
                "(9 for 3x3, 25 for 5x5, ...); give WxH: first, e.g. '3x1:1,2,1'"
            )
        if side > MAX_INLINE:
            raise CbrError(
                f"inline kernel {_shown(spec)}: {side}x{side} is larger than {MAX_INLINE}"
            )
        width = height = side
    rows = tuple(tuple(values[r * width : (r + 1) * width]) for r in range(height))
    return InlineKernel(rows)


def inline_spec(rows: Sequence[Sequence[float]]) -> str:
    """The canonical spec of a kernel given as rows (YAML's ``[[-1, 0, 1], ...]``).

    Raises
    ------
    CbrError
        Rows of different lengths, an empty kernel, or values that are not numbers.
    """
    import math

    if not rows or not all(len(row) for row in rows):
        raise CbrError("an inline kernel needs at least one row of numbers")
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        lengths = ", ".join(str(len(row)) for row in rows)
        raise CbrError(f"inline kernel rows must all have one length (got rows of {lengths})")
    flat: list[float] = []
    for row in rows:
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CbrError(f"inline kernel values must be finite numbers (got {v!r})")
            flat.append(float(v))
    if len(rows) > MAX_INLINE or len(rows[0]) > MAX_INLINE:
        raise CbrError(f"an inline kernel may be at most {MAX_INLINE}x{MAX_INLINE}")
    width = len(rows[0])
    return InlineKernel(
        tuple(tuple(flat[r * width : (r + 1) * width]) for r in range(len(rows)))
    ).spec


def kernel_label(spec: str) -> str:
    """A short label for a kernel spec: the name, or for an inline kernel its rows.

    ``3x3:-1,0,1,-2,0,2,-1,0,1`` -> ``[-1 0 1|-2 0 2|-1 0 1]``; larger than 3x3 (or with
    long numbers) -> ``5x5 inline`` (the values are in the manifest and the JSON).
    """
    if not is_inline(spec):
        return spec
    kernel = parse_inline(spec)
    h, w = kernel.shape
    text = "[" + "|".join(" ".join(_show_number(v) for v in row) for row in kernel.rows) + "]"
    return text if h * w <= 9 and len(text) <= 28 else f"{w}x{h} inline"


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
    if is_inline(spec):
        import numpy as np

        return np.asarray(parse_inline(spec).rows, dtype=np.float32)
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
    if is_inline(key):
        h, w = parse_inline(key).shape
        return f"inline {w}x{h} kernel (width x height), values row by row"
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
        elif is_inline(key):
            out.append(parse_inline(key).spec)
        else:
            parse_kernel_spec(key)
            out.append(key)
    return out


@dataclass(frozen=True)
class _Placed:
    """One kernel of a stack: what to build, its size, and where it goes."""

    name: str  # base name (the spec for an inline kernel)
    params: dict[str, Number]
    shape: tuple[int, int]  # (kh, kw), from the size rule
    offset: tuple[int, int]  # (top, left) in the stack: centred
    inline: InlineKernel | None = None


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
    inline = {spec: parse_inline(spec) for spec in specs if is_inline(spec)}
    parsed = [
        (spec, spec, {}) if spec in inline else (spec, *parse_kernel_spec(spec)) for spec in specs
    ]
    shapes = [
        inline[spec].shape if spec in inline else KERNELS[name].shape(**params)
        for spec, name, params in parsed
    ]
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
        placed = _Placed(name, params, (h, w), (dh // 2, dw // 2), inline.get(spec))
        members.append(placed)
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
        if member.inline is not None:
            values = np.asarray(member.inline.rows, dtype=np.float32)
        else:
            values = _build(member.name, member.params)
        out[i, top : top + h, left : left + w] = values
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
