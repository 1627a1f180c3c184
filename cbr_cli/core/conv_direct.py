"""The direct convolution engine behind :func:`cbr_cli.core.ops.conv2d`: im2col + GEMM.

It takes the unpadded input, its geometry and ``padding_mode``, and writes into a
preallocated output; validation and dtype policy live in :mod:`cbr_cli.core.ops`. No loop
over pixels: im2col in chunks of output rows, each chunk (columns plus its slice of the
output) sized to stay in cache, then GEMMs (BLAS through ``np.matmul``) written straight
into the output. No im2col matrix larger than one chunk per thread ever exists. With
vertical stride 1 and enough input channels the chunks hold only the taps of one kernel
row over a band of input rows (``kH`` times fewer copies, zero padding written into the
band); otherwise the input is padded whole and each chunk holds every tap. Depthwise
convolutions (one input channel per group) with stride 1 add up their taps directly, one
multiply-add of a contiguous run per tap; strided ones take the full-im2col path (their
GEMM is a GEMV, with its own chunk budget). Chunks run on
:func:`cbr_cli.core.threads.run_tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cbr_cli.core.shapes import ConvGeometry
from cbr_cli.core.threads import run_tasks, thread_count

# PyTorch padding_mode -> numpy.pad mode.  PyTorch "reflect" excludes the edge
# sample (SciPy calls that "mirror"); numpy's "reflect" is the same thing.
_NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

# Bytes of one im2col chunk plus its slice of the output, per thread (at least one
# output row).  Measured on 2 vCPUs (1 MiB L2 each), float32, engine alone, in a quiet
# moment: 768 KiB -> 1.5 MiB made deep (64->64, 3x3, 256^2) 40.3 -> 37.6 ms, stem
# 56 -> 50, rgb1024 77 -> 68, rgb512 9.5 -> 6.9, batch16 101 -> 89; 2.5 MiB was within
# 4% of 1.5 MiB everywhere.  (Fewer, larger GEMMs: a one-thread 64 x 576 x N sgemm runs
# at 79 GFLOP/s for N = 256 and 84 for N = 512; the cost model was fitted at 768 KiB.)
IM2COL_CHUNK_BYTES = 1536 * 1024
# The same with one input channel per group (depthwise; the GEMM is a memory-bound
# GEMV): 384 KiB-1 MiB best; 128 KiB 1.5-2x and 2 MiB 1.2-1.5x slower (64x256x256 and
# 32x1024x1024, 3x3 and 7x7 kernels); 1 -> 8 channels at 1024^2 (graybank) 6.6 ms at
# 512 KiB, 10 ms at 256 KiB or 1 MiB.  The tap-by-tap multiply-accumulate this replaced
# was 1.2-2x slower at one output per group and 2-4x slower with channel multipliers.
DEPTHWISE_CHUNK_BYTES = 512 * 1024
# Values of one depthwise-taps task's accumulator (channels x rows x padded width); its
# padded band and product are as large. Fewer, larger tasks win although they leave L2
# (each tap's two calls hold the GIL; two threads contend for it): conv + BN + ReLU,
# 2 threads, 64 x 256^2 3x3: 2^16 values (two bands per channel) 31 ms, 2^17 23,
# 2^18 14.4, 2^19 13.6, 2^20 17.7 (im2col + GEMV 24); 16 x 1024^2: 77 / 51 / 49 / 58
# (im2col 88); 256 x 32^2: 4-4.5 ms from 2^16 up (im2col 9-10).
DEPTHWISE_TAP_VALUES = 1 << 19
# Bytes of one row-tap chunk (band of taps, output slice, partial sum), per thread.
# Measured against IM2COL_CHUNK_BYTES (C -> C channels, "same"): 64 ch 3x3 at 256^2
# (deep) 768 KiB 55 ms (one row per chunk), 1.5 MiB 40.7, 2 MiB 38-40, 3 MiB 38-41,
# 4 MiB 36-38, 6 MiB 40-43, full im2col 41-43; 32 ch 5x5 at 256^2 4 MiB 31-32 ms,
# 2 MiB 35, im2col 39-40; 128 ch 3x3 at 128^2 32-33 ms everywhere, im2col 33-34.
ROW_TAP_CHUNK_BYTES = 4 * 1024 * 1024
# Smallest GEMM depth per kernel row (C_in/groups * kW) for the row-tap path.  Row
# taps against full im2col, same machine: 3 ch 3x3 (K 9) 9.4 vs 7.6 ms, 4 ch 5x5 (20)
# 18-21 vs 16, 3 ch 7x7 (21) 28-29 vs 23-26, 8 ch 3x3 (24) 11.2-11.7 vs 11.6-12.2,
# 16 ch 3x3 (48) 20-22 vs 24-25.
ROW_TAP_MIN_K = 32
# Fewest whole output rows, and output positions, per row-tap chunk (the GEMMs' width).
# With one row per chunk the band is kH rows for one: as many copies as a full im2col,
# in smaller GEMMs (12 ch 13x13 at 512^2: 485 vs 230 ms; 32 ch 11x11 at 256^2: 231 vs
# 187); 2 rows were even (64 ch 7x7 at 256^2, 232 vs 235), 4-6 rows 5-20% faster.
# Narrow chunks lose to full im2col's one deeper GEMM: 3x3 "same", 2 threads, 256 ch
# at 16^2 (128 positions per chunk) 5.8 vs 4.0 ms, 512 ch at 8^2 (32) 11.2 vs 6.3;
# about even: 128 ch at 32^2 (512) 3.1-4.8 vs 3.2-4.3, 64 ch at 32^2 (512) 1.3-1.8 vs
# 1.4-1.5, 128 ch at 48^2 (1152) 5.9-6.5 vs 5.7; faster: 64 ch at 64^2 (2048) 3.2-4.1
# vs 4.2-4.6, 32 ch at 64^2 (2048) 1.4 vs 2.0, deep (2816) 36-38 vs 41-43, and with
# a 13x13 kernel, 16 ch at 256^2 (1536) 79 vs 96.
ROW_TAP_MIN_ROWS = 2
ROW_TAP_MIN_COLUMNS = 1024
# Narrowest chunk when one output row exceeds the budget (very large K).
MIN_CHUNK_COLUMNS = 64


class ChunkEpilogue(Protocol):
    """Work done on each chunk of output right after its GEMMs, while it is in cache.

    ``block`` is the chunk: output channels ``[channel, channel + C)`` of sample ``n`` at
    flat output positions ``[position, position + L)`` (``H_out * W_out`` flattened), a
    view of shape (C, L) into the output that the epilogue may read and overwrite.
    ``buffer`` is the thread's own ``scratch()``.  Called from several threads at once,
    once per chunk, in no particular order.
    """

    def scratch(self) -> Any: ...

    def __call__(
        self, n: int, channel: int, position: int, block: np.ndarray, buffer: Any
    ) -> None: ...


def pad_input(x: np.ndarray, geo: ConvGeometry, padding_mode: str) -> np.ndarray:
    """``x`` (N, C, H, W) padded as ``geo`` says, in PyTorch's ``padding_mode``."""
    top, bottom, left, right = geo.padding
    if not any(geo.padding):
        return x
    return np.pad(
        x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=_NP_PAD_MODE[padding_mode]
    )


