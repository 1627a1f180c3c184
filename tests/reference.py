"""A plain-loop reference conv2d: the independent oracle for ``cbr_cli.core.ops.conv2d``.

Written from PyTorch's documentation (``torch.nn.Conv2d``, ``torch.nn.functional.pad``)
and TensorFlow's ``SAME`` rule, without importing ``cbr_cli``: it shares no code, and
so no mistakes, with the engine under test.  It is slow on purpose -- one Python loop
per output element and per kernel tap, accumulated in float64 -- so only tiny inputs
belong here.
"""

from __future__ import annotations

import math

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def to_pair(value: object) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(2, 1) -> (2, 1)``."""
    if isinstance(value, (tuple, list)):
        first, second = value
        return int(first), int(second)
    return int(value), int(value)  # type: ignore[call-overload]


def axis_padding(padding: object, axis: int, size: int, kernel: int, stride: int, dilation: int):
    """``(before, after)`` padding of one axis (0 = height, 1 = width).

    * int or pair: the same amount on both sides (PyTorch).
    * ``"valid"``: none.
    * ``"full"``: ``span - 1`` on both sides, where ``span = dilation * (kernel - 1) + 1``.
    * ``"same"``, stride 1: total ``span - 1`` (PyTorch); stride > 1: TensorFlow's rule
      ``out = ceil(size / stride)``, ``total = max((out - 1) * stride + span - size, 0)``.
      Either way ``before = total // 2`` and the odd extra one goes after.
    """
    span = dilation * (kernel - 1) + 1
    if padding == "valid":
        return 0, 0
    if padding == "full":
        return span - 1, span - 1
    if padding == "same":
        if stride == 1:
            total = span - 1
        else:
            out = math.ceil(size / stride)
            total = max((out - 1) * stride + span - size, 0)
        return total // 2, total - total // 2
    amount = to_pair(padding)[axis]
    return amount, amount


def output_size(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> int:
    """``floor((size + before + after - dilation*(kernel-1) - 1) / stride) + 1``; <= 0 if empty."""
    span = size + before + after - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    return span // stride + 1


def padding_allowed(mode: str, size: int, before: int, after: int) -> bool:
    """PyTorch's limits: reflect needs padding < size, circular padding <= size."""
    if mode == "reflect":
        return max(before, after) < size
    if mode == "circular":
        return max(before, after) <= size
    return True


def source_index(i: int, size: int, mode: str) -> int | None:
    """Index into the unpadded axis that padded position ``i`` (relative to it) reads.

    ``None`` means a zero.  ``reflect`` mirrors about the edge sample without repeating
    it (``... x2 x1 | x0 x1 x2 ...``), ``replicate`` repeats the edge sample,
    ``circular`` wraps around.
    """
    if 0 <= i < size:
        return i
    if mode == "zeros":
        return None
    if mode == "reflect":
        return -i if i < 0 else 2 * (size - 1) - i
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    raise ValueError(f"unknown padding mode {mode!r}")


def pad_reference(x: np.ndarray, pads: tuple[int, int, int, int], mode: str) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``(top, bottom, left, right)``, element by element."""
    top, bottom, left, right = pads
    *lead, height, width = x.shape
    out = np.zeros((*lead, height + top + bottom, width + left + right), dtype=np.float64)
    for py in range(out.shape[-2]):
        sy = source_index(py - top, height, mode)
        for px in range(out.shape[-1]):
            sx = source_index(px - left, width, mode)
            if sy is not None and sx is not None:
                out[..., py, px] = x[..., sy, sx]
    return out


def conv2d_reference(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> np.ndarray:
    """Cross-correlation as ``torch.nn.Conv2d`` defines it, in float64.

    ``out[n, o, i, j] = bias[o] + sum over c in o's group, ky, kx of
    w[o, c, ky, kx] * padded[n, c, i*stride_h + ky*dilation_h, j*stride_w + kx*dilation_w]``

    ``x`` is (N, C_in, H, W) or (C_in, H, W); ``w`` is (C_out, C_in/groups, kH, kW).
    The caller checks validity (padding limits, non-empty output) with the helpers above.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    n_batch, c_in, height, width = x.shape
    c_out, c_per_group, kh, kw = w.shape
    assert c_in == c_per_group * groups and c_out % groups == 0
    sh, sw = to_pair(stride)
    dh, dw = to_pair(dilation)
    top, bottom = axis_padding(padding, 0, height, kh, sh, dh)
    left, right = axis_padding(padding, 1, width, kw, sw, dw)
    ho = output_size(height, kh, sh, dh, top, bottom)
    wo = output_size(width, kw, sw, dw, left, right)
    assert ho > 0 and wo > 0
    padded = pad_reference(x, (top, bottom, left, right), padding_mode)
    out_per_group = c_out // groups

    out = np.zeros((n_batch, c_out, ho, wo), dtype=np.float64)
    for n in range(n_batch):
        for o in range(c_out):
            group = o // out_per_group
            for i in range(ho):
                for j in range(wo):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(c_per_group):
                        channel = group * c_per_group + c
                        for ky in range(kh):
                            for kx in range(kw):
                                total += (
                                    w[o, c, ky, kx]
                                    * padded[n, channel, i * sh + ky * dh, j * sw + kx * dw]
                                )
                    out[n, o, i, j] = total
    return out[0] if unbatched else out
