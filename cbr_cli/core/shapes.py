"""Output-size arithmetic for 2-D convolution, stated once.

Both the engine (:mod:`cbr_cli.core.ops`) and ``cbr shape`` use these functions, so the
shapes ``cbr shape`` prints are, by construction, the shapes ``cbr apply`` produces.

Per axis (PyTorch, ``torch.nn.Conv2d``, section *Shape*)::

    effective_kernel = dilation * (kernel_size - 1) + 1
    size_out = floor((size_in + pad_before + pad_after - effective_kernel) / stride) + 1

``padding`` may be an int, a pair ``(pad_h, pad_w)``, or one of the strings

``"valid"``
    no padding.
``"same"``
    with ``stride == 1``: total padding ``dilation * (kernel_size - 1)``, split as
    PyTorch does, ``before = total // 2`` and the odd extra row/column after
    (bottom/right).  With ``stride > 1`` PyTorch refuses; cbr follows
    TensorFlow/Keras ``SAME``: ``size_out = ceil(size_in / stride)`` and
    ``total = max((size_out - 1) * stride + effective_kernel - size_in, 0)``,
    split the same way.
``"full"``
    ``effective_kernel - 1`` on both sides: every position where kernel and
    input overlap (``size_out = size_in + effective_kernel - 1`` at stride 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from cbr_cli.errors import CbrError

PADDING_STRINGS = ("valid", "same", "full")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

IntOrPair = int | Sequence[int]
Padding = int | Sequence[int] | str


def _is_int(value: object) -> bool:
    """True for Python and numpy integers, False for bools (``True`` is no stride)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value: object, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Normalise an int-or-pair argument to ``(h, w)`` and validate it once.

    Parameters
    ----------
    value : int or sequence of 2 ints
    name : str
        The parameter's name, echoed in the error message.
    minimum : int
        Smallest allowed value (1 for stride/dilation/kernel_size, 0 for padding).

    Raises
    ------
    CbrError
        If ``value`` is not an int or a pair of ints, or an element is below ``minimum``.
    """
    if _is_int(value):
        items = (int(value), int(value))  # type: ignore[arg-type]
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if not all(_is_int(v) for v in value):
            raise CbrError(f"{name} must be an int or a pair of ints, but got {name}={value!r}")
        items = (int(value[0]), int(value[1]))
    else:
        raise CbrError(f"{name} must be an int or a pair of ints, but got {name}={value!r}")
    if min(items) < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise CbrError(f"{name} must be {bound}, but got {name}={_show(value)}")
    return items


def _show(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return repr(tuple(value))
    return repr(value)


@dataclass(frozen=True)
class AxisGeometry:
    """The convolution arithmetic along one spatial axis.

    Attributes
    ----------
    size_in : int
        Input size along the axis (before padding).
    kernel_size, stride, dilation : int
    pad_before, pad_after : int
        Resolved padding (top/bottom or left/right).
    """

    size_in: int
    kernel_size: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int

    @property
    def effective_kernel(self) -> int:
        """``dilation * (kernel_size - 1) + 1``: the span the kernel covers."""
        return self.dilation * (self.kernel_size - 1) + 1

    @property
    def padded(self) -> int:
        """``size_in + pad_before + pad_after``."""
        return self.size_in + self.pad_before + self.pad_after

    @property
    def size_out(self) -> int:
        """``floor((padded - effective_kernel) / stride) + 1``, or 0 if the kernel does not fit."""
        span = self.padded - self.effective_kernel
        return span // self.stride + 1 if span >= 0 else 0

    @property
    def dropped(self) -> int:
        """Padded rows/columns at the far border that no output position reads.

        They are the remainder ``(padded - effective_kernel) mod stride``; a nonzero value
        means the stride silently ignores part of the (padded) input.
        """
        span = self.padded - self.effective_kernel
        return span % self.stride if span >= 0 else 0

    def formula(self) -> str:
        """The size formula with this axis' numbers filled in, e.g. for teaching."""
        return (
            f"floor(({self.size_in} + {self.pad_before} + {self.pad_after} - "
            f"{self.dilation}*({self.kernel_size}-1) - 1) / {self.stride} + 1) = {self.size_out}"
        )


