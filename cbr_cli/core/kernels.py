"""Kernels by name: look up, parse ``name:arg:arg``, expand sets, stack into conv weights.

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
