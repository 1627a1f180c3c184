"""The two convolution engines behind :func:`cbr_cli.ops.conv2d`, and the cost model.

Both take an already padded input and write into a preallocated output; validation,
padding and dtype policy live in :mod:`cbr_cli.ops`.  Neither loops over pixels:

* **direct** — im2col in chunks of output rows, each chunk (columns plus its slice of
  the output) about ``IM2COL_CHUNK_BYTES`` so it stays in cache, then one GEMM (BLAS
  through ``np.matmul``) written straight into the output.  No im2col matrix larger
  than one chunk per thread ever exists.  Depthwise convolutions (one input channel
  per group) take the same path: their GEMM is a GEMV, with its own chunk budget.
* **fft** — overlap-save: each tile of output rows is one real 2-D FFT of the input
  rows it needs, multiplied by the conjugate kernel spectrum (cross-correlation
  theorem) and transformed back.  Tiles are as tall as ``FFT_MEMORY_BYTES`` allows,
  so the engine's scratch memory is bounded whatever the image size.

Threads.  The direct engine splits its chunks over :func:`thread_count` Python threads
(numpy releases the GIL in BLAS and in copies), each with its own scratch buffer, and
holds BLAS single-threaded meanwhile: on 2 cores that was 1.1-3x faster than letting
OpenBLAS thread each chunk's GEMM, because the im2col copies run in parallel too and
OpenBLAS's fork/join per call costs about as much as a small GEMM.  The FFT engine
passes the same count to ``scipy.fft`` as ``workers``.

:func:`choose_method` picks the engine for ``method="auto"`` from a cost model whose
constants were measured on a 2-vCPU AVX-512 machine (see the comments there).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cbr_cli.shapes import ConvGeometry

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
# Narrowest chunk when one output row exceeds the budget (very large K).
MIN_CHUNK_COLUMNS = 64
# Upper bound on the spectra one FFT tile holds (see fft_plan).  1x2048x2048 with a
# 31x31 kernel: 16/32/64/128 MiB (7/4/2/1 tiles) took 59/62/79/94 ms, smaller tiles
# staying in cache; but with many channels the kernel spectra fill the budget (16->16,
# 21x21 at 512^2: 2 output rows per tile at 16 MiB) and tiles shrink towards the kernel
# height, where overlap-save recomputes most rows.  The cost model was fitted at 64 MiB.
FFT_MEMORY_BYTES = 64 * 1024 * 1024

_threads: int | None = None


def set_threads(threads: int | None) -> None:
    """Threads for both engines (None: every CPU this process may use).

    The direct engine runs that many Python threads and holds BLAS at one thread while
    it runs (restoring the limit afterwards); the FFT engine passes it to ``scipy.fft``
    as ``workers``.  ``cbr batch`` workers set ``cores // jobs``.
    """
    global _threads
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    _threads = threads


def thread_count() -> int:
    """The number of threads the engines use, see :func:`set_threads`."""
    if _threads is not None:
        return _threads
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# ------------------------------------------------------------------- threading

_Task = TypeVar("_Task")

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
_blas_controller: Any = None


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread while our own threads split the work.

    Counted, so that overlapping calls from several threads restore the original
    limit only when the last one leaves.
    """
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def run_tasks(
    tasks: Sequence[_Task], run: Callable[[_Task, Any], None], scratch: Callable[[], Any]
) -> None:
    """Call ``run(task, buffers)`` for every task, on up to :func:`thread_count` threads.

    Each thread makes its own ``buffers = scratch()`` once and pulls the next task when
    it is done with one, so a thread slowed down by other processes simply does fewer.
    BLAS is held single-threaded throughout, also with one thread: OpenBLAS threading
    each small GEMM ran 20x slower than one thread while another process kept a core busy.
    """
    threads = min(thread_count(), len(tasks))
    with _single_threaded_blas():
        if threads <= 1:
            buffers = scratch()
            for task in tasks:
                run(task, buffers)
            return
        lock = threading.Lock()
        pending = iter(tasks)
        failed = threading.Event()
        errors = np.geterr()  # numpy's error state is per thread: give workers the caller's

        def worker() -> None:
            np.seterr(**errors)
            buffers = scratch()
            while not failed.is_set():
                with lock:
                    task = next(pending, None)
                if task is None:
                    return
                try:
                    run(task, buffers)
                except BaseException:
                    failed.set()
                    raise

        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(worker) for _ in range(threads)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                failed.set()
                raise