def resolve_padding(
    padding: Padding,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    size_in: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve ``padding`` to ``((top, bottom), (left, right))``.

    See the module docstring for the string forms; ints and pairs pad both sides of
    an axis equally, as ``torch.nn.functional.conv2d`` does.
    """
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise CbrError(
                f"padding must be an int, a pair of ints or one of {list(PADDING_STRINGS)}, "
                f"but got padding={padding!r}"
            )
        resolved = []
        for k, s, d, n in zip(kernel_size, stride, dilation, size_in, strict=True):
            eff = d * (k - 1) + 1
            if padding == "valid":
                total = 0
            elif padding == "full":
                resolved.append((eff - 1, eff - 1))
                continue
            elif s == 1:
                total = eff - 1
            else:  # TensorFlow/Keras SAME: output = ceil(n / s)
                total = max((math.ceil(n / s) - 1) * s + eff - n, 0)
            resolved.append((total // 2, total - total // 2))
        return resolved[0], resolved[1]
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


@dataclass(frozen=True)
class ConvGeometry:
    """The arithmetic of one 2-D convolution: an :class:`AxisGeometry` per axis."""

    h: AxisGeometry
    w: AxisGeometry

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.h.size_out, self.w.size_out

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """Resolved padding as ``(top, bottom, left, right)``."""
        return self.h.pad_before, self.h.pad_after, self.w.pad_before, self.w.pad_after


def conv2d_geometry(
    size_in: tuple[int, int],
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    padding_mode: str = "zeros",
    *,
    allow_empty: bool = False,
) -> ConvGeometry:
    """Validate the arguments of a convolution and compute its geometry.

    Parameters
    ----------
    size_in : (H_in, W_in)
    kernel_size, stride, dilation : int or (int, int)
        Must be positive.
    padding : int, (int, int), ``"valid"``, ``"same"`` or ``"full"``
    padding_mode : ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``
        ``reflect`` needs padding < input size on each axis, ``circular`` padding <= input
        size (PyTorch's limits).
    allow_empty : bool
        Return an empty geometry instead of raising when the kernel does not fit.

    Returns
    -------
    ConvGeometry
        with ``H_out = floor((H_in + top + bottom - dilation*(kH-1) - 1) / stride + 1)``
        and likewise ``W_out``.

    Raises
    ------
    CbrError
        On any invalid argument, naming the parameter and the value.
    """
    ks = pair(kernel_size, "kernel_size")
    st = pair(stride, "stride")
    dl = pair(dilation, "dilation")
    if padding_mode not in PADDING_MODES:
        raise CbrError(
            f"padding_mode must be one of {list(PADDING_MODES)}, "
            f"but got padding_mode={padding_mode!r}"
        )
    (top, bottom), (left, right) = resolve_padding(padding, ks, st, dl, size_in)
    geo = ConvGeometry(
        AxisGeometry(size_in[0], ks[0], st[0], dl[0], top, bottom),
        AxisGeometry(size_in[1], ks[1], st[1], dl[1], left, right),
    )
    for axis, name in ((geo.h, "height"), (geo.w, "width")):
        biggest = max(axis.pad_before, axis.pad_after)
        if padding_mode == "reflect" and biggest >= axis.size_in:
            raise CbrError(
                f"padding_mode='reflect' needs padding < input {name} ({axis.size_in}), "
                f"but got padding={biggest}"
            )
        if padding_mode == "circular" and biggest > axis.size_in:
            raise CbrError(
                f"padding_mode='circular' needs padding <= input {name} ({axis.size_in}), "
                f"but got padding={biggest}"
            )
    if not allow_empty and (geo.h.size_out < 1 or geo.w.size_out < 1):
        raise CbrError(
            f"kernel_size {ks} with dilation {dl} spans {geo.h.effective_kernel}x"
            f"{geo.w.effective_kernel}, larger than the padded input "
            f"{geo.h.padded}x{geo.w.padded}: the output would be empty"
        )
    return geo


@dataclass(frozen=True)
class ZeroTapCrop:
    """A zero-padded convolution with the kernel taps that only ever read padding removed.

    With ``padding_mode="zeros"`` a tap that reads padding for every output adds
    exact zeros, so dropping it changes nothing but the work: with a large dilation
    and ``padding="same"`` on a small image (dilation 3000, 64x64) only the centre tap
    reads the image, and the padded input would otherwise be 12064x12064.  Per axis
    the kept taps are ``taps[0]:taps[1]`` and the input rows/columns read are
    ``rows[0]:rows[1]`` / ``columns[0]:columns[1]``; ``geometry`` is the convolution of
    that input slice with that kernel slice, with the same output size.
    """

    geometry: ConvGeometry
    taps_h: tuple[int, int]
    taps_w: tuple[int, int]
    rows: tuple[int, int]
    columns: tuple[int, int]


def _crop_axis(a: AxisGeometry) -> tuple[AxisGeometry, tuple[int, int], tuple[int, int]]:
    n, k, s, d, pb = a.size_in, a.kernel_size, a.stride, a.dilation, a.pad_before
    last = (a.size_out - 1) * s
    # Tap i reads input rows i*d - pb + [0, last] (every s-th): keep it if that range
    # meets [0, n - 1] (generous with strides: such a tap may still miss every row).
    first_tap = max(0, -(-(pb - last) // d))
    last_tap = min(k - 1, (pb + n - 1) // d)
    if first_tap > last_tap:  # no tap reads the image: keep the axis as it is
        return a, (0, k), (0, n)
    top = first_tap * d - pb  # input row tap first_tap reads for output 0
    bottom = last + (last_tap - first_tap) * d + top  # last row the kept taps read
    start, stop = max(top, 0), min(bottom, n - 1) + 1
    cropped = AxisGeometry(
        size_in=stop - start,
        kernel_size=last_tap - first_tap + 1,
        stride=s,
        dilation=d,
        pad_before=start - top,
        pad_after=bottom + 1 - stop,
    )
    return cropped, (first_tap, last_tap + 1), (start, stop)


def crop_zero_taps(geo: ConvGeometry) -> ZeroTapCrop:
    """The convolution ``geo`` (zero padding) without taps that read only padding."""
    h, taps_h, rows = _crop_axis(geo.h)
    w, taps_w, columns = _crop_axis(geo.w)
    return ZeroTapCrop(ConvGeometry(h, w), taps_h, taps_w, rows, columns)


def conv2d_output_hw(
    size_in: tuple[int, int],
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
) -> tuple[int, int]:
    """``(H_out, W_out)`` of a convolution; raises :class:`CbrError` if it would be empty."""
    return conv2d_geometry(size_in, kernel_size, stride, padding, dilation).out_hw


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one output position along one axis, in input pixels.

    Convention: input pixel ``i`` is centred at coordinate ``i`` (0-based), so the first
    output's field covers ``[centre - (size - 1) / 2, centre + (size - 1) / 2]``; negative
    coordinates are padding.  Output position ``j`` of the same feature map is centred at
    ``centre + j * jump``.

    Attributes
    ----------
    size : int
        Span of input pixels that can influence one output (a dilated kernel's span counts
        whole, gaps included).
    jump : int
        Distance in input pixels between adjacent outputs: the product of the strides.
    centre : float
        Centre of the first output's field (a multiple of 0.5).
    """

    size: int = 1
    jump: int = 1
    centre: float = 0.0

    def through(self, axis: AxisGeometry) -> ReceptiveField:
        """The field after one more convolution along ``axis``.

        ``size' = size + (effective_kernel - 1) * jump``, ``jump' = jump * stride``,
        ``centre' = centre + ((effective_kernel - 1) / 2 - pad_before) * jump``.
        """
        half_span = (axis.effective_kernel - 1) / 2
        return ReceptiveField(
            size=self.size + (axis.effective_kernel - 1) * self.jump,
            jump=self.jump * axis.stride,
            centre=self.centre + (half_span - axis.pad_before) * self.jump,
        )
