"""The FFT convolution engine behind :func:`cbr_cli.core.ops.conv2d`: overlap-save.

Each tile of output rows is one real 2-D FFT of the input rows it needs, multiplied by the
conjugate kernel spectrum (cross-correlation theorem) and transformed back. Tiles are as
tall as ``FFT_MEMORY_BYTES`` allows, so the engine's scratch memory is bounded whatever
the image size. It uses :func:`cbr_cli.core.threads.thread_count` ``scipy.fft`` workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbr_cli.core.conv_direct import pad_input
from cbr_cli.core.shapes import ConvGeometry
from cbr_cli.core.threads import thread_count

# 31x31 kernel: 16/32/64/128 MiB (7/4/2/1 tiles) took 59/62/79/94 ms, smaller tiles
# Upper bound on the spectra one FFT tile holds (see fft_plan).  1x2048x2048 with a
# 31x31 kernel: 16/32/64/128 MiB (7/4/2/1 tiles) took 59/62/79/94 ms, smaller tiles
# staying in cache; but with many channels the kernel spectra fill the budget (16->16,
# 21x21 at 512^2: 2 output rows per tile at 16 MiB) and tiles shrink towards the kernel
# height, where overlap-save recomputes most rows.  The cost model was fitted at 64 MiB.
FFT_MEMORY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class FftPlan:
    """How :func:`conv2d_fft` tiles one convolution: ``tile_rows`` output rows per tile,
    each transformed at ``lh`` x ``lw`` (real input) points."""

    tile_rows: int
    tiles: int
    lh: int
    lw: int


def fft_plan(c_in: int, c_out: int, groups: int, geo: ConvGeometry, itemsize: int = 4) -> FftPlan:
    """Tile the output rows so that one tile's spectra fit in ``FFT_MEMORY_BYTES``.

    Per tile the engine holds the input tile and its spectrum (``C_in`` planes), the
    kernel spectra (``C_out * C_in/groups``), and for one group the accumulated spectrum,
    a product and the inverse transform (``3 * C_out/groups``).  Tiles are balanced
    (equal heights but the last) and at least one output row each.
    """
    ho = geo.h.size_out
    sh, eh = geo.h.stride, geo.h.effective_kernel
    lw = fast_len(geo.w.padded)
    c_in_g, c_out_g = c_in // groups, c_out // groups
    planes = 2 * c_in + c_out * c_in_g + 3 * c_out_g
    per_row = (lw // 2 + 1) * 2 * itemsize * planes
    max_height = FFT_MEMORY_BYTES // max(per_row, 1)
    max_rows = max(1, min(ho, (max_height - eh) // sh + 1))
    tiles = -(-ho // max_rows)
    tile_rows = -(-ho // tiles)
    lh = fast_len((tile_rows - 1) * sh + eh)
    return FftPlan(tile_rows, tiles, lh, lw)


def fast_len(n: int) -> int:
    """The smallest ``2**a * 3**b * 5**c >= n``: a length ``scipy.fft`` transforms fast.

    (What ``scipy.fft.next_fast_len(n, real=True)`` returns, without importing
    ``scipy.fft`` — the cost model calls this for every convolution.)
    """
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def conv2d_fft(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    padding_mode: str = "zeros",
) -> None:
    """Cross-correlate ``x``, padded per ``geo``, with ``weight`` by FFT (overlap-save over
    row tiles).

    ``full = irfft2(conj(rfft2(w)) * rfft2(x))`` is the circular cross-correlation; with
    both zero-padded to ``lh`` x ``lw`` >= tile + kernel - 1 its first ``(rows - 1) * sh + 1``
    rows and ``(W_out - 1) * sw + 1`` columns are free of wrap-around, and every
    ``sh``-th row / ``sw``-th column of them is the strided output.
    """
    import scipy.fft as sfft

    xp = pad_input(x, geo, padding_mode)
    n_batch, c_in, _, wp = xp.shape
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    ho, wo = geo.out_hw
    sh, sw = geo.h.stride, geo.w.stride
    eh, ew = geo.h.effective_kernel, geo.w.effective_kernel
    plan = fft_plan(c_in, c_out, groups, geo, xp.dtype.itemsize)
    lh, lw = plan.lh, plan.lw
    workers = thread_count()

    dilated = np.zeros((c_out, c_in_g, eh, ew), dtype=xp.dtype)
    dilated[:, :, :: geo.h.dilation, :: geo.w.dilation] = weight
    kernel_spec = sfft.rfft2(dilated, s=(lh, lw), workers=workers)
    np.conjugate(kernel_spec, out=kernel_spec)
    tile = np.zeros((c_in, lh, lw), dtype=xp.dtype)
    acc = np.empty((c_out_g, lh, lw // 2 + 1), dtype=kernel_spec.dtype)
    tmp = np.empty_like(acc) if c_in_g > 1 else None

    for n in range(n_batch):
        for r0 in range(0, ho, plan.tile_rows):
            r = min(plan.tile_rows, ho - r0)
            height = (r - 1) * sh + eh
            tile[:, :height, :wp] = xp[n, :, r0 * sh : r0 * sh + height]
            tile[:, height:, :wp] = 0
            spec = sfft.rfft2(tile, workers=workers)
            for g in range(groups):
                k_spec = kernel_spec[g * c_out_g : (g + 1) * c_out_g]
                np.multiply(k_spec[:, 0], spec[g * c_in_g], out=acc)
                for c in range(1, c_in_g):
                    np.multiply(k_spec[:, c], spec[g * c_in_g + c], out=tmp)
                    acc += tmp
                full = sfft.irfft2(acc, s=(lh, lw), workers=workers)
                out[n, g * c_out_g : (g + 1) * c_out_g, r0 : r0 + r] = full[
                    :, : (r - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw
                ]