def without_padding(geo: ConvGeometry) -> ConvGeometry:
    """The same convolution on an input that :func:`pad_input` has already padded."""
    return ConvGeometry(
        *(replace(a, size_in=a.padded, pad_before=0, pad_after=0) for a in (geo.h, geo.w))
    )


def _band_rows(y0: int, band: int, height: int) -> tuple[int, int]:
    """``(lo, hi)``: of a band of ``band`` rows from input row ``y0`` on (negative in the
    top padding), input rows ``[lo, hi)`` are inside the image; the band's rows before
    ``lo - y0`` and from ``hi - y0`` on are padding."""
    lo = min(max(y0, 0), y0 + band)
    return lo, max(min(y0 + band, height), lo)


def row_tap_chunk(
    n_batch: int,
    groups: int,
    c_in_g: int,
    c_out_g: int,
    kernel: tuple[int, int],
    geo: ConvGeometry,
    itemsize: int = 4,
) -> tuple[int, int] | None:
    """(rows, columns) of output per chunk of :func:`conv2d_direct`'s row-tap path, or
    None where it takes the full-im2col path instead.

    Row taps need vertical stride 1, GEMMs of depth ``C_in/groups * kW >=
    ROW_TAP_MIN_K``, and chunks of at least ``ROW_TAP_MIN_ROWS`` whole output rows and
    ``ROW_TAP_MIN_COLUMNS`` output positions.  A chunk of ``r`` rows holds its band of
    taps, ``C_in/groups * kW * (r + (kH - 1) * dilation)`` values per output column,
    its slice of the output and (for ``kH > 1``) a partial sum; it gets as many rows
    as ``ROW_TAP_CHUNK_BYTES`` allows, but no more than leave every thread a chunk.
    (With the minimums at 0, part-rows of at least ``MIN_CHUNK_COLUMNS``.)
    """
    kh, kw = kernel
    k = c_in_g * kw
    if geo.h.stride != 1 or c_in_g == 1 or k < ROW_TAP_MIN_K:
        return None
    ho, wo = geo.out_hw
    reach = (kh - 1) * geo.h.dilation  # band rows beyond the chunk's own
    per_position = k + c_out_g * (2 if kh > 1 else 1)
    budget = ROW_TAP_CHUNK_BYTES // itemsize
    rows = (budget // wo - k * reach) // per_position
    split = max(1, thread_count() // (n_batch * groups))
    rows = min(rows, -(-ho // split))
    if rows < ROW_TAP_MIN_ROWS or rows * wo < ROW_TAP_MIN_COLUMNS:
        return None
    if rows >= 1:
        return rows, wo
    columns = budget // (k * reach + per_position)
    return 1, min(wo, max(MIN_CHUNK_COLUMNS, columns))


def chunk_values(
    n_batch: int,
    groups: int,
    c_in_g: int,
    c_out_g: int,
    kernel: tuple[int, int],
    geo: ConvGeometry,
    itemsize: int = 4,
) -> int:
    """Output values per chunk of :func:`conv2d_direct` (what an epilogue gets at once)."""
    ho, wo = geo.out_hw
    if depthwise_taps(c_in_g, geo):
        channels, rows = depthwise_chunk(n_batch * groups, geo)
        return (channels if c_out_g == 1 else 1) * rows * wo
    chunk = row_tap_chunk(n_batch, groups, c_in_g, c_out_g, kernel, geo, itemsize)
    if chunk is None:
        k = c_in_g * kernel[0] * kernel[1]
        chunk = _chunk_shape(k, c_out_g, ho, wo, c_in_g, itemsize)
    rows, columns = chunk
    return c_out_g * min(rows, ho) * min(columns, wo)


def conv2d_direct(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    padding_mode: str = "zeros",
    epilogue: ChunkEpilogue | None = None,
) -> None:
    """Cross-correlate ``x`` (N, C_in, H, W), padded per ``geo``, with ``weight`` into ``out``.

    ``out`` has shape (N, C_out, H_out, W_out) and is C-contiguous.  ``epilogue``, if
    given, is called on every chunk of output as soon as it is complete (see
    :class:`ChunkEpilogue`).  Two ways:

    * **row taps** (vertical stride 1, several input channels per group): per chunk of
      output rows, one im2col of the *kernel-row* taps (``C_in/groups * kW`` values per
      column) over the band of input rows the chunk reads; kernel row ``i`` then reads
      that band from row ``i * dilation`` on, so ``kH`` GEMMs of depth ``C_in/groups * kW``
      add up to the output.  That copies about ``kH`` times less than a full im2col, and
      zero padding is written into the band directly instead of padding the whole input.
    * **depthwise taps** (one input channel per group, stride 1): per block of channels
      and band of rows, each tap one multiply-add of contiguous values
      (:func:`depthwise_chunk`).
    * **full im2col** otherwise (strided rows, few channels): one GEMM of depth
      ``C_in/groups * kH * kW`` per chunk, on the input padded by :func:`pad_input`.
    """
    c_out, c_in_g = weight.shape[:2]
    if depthwise_taps(c_in_g, geo):
        if padding_mode != "zeros":  # zero padding is written into each band instead
            x, geo = pad_input(x, geo, padding_mode), without_padding(geo)
        _depthwise(x, weight, geo, groups, out, epilogue)
        return
    chunk = row_tap_chunk(
        x.shape[0], groups, c_in_g, c_out // groups, weight.shape[2:], geo, x.dtype.itemsize
    )
    if chunk is None:
        xp = pad_input(x, geo, padding_mode)
        _im2col(xp, weight, without_padding(geo), groups, out, epilogue)
    elif padding_mode == "zeros":
        _row_taps(x, weight, geo, groups, out, chunk, epilogue)
    else:
        xp = pad_input(x, geo, padding_mode)
        _row_taps(xp, weight, without_padding(geo), groups, out, chunk, epilogue)


def _row_taps(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    chunk: tuple[int, int],
    epilogue: ChunkEpilogue | None = None,
) -> None:
    """The row-tap path of :func:`conv2d_direct`, zero padding included (stride_h 1),
    in chunks of ``chunk = (rows, columns)`` of output."""
    n_batch, _, height, width = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    ho, wo = geo.out_hw
    c_out_g = c_out // groups
    k = c_in_g * kw
    dh, dw, sw = geo.h.dilation, geo.w.dilation, geo.w.stride
    top, left = geo.h.pad_before, geo.w.pad_before
    reach = (kh - 1) * dh  # band rows beyond the chunk's own
    rows, cols = chunk
    # wrows[g, i]: kernel row i of group g as a (C_out/groups, C_in/groups * kW) matrix
    wrows = np.ascontiguousarray(
        weight.reshape(groups, c_out_g, c_in_g, kh, kw).transpose(0, 3, 1, 2, 4)
    ).reshape(groups, kh, c_out_g, k)
    out_rows = out.reshape(n_batch, groups, c_out_g, ho * wo)
    tasks = [
        (n, g, r0, c0)
        for n in range(n_batch)
        for g in range(groups)
        for r0 in range(0, ho, rows)
        for c0 in range(0, wo, cols)
    ]

    def valid(j: int, c0: int, w: int) -> tuple[int, int]:
        """Output columns [a, b) of [c0, c0 + w) whose tap j reads inside the input."""
        offset = j * dw - left  # output column c reads input column c * sw + offset
        a = max(c0, -(offset // sw))  # ceil(-offset / sw)
        b = min(c0 + w, (width - 1 - offset) // sw + 1)
        return a, max(a, b)

    def run(task: tuple[int, int, int, int], scratch: _RowTapScratch) -> None:
        n, g, r0, c0 = task
        r, w = min(rows, ho - r0), min(cols, wo - c0)
        band = r + reach
        taps = scratch.taps[: k * band * w].reshape(c_in_g, kw, band, w)
        if scratch.layout != (band, w, c0):
            # Columns that read the left/right padding: zero once for this layout;
            # the copies below never write them.
            scratch.layout = (band, w, c0)
            for j in range(kw):
                a, b = valid(j, c0, w)
                taps[:, j, :, : a - c0] = 0
                taps[:, j, :, b - c0 :] = 0
        y0 = r0 - top  # input row of band row 0
        lo, hi = _band_rows(y0, band, height)
        taps[:, :, : lo - y0] = 0  # rows in the top padding
        taps[:, :, hi - y0 :] = 0  # rows in the bottom padding
        channels = x[n, g * c_in_g : (g + 1) * c_in_g]
        for j in range(kw):
            a, b = valid(j, c0, w)
            if b > a and hi > lo:
                start = a * sw + j * dw - left
                taps[:, j, lo - y0 : hi - y0, a - c0 : b - c0] = channels[
                    :, lo:hi, start : start + (b - a - 1) * sw + 1 : sw
                ]
        matrix = taps.reshape(k, band * w)
        if r == 1 and w < wo:
            target = out[n, g * c_out_g : (g + 1) * c_out_g, r0, c0 : c0 + w]
        else:
            target = out_rows[n, g, :, r0 * wo : (r0 + r) * wo]
        np.matmul(wrows[g, 0], matrix[:, : r * w], out=target)
        for i in range(1, kh):
            tmp = scratch.partial[: c_out_g * r * w].reshape(c_out_g, r * w)
            np.matmul(wrows[g, i], matrix[:, i * dh * w : (i * dh + r) * w], out=tmp)
            target += tmp
        if epilogue is not None:
            epilogue(n, g * c_out_g, r0 * wo + c0, target, scratch.epilogue)

    def scratch() -> _RowTapScratch:
        return _RowTapScratch(
            np.empty(k * (rows + reach) * cols, dtype=x.dtype),
            np.empty(c_out_g * rows * cols if kh > 1 else 0, dtype=x.dtype),
            None if epilogue is None else epilogue.scratch(),
        )

    run_tasks(tasks, run, scratch)


def depthwise_taps(c_in_g: int, geo: ConvGeometry) -> bool:
    """Does :func:`conv2d_direct` take the depthwise-taps path (one input channel per
    group, stride 1 both ways)?"""
    return c_in_g == 1 and geo.h.stride == 1 and geo.w.stride == 1


def depthwise_chunk(n_channels: int, geo: ConvGeometry) -> tuple[int, int]:
    """(channels, output rows) per task of the depthwise-taps path.

    A task holds ``channels`` padded input bands of ``rows + (kH - 1) * dilation`` rows
    and two ``rows``-row accumulators, all ``W + left + right`` wide. A channel larger
    than ``DEPTHWISE_TAP_VALUES`` is cut into bands of equal height; smaller ones are
    taken whole, as many per task as fit, but no more than leave every thread a task.
    """
    ho, wp = geo.out_hw[0], geo.w.padded
    threads = thread_count()
    if ho * wp > DEPTHWISE_TAP_VALUES or n_channels < threads:
        bands = max(-(-ho * wp // DEPTHWISE_TAP_VALUES), -(-threads // n_channels))
        return 1, -(-ho // min(ho, bands))
    fit = max(1, DEPTHWISE_TAP_VALUES // (ho * wp))
    return min(fit, -(-n_channels // threads)), ho


def _depthwise(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    epilogue: ChunkEpilogue | None = None,
) -> None:
    """The depthwise-taps path of :func:`conv2d_direct` (``C_in/groups == 1``, stride 1).

    In a zero-padded band of input rows laid out flat, ``W_p`` values per row, output
    ``(y, x)`` sits at ``y * W_p + x`` and tap ``(i, j)`` reads ``i * dh * W_p + j * dw``
    values further on: every tap is one multiply and one add of a contiguous run,
    computed for the ``W_p - W_out`` padding columns too, which are dropped when the band
    is copied out.  ``kH * kW`` such passes against im2col's ``kH * kW`` copies plus a
    GEMV: conv + BN + ReLU of 64 depthwise 3x3 at 256^2, 2 threads, 13.6 against 24 ms
    (see ``DEPTHWISE_TAP_VALUES``).  With a channel multiplier (``C_out/groups > 1``)
    each band serves its ``C_out/groups`` outputs.
    """
    n_batch, _, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    mult = c_out // groups
    ho, wo = geo.out_hw
    wp = geo.w.padded
    dh, dw = geo.h.dilation, geo.w.dilation
    top, left = geo.h.pad_before, geo.w.pad_before
    reach = (kh - 1) * dh
    block, rows = depthwise_chunk(n_batch * groups, geo)
    offsets = [i * dh * wp + j * dw for i in range(kh) for j in range(kw)]
    # taps[o, t] as a column: weight of tap t for output channel o, broadcast over a run
    taps = np.ascontiguousarray(weight.reshape(c_out, kh * kw).T)[:, :, None]
    tasks = [
        (n, g0, r0)
        for n in range(n_batch)
        for g0 in range(0, groups, block)
        for r0 in range(0, ho, rows)
    ]

    def run(task: tuple[int, int, int], scratch: _DepthwiseScratch) -> None:
        n, g0, r0 = task
        g1 = min(g0 + block, groups)
        b, r = g1 - g0, min(rows, ho - r0)
        band = r + reach
        span = r * wp - (kw - 1) * dw  # the last row's columns past W_out are not needed
        padded = scratch.band[: b * band * wp].reshape(b, band, wp)
        if scratch.layout != (band, b):  # columns in the left/right padding: zero once
            scratch.layout = (band, b)
            padded[:, :, :left] = 0
            padded[:, :, left + width :] = 0
        y0 = r0 - top  # input row of band row 0
        lo, hi = _band_rows(y0, band, height)
        padded[:, : lo - y0] = 0
        padded[:, hi - y0 :] = 0
        padded[:, lo - y0 : hi - y0, left : left + width] = x[n, g0:g1, lo:hi]
        flat = padded.reshape(b, band * wp)
        acc = scratch.acc[: b * r * wp].reshape(b, r * wp)
        tmp = scratch.tmp[: b * span].reshape(b, span)
        for k in range(mult):
            channels = slice(g0 * mult + k, g1 * mult + k, mult)
            weights = taps[:, channels]
            np.multiply(flat[:, offsets[0] : offsets[0] + span], weights[0], out=acc[:, :span])
            for t in range(1, kh * kw):
                np.multiply(flat[:, offsets[t] : offsets[t] + span], weights[t], out=tmp)
                acc[:, :span] += tmp
            target = out[n, channels, r0 : r0 + r]
            target[...] = acc.reshape(b, r, wp)[:, :, :wo]
            if epilogue is None:
                continue
            if mult == 1:
                view = out[n, g0:g1].reshape(b, ho * wo)[:, r0 * wo : (r0 + r) * wo]
                epilogue(n, g0, r0 * wo, view, scratch.epilogue)
            else:  # the channels of one k are not adjacent in the output
                for g in range(g0, g1):
                    o = g * mult + k
                    view = out[n, o : o + 1].reshape(1, ho * wo)[:, r0 * wo : (r0 + r) * wo]
                    epilogue(n, o, r0 * wo, view, scratch.epilogue)

    def scratch() -> _DepthwiseScratch:
        return _DepthwiseScratch(
            np.empty(block * (rows + reach) * wp, dtype=x.dtype),
            np.empty(block * rows * wp, dtype=x.dtype),
            np.empty(block * rows * wp, dtype=x.dtype),
            None if epilogue is None else epilogue.scratch(),
        )

    run_tasks(tasks, run, scratch)


@dataclass
class _DepthwiseScratch:
    """One thread's buffers for :func:`_depthwise`: padded input bands, the accumulator,
    a product, the epilogue's scratch, and the (band rows, channels) layout whose
    padding columns are zeroed."""

    band: np.ndarray
    acc: np.ndarray
    tmp: np.ndarray
    epilogue: Any = None
    layout: tuple[int, int] | None = None


@dataclass
class _RowTapScratch:
    """One thread's buffers for :func:`_row_taps`: the band of taps, a partial sum, the
    epilogue's scratch, and the (band rows, columns, first column) layout whose padding
    columns are zeroed."""

    taps: np.ndarray
    partial: np.ndarray
    epilogue: Any = None
    layout: tuple[int, int, int] | None = None


def _im2col(
    xp: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    epilogue: ChunkEpilogue | None = None,
) -> None:
    """The full-im2col path of :func:`conv2d_direct`, on an already padded ``xp``."""
    n_batch = xp.shape[0]
    c_out, c_in_g, kh, kw = weight.shape
    ho, wo = geo.out_hw
    c_out_g = c_out // groups
    k = c_in_g * kh * kw
    rows, width = _chunk_shape(k, c_out_g, ho, wo, c_in_g, xp.dtype.itemsize)
    wmat = np.ascontiguousarray(weight.reshape(groups, c_out_g, k))
    out_rows = out.reshape(n_batch, groups, c_out_g, ho * wo)
    _, s_c, s_h, s_w = xp.strides
    sh, sw = geo.h.stride, geo.w.stride
    dh, dw = geo.h.dilation, geo.w.dilation
    # Every im2col column of the whole input as one read-only view; chunks slice it.
    windows = as_strided(
        xp,
        shape=(n_batch, groups, c_in_g, kh, kw, ho, wo),
        strides=(xp.strides[0], c_in_g * s_c, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
        writeable=False,
    )
    tasks = [
        (n, g, r0, c0)
        for n in range(n_batch)
        for g in range(groups)
        for r0 in range(0, ho, rows)
        for c0 in range(0, wo, width)
    ]

    def run(task: tuple[int, int, int, int], buffers: tuple[np.ndarray, Any]) -> None:
        n, g, r0, c0 = task
        buffer, epilogue_buffer = buffers
        r, w = min(rows, ho - r0), min(width, wo - c0)
        cols = buffer[: k * r * w].reshape(c_in_g, kh, kw, r, w)
        np.copyto(cols, windows[n, g, :, :, :, r0 : r0 + r, c0 : c0 + w])
        if r == 1:  # part of (or a whole) row
            target = out[n, g * c_out_g : (g + 1) * c_out_g, r0, c0 : c0 + w]
        else:  # whole rows
            target = out_rows[n, g, :, r0 * wo : (r0 + r) * wo]
        np.matmul(wmat[g], cols.reshape(k, r * w), out=target)
        if epilogue is not None:
            epilogue(n, g * c_out_g, r0 * wo + c0, target, epilogue_buffer)

    def scratch() -> tuple[np.ndarray, Any]:
        buffer = np.empty(k * rows * width, dtype=xp.dtype)
        return buffer, None if epilogue is None else epilogue.scratch()

    run_tasks(tasks, run, scratch)


def _chunk_shape(
    k: int, c_out_g: int, ho: int, wo: int, c_in_g: int, itemsize: int
) -> tuple[int, int]:
    """(rows, columns) of output per im2col chunk: whole rows while they fit the budget."""
    budget = DEPTHWISE_CHUNK_BYTES if c_in_g == 1 else IM2COL_CHUNK_BYTES
    columns = max(1, budget // ((k + c_out_g) * itemsize))
    if columns >= wo:
        return min(ho, columns // wo), wo
    return 1, min(wo, max(MIN_CHUNK_COLUMNS, columns))