# --------------------------------------------------------------------- direct


def conv2d_direct(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, groups: int, out: np.ndarray
) -> None:
    """Cross-correlate padded ``xp`` (N, C_in, Hp, Wp) with ``weight`` into ``out``.

    ``out`` has shape (N, C_out, H_out, W_out) and is C-contiguous.
    """
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

    def run(task: tuple[int, int, int, int], buffer: np.ndarray) -> None:
        n, g, r0, c0 = task
        r, w = min(rows, ho - r0), min(width, wo - c0)
        cols = buffer[: k * r * w].reshape(c_in_g, kh, kw, r, w)
        np.copyto(cols, windows[n, g, :, :, :, r0 : r0 + r, c0 : c0 + w])
        if r == 1:  # part of (or a whole) row
            target = out[n, g * c_out_g : (g + 1) * c_out_g, r0, c0 : c0 + w]
        else:  # whole rows
            target = out_rows[n, g, :, r0 * wo : (r0 + r) * wo]
        np.matmul(wmat[g], cols.reshape(k, r * w), out=target)

    run_tasks(tasks, run, lambda: np.empty(k * rows * width, dtype=xp.dtype))


def _chunk_shape(
    k: int, c_out_g: int, ho: int, wo: int, c_in_g: int, itemsize: int
) -> tuple[int, int]:
    """(rows, columns) of output per im2col chunk: whole rows while they fit the budget."""
    budget = DEPTHWISE_CHUNK_BYTES if c_in_g == 1 else IM2COL_CHUNK_BYTES
    columns = max(1, budget // ((k + c_out_g) * itemsize))
    if columns >= wo:
        return min(ho, columns // wo), wo
    return 1, min(wo, max(MIN_CHUNK_COLUMNS, columns))


# ------------------------------------------------------------------------ fft


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
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, groups: int, out: np.ndarray
) -> None:
    """Cross-correlate padded ``xp`` with ``weight`` by FFT (overlap-save over row tiles).

    ``full = irfft2(conj(rfft2(w)) * rfft2(x))`` is the circular cross-correlation; with
    both zero-padded to ``lh`` x ``lw`` >= tile + kernel - 1 its first ``(rows - 1) * sh + 1``
    rows and ``(W_out - 1) * sw + 1`` columns are free of wrap-around, and every
    ``sh``-th row / ``sw``-th column of them is the strided output.
    """
    import scipy.fft as sfft

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


# ----------------------------------------------------------------- cost model

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
    n_batch: int, c_in: int, c_out: int, groups: int, kernel: tuple[int, int], geo: ConvGeometry
) -> str:
    """``"direct"`` or ``"fft"``, whichever the cost model predicts to be faster."""
    direct = direct_seconds(n_batch, c_in, c_out, groups, kernel, geo)
    fft = fft_seconds(n_batch, c_in, c_out, groups, kernel, geo)
    return "fft" if fft < direct else "direct"


def direct_seconds(
    n_batch: int, c_in: int, c_out: int, groups: int, kernel: tuple[int, int], geo: ConvGeometry
) -> float:
    """Predicted time of :func:`conv2d_direct`: GEMM, im2col copy and output traffic."""
    c_in_g, c_out_g = c_in // groups, c_out // groups
    k = c_in_g * kernel[0] * kernel[1]
    positions = n_batch * groups * geo.h.size_out * geo.w.size_out
    per_position = k * c_out_g * _DIRECT_PER_MAC + k * _DIRECT_PER_COPY
    return _DIRECT_FIXED + positions * (per_position + c_out_g * _DIRECT_PER_OUTPUT)


def fft_seconds(
    n_batch: int, c_in: int, c_out: int, groups: int, kernel: tuple[int, int], geo: ConvGeometry
) -> float:
    """Predicted time of :func:`conv2d_fft` for the tiles :func:`fft_plan` makes.

    Kernel spectra once; per tile and sample one forward transform per input channel,
    one inverse per output channel and ``C_out * C_in/groups`` spectral products.
    """
    plan = fft_plan(c_in, c_out, groups, geo)
    points = plan.lh * plan.lw
    transform = points * math.log2(max(points, 2)) * _FFT_PER_POINT_LOG
    products = c_out * (c_in // groups)
    per_tile = (c_in + c_out) * transform + products * points / 2 * _FFT_PER_SPECTRAL_MAC
    return _FFT_FIXED + products * transform + n_batch * plan.tiles * per_tile
