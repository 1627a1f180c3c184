"""The two convolution engines behind :func:`cbr_cli.ops.conv2d`, and the cost model.

Both take an already padded input and write into a preallocated output; validation,
padding and dtype policy live in :mod:`cbr_cli.ops`.  Neither loops over pixels:

* **direct** — im2col in chunks of output rows, sized to stay in cache, each chunk
  one GEMM (BLAS through ``np.matmul``) written straight into the output.  Depthwise
  convolutions (one input channel per group) are a different shape of problem —
  a GEMV per channel — and use a tap-by-tap multiply-accumulate vectorised over all
  channels of a cache-sized row chunk instead.
* **fft** — overlap-save: each tile of output rows is one real 2-D FFT of the input
  rows it needs, multiplied by the conjugate kernel spectrum (cross-correlation
  theorem) and transformed back.  A single tile covers the whole image unless the
  spectra would exceed a memory budget.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cbr_cli.shapes import ConvGeometry

# Target size of one im2col chunk.  L2 is 1-2 MiB per core on the machines we
# measured; a chunk this size plus its GEMM output stays in L2.
IM2COL_CHUNK_BYTES = 512 * 1024
# Target size of one depthwise accumulator chunk (all channels, some rows).
DEPTHWISE_CHUNK_BYTES = 128 * 1024
# Upper bound on the complex spectra held at once by the FFT engine.
FFT_MEMORY_BYTES = 256 * 1024 * 1024

_fft_workers: int | None = None


def set_fft_workers(workers: int | None) -> None:
    """Threads for ``scipy.fft`` (None: every CPU). ``cbr batch`` workers set 1."""
    global _fft_workers
    _fft_workers = workers


def fft_workers() -> int:
    return _fft_workers or os.cpu_count() or 1


# --------------------------------------------------------------------- direct


def conv2d_direct(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, groups: int, out: np.ndarray
) -> None:
    """Cross-correlate padded ``xp`` (N, C_in, Hp, Wp) with ``weight`` into ``out``.

    ``out`` has shape (N, C_out, H_out, W_out) and is C-contiguous.
    """
    n_batch, c_in, _, _ = xp.shape
    c_out, c_in_g, kh, kw = weight.shape
    if c_in_g == 1 and groups == c_in and c_out == c_in:
        _depthwise(xp, weight, geo, out)
        return
    ho, wo = geo.out_hw
    c_out_g = c_out // groups
    k = c_in_g * kh * kw
    itemsize = xp.dtype.itemsize
    rows = max(1, min(ho, IM2COL_CHUNK_BYTES // (k * wo * itemsize)))
    buffer = np.empty(k * rows * wo, dtype=xp.dtype)
    wmat = np.ascontiguousarray(weight.reshape(groups, c_out_g, k))
    out_flat = out.reshape(n_batch, groups, c_out_g, ho * wo)
    _, s_c, s_h, s_w = xp.strides
    sh, sw = geo.h.stride, geo.w.stride
    dh, dw = geo.h.dilation, geo.w.dilation
    for n in range(n_batch):
        for g in range(groups):
            x_g = xp[n, g * c_in_g : (g + 1) * c_in_g]
            for r0 in range(0, ho, rows):
                r = min(rows, ho - r0)
                window = as_strided(
                    x_g[:, r0 * sh :],
                    shape=(c_in_g, kh, kw, r, wo),
                    strides=(s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
                    writeable=False,
                )
                cols = buffer[: k * r * wo].reshape(c_in_g, kh, kw, r, wo)
                np.copyto(cols, window)
                np.matmul(
                    wmat[g],
                    cols.reshape(k, r * wo),
                    out=out_flat[n, g, :, r0 * wo : (r0 + r) * wo],
                )


def _depthwise(xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, out: np.ndarray) -> None:
    """Depthwise case (groups == C_in == C_out): sum over taps of weight * shifted input."""
    n_batch, channels, _, _ = xp.shape
    _, _, kh, kw = weight.shape
    ho, wo = geo.out_hw
    sh, sw = geo.h.stride, geo.w.stride
    dh, dw = geo.h.dilation, geo.w.dilation
    rows = max(1, min(ho, DEPTHWISE_CHUNK_BYTES // (channels * wo * xp.dtype.itemsize)))
    taps = [
        (i, j, weight[:, 0, i, j].reshape(channels, 1, 1).copy())
        for i in range(kh)
        for j in range(kw)
    ]
    tmp = np.empty((channels, rows, wo), dtype=xp.dtype)
    for n in range(n_batch):
        for r0 in range(0, ho, rows):
            r = min(rows, ho - r0)
            acc = out[n, :, r0 : r0 + r]
            t = tmp[:, :r]
            for index, (i, j, w) in enumerate(taps):
                top = r0 * sh + i * dh
                left = j * dw
                src = xp[
                    n, :, top : top + (r - 1) * sh + 1 : sh, left : left + (wo - 1) * sw + 1 : sw
                ]
                if index == 0:
                    np.multiply(src, w, out=acc)
                else:
                    np.multiply(src, w, out=t)
                    acc += t


# ------------------------------------------------------------------------ fft


def conv2d_fft(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, groups: int, out: np.ndarray
) -> None:
    """Cross-correlate padded ``xp`` with ``weight`` by FFT (overlap-save over row tiles)."""
    import scipy.fft as sfft

    n_batch, c_in, _, wp = xp.shape
    c_out, c_in_g, kh, kw = weight.shape
    c_out_g = c_out // groups
    ho, wo = geo.out_hw
    sh, sw = geo.h.stride, geo.w.stride
    eh, ew = geo.h.effective_kernel, geo.w.effective_kernel
    complex_dtype = np.complex64 if xp.dtype == np.float32 else np.complex128
    csize = np.dtype(complex_dtype).itemsize

    lw = sfft.next_fast_len(wp, real=True)
    tile_rows = _fft_tile_rows(ho, sh, eh, lw, c_in, c_out, c_in_g, csize)
    lh = sfft.next_fast_len((tile_rows - 1) * sh + eh, real=True)

    dilated = np.zeros((c_out, c_in_g, eh, ew), dtype=xp.dtype)
    dilated[:, :, :: geo.h.dilation, :: geo.w.dilation] = weight
    kernel_spec = np.conj(
        sfft.rfft2(dilated, s=(lh, lw), axes=(-2, -1), workers=fft_workers())
    ).astype(complex_dtype, copy=False)
    acc = np.empty((c_out_g, lh, lw // 2 + 1), dtype=complex_dtype)
    tmp = np.empty_like(acc)
    tile = np.zeros((c_in, lh, lw), dtype=xp.dtype)

    for n in range(n_batch):
        for r0 in range(0, ho, tile_rows):
            r = min(tile_rows, ho - r0)
            height = (r - 1) * sh + eh
            tile[:, :height, :wp] = xp[n, :, r0 * sh : r0 * sh + height]
            tile[:, height:, :] = 0
            spec = sfft.rfft2(tile, axes=(-2, -1), workers=fft_workers())
            for g in range(groups):
                for c in range(c_in_g):
                    k_spec = kernel_spec[g * c_out_g : (g + 1) * c_out_g, c]
                    x_spec = spec[g * c_in_g + c]
                    if c == 0:
                        np.multiply(k_spec, x_spec, out=acc)
                    else:
                        np.multiply(k_spec, x_spec, out=tmp)
                        acc += tmp
                full = sfft.irfft2(acc, s=(lh, lw), axes=(-2, -1), workers=fft_workers())
                out[n, g * c_out_g : (g + 1) * c_out_g, r0 : r0 + r] = full[
                    :, : (r - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw
                ]


def _fft_tile_rows(
    ho: int, sh: int, eh: int, lw: int, c_in: int, c_out: int, c_in_g: int, csize: int
) -> int:
    """Output rows per FFT tile so that the spectra stay within ``FFT_MEMORY_BYTES``."""
    per_row = (lw // 2 + 1) * csize * (c_in + 2 * c_out + c_out * c_in_g)
    max_height = max(eh, FFT_MEMORY_BYTES // max(per_row, 1))
    return max(1, min(ho, (max_height - eh) // sh + 1))


# ----------------------------------------------------------------- cost model

# Relative throughputs measured on the development machine (2 cores, AVX-512):
# sustained GEMM multiply-adds per second vs FFT "butterfly units" per second.
_GEMM_MACS_PER_UNIT = 1.0
_FFT_COST_PER_POINT_LOG = 1.5
_SPECTRAL_MAC_COST = 4.0


def choose_method(
    n_batch: int, c_in: int, c_out: int, groups: int, kernel: tuple[int, int], geo: ConvGeometry
) -> str:
    """``"direct"`` or ``"fft"``, whichever the cost model predicts to be cheaper."""
    kh, kw = kernel
    c_in_g = c_in // groups
    ho, wo = geo.out_hw
    direct = n_batch * c_out * c_in_g * kh * kw * ho * wo / _GEMM_MACS_PER_UNIT
    if c_in_g == 1:
        direct *= 2.0  # depthwise/GEMV: memory-bound, no BLAS-level reuse
    points = geo.h.padded * geo.w.padded
    fft = (
        n_batch
        * (
            (c_in + c_out) * points * math.log2(max(points, 2)) * _FFT_COST_PER_POINT_LOG
            + c_out * c_in_g * points / 2 * _SPECTRAL_MAC_COST
        )
        + c_out * c_in_g * points * math.log2(max(points, 2)) * _FFT_COST_PER_POINT_LOG
    )
    return "fft" if fft < direct else "direct"
