"""What a convolution costs: the time model behind ``conv2d(method="auto")``, and memory.

:func:`choose_method` compares :func:`direct_seconds` and :func:`fft_seconds`, whose
constants were measured on a 2-vCPU AVX-512 machine (see the comments below).
:func:`scratch_bytes` bounds what the chosen engine allocates besides its output.
"""

from __future__ import annotations

import math

from cbr_cli.core.conv_direct import (
    _chunk_shape,
    depthwise_chunk,
    depthwise_taps,
    row_tap_chunk,
)
from cbr_cli.core.conv_fft import fft_plan
from cbr_cli.core.shapes import ConvGeometry, crop_zero_taps
from cbr_cli.core.threads import thread_count

# Seconds per unit of work, fitted (least squares on relative error) to 95 timed
# convolutions on the development machine: 2 vCPUs (AVX-512, shared with other jobs),
# both engines on 2 threads, float32; C_in -> C_out of 1->1, 1->8, 3->16, 3->64,
# 16->16, 64->64, 8->16 in 4 groups and 64 depthwise; 64^2 to 2048^2 pixels; square
# kernels 3 to 31.  The models predict those times within 0.55-1.25x (10th-90th
# percentile).  Measured crossovers (smallest kernel at which fft wins):
#
#   1->1      256^2: 9   1024^2: 11-15   2048^2: 11
#   1->8      256^2: 21  1024^2: 15-21
#   3->16     256^2: 15-21   512^2: 15   1024^2: 11-15
#   3->64     512^2: > 11 (fft never won up to 11)
#   16->16    256^2: 11
#   64->64    256^2: never up to 9 (fft 4-8x slower: 4096 kernel spectra)
#   64 depthwise 256^2: 9-11;  8->16, 4 groups, 256^2: 15
#
# With these constants ``auto`` picked the slower engine in 10 of the 95 cases, by
# 1.02-1.2x near a crossover, and in four sub-3-ms 256^2 single-channel cases.  On 69
# cases not used in the fit (1->1 512^2, 1->4 768^2, 8->8 256^2, 2->16 512^2, 32->32
# 128^2, 3->8 1024^2 at stride 2, batch 4 of 3->8 256^2, 16 depthwise 512^2; kernels
# 5-31) it picked the faster one 63 times; the 6 misses cost 1.01-1.37x, all within two
# kernel sizes of the crossover.
_DIRECT_PER_MAC = 3.1e-11  # GEMM multiply-add (about 64 GFLOP/s on 2 threads)
_DIRECT_PER_COPY = 2.9e-10  # im2col value copied
_DIRECT_PER_OUTPUT = 5.7e-10  # output value written (GEMM C, memory traffic)
_DIRECT_FIXED = 0.3e-3  # per call: measured on a 64x64 image
_FFT_PER_POINT_LOG = 4.2e-10  # per point x log2(points) of one real 2-D transform
_FFT_PER_SPECTRAL_MAC = 3.5e-9  # complex multiply-add in the half spectrum
_FFT_FIXED = 1.5e-3  # per call: measured on a 64x64 image


def choose_method(
    n_batch: int,
    c_in: int,
    c_out: int,
    groups: int,
    kernel: tuple[int, int],
    geo: ConvGeometry,
    itemsize: int = 4,
) -> str:
    """``"direct"`` or ``"fft"``, whichever the cost model predicts to be faster."""
    direct = direct_seconds(n_batch, c_in, c_out, groups, kernel, geo, itemsize)
    fft = fft_seconds(n_batch, c_in, c_out, groups, kernel, geo, itemsize)
    return "fft" if fft < direct else "direct"


def direct_seconds(
    n_batch: int,
    c_in: int,
    c_out: int,
    groups: int,
    kernel: tuple[int, int],
    geo: ConvGeometry,
    itemsize: int = 4,
) -> float:
    """Predicted time of :func:`conv2d_direct`: GEMM, im2col copy and output traffic.

    The row-tap path copies ``C_in/groups * kW`` values per output position and band
    row (``(rows + reach) / rows`` band rows per output row) instead of ``K``.  (Fitted
    before that path existed; it predicts row-tap times about 2x too high, but the
    choices it changes are the near-crossover ones, where both engines are close.)
    """
    c_in_g, c_out_g = c_in // groups, c_out // groups
    k = c_in_g * kernel[0] * kernel[1]
    copies = k
    chunk = row_tap_chunk(n_batch, groups, c_in_g, c_out_g, kernel, geo, itemsize)
    if chunk is not None:
        rows, reach = chunk[0], (kernel[0] - 1) * geo.h.dilation
        copies = c_in_g * kernel[1] * (rows + reach) / rows
    positions = n_batch * groups * geo.h.size_out * geo.w.size_out
    per_position = k * c_out_g * _DIRECT_PER_MAC + copies * _DIRECT_PER_COPY
    return _DIRECT_FIXED + positions * (per_position + c_out_g * _DIRECT_PER_OUTPUT)


def fft_seconds(
    n_batch: int,
    c_in: int,
    c_out: int,
    groups: int,
    kernel: tuple[int, int],
    geo: ConvGeometry,
    itemsize: int = 4,
) -> float:
    """Predicted time of :func:`conv2d_fft` for the tiles :func:`fft_plan` makes.

    ``itemsize`` as the engine itself plans: float64 spectra are twice as large, so the
    same memory budget holds half the rows and the input is cut into more tiles.

    Kernel spectra once; per tile and sample one forward transform per input channel,
    one inverse per output channel and ``C_out * C_in/groups`` spectral products.
    """
    plan = fft_plan(c_in, c_out, groups, geo, itemsize)
    points = plan.lh * plan.lw
    transform = points * math.log2(max(points, 2)) * _FFT_PER_POINT_LOG
    products = c_out * (c_in // groups)
    per_tile = (c_in + c_out) * transform + products * points / 2 * _FFT_PER_SPECTRAL_MAC
    return _FFT_FIXED + products * transform + n_batch * plan.tiles * per_tile


def scratch_bytes(
    n_batch: int,
    c_in: int,
    c_out: int,
    groups: int,
    kernel: tuple[int, int],
    geo: ConvGeometry,
    padding_mode: str = "zeros",
    itemsize: int = 4,
) -> int:
    """Bytes the engine ``method="auto"`` picks allocates besides its output, at most.

    What :func:`conv2d_direct` or :func:`conv2d_fft` hold while they run: the padded
    input (the whole input again, with its padding: with a large dilation and
    ``padding="same"`` that is most of it), and per thread the im2col or row-tap chunk;
    for the FFT engine the dilated kernels, their spectra and one tile's transforms
    (complex values take ``2 * itemsize`` bytes).  Used by ``cbr apply``'s memory check
    before anything is allocated, so it counts generously rather than exactly.
    """
    if padding_mode == "zeros":  # as cbr_cli.ops.conv2d runs it
        geo = crop_zero_taps(geo).geometry
        kernel = (geo.h.kernel_size, geo.w.kernel_size)
    c_in_g, c_out_g = c_in // groups, c_out // groups
    kh, kw = kernel
    padded = n_batch * c_in * geo.h.padded * geo.w.padded * itemsize if any(geo.padding) else 0
    if choose_method(n_batch, c_in, c_out, groups, kernel, geo, itemsize) == "fft":
        plan = fft_plan(c_in, c_out, groups, geo, itemsize)
        half = plan.lh * (plan.lw // 2 + 1) * 2 * itemsize  # one complex half spectrum
        full = plan.lh * plan.lw * itemsize
        dilated = c_out * c_in_g * geo.h.effective_kernel * geo.w.effective_kernel * itemsize
        spectra = c_out * c_in_g * half
        tile = c_in * (full + half) + c_out_g * (2 * half + full)
        return padded + dilated + spectra + tile
    threads = thread_count()
    if depthwise_taps(c_in_g, geo):  # per thread: padded bands, accumulator, product
        block, rows = depthwise_chunk(n_batch * groups, geo)
        band = block * (rows + (kh - 1) * geo.h.dilation) * geo.w.padded
        padded = 0 if padding_mode == "zeros" else padded
        return padded + threads * (band + 2 * block * rows * geo.w.padded) * itemsize
    chunk = row_tap_chunk(n_batch, groups, c_in_g, c_out_g, kernel, geo, itemsize)
    if chunk is None:
        ho, wo = geo.out_hw
        k = c_in_g * kh * kw
        rows, width = _chunk_shape(k, c_out_g, ho, wo, c_in_g, itemsize)
        return padded + threads * k * rows * width * itemsize
    rows, cols = chunk
    if padding_mode == "zeros":
        padded = 0  # the row-tap path writes zero padding into each band instead
    reach = (kh - 1) * geo.h.dilation
    per_thread = (c_in_g * kw * (rows + reach) + c_out_g * rows) * cols * itemsize
    weight_rows = c_out * c_in_g * kh * kw * itemsize  # the weight reordered by kernel row
    return padded + weight_rows + threads * per_thread
