"""The two convolution engines behind :func:`cbr_cli.ops.conv2d`, and the cost model.

Both take an already padded input and write into a preallocated output; validation,
padding and dtype policy live in :mod:`cbr_cli.ops`.  Neither loops over pixels:

* **direct** — im2col in chunks of output rows, each chunk at most
  ``IM2COL_CHUNK_BYTES`` so it stays in cache, then one GEMM (BLAS through
  ``np.matmul``) written straight into the output.  Convolutions with one input channel
  per group and one or two outputs per group (depthwise) would be GEMVs; they use a
  tap-by-tap multiply-accumulate over flat, cache-sized stretches of one channel instead.
* **fft** — overlap-save: each tile of output rows is one real 2-D FFT of the input
  rows it needs, multiplied by the conjugate kernel spectrum (cross-correlation
  theorem) and transformed back.  A single tile covers the whole image unless the
  spectra would exceed ``FFT_MEMORY_BYTES``.

Threads.  The direct engine splits its chunks over :func:`thread_count` Python threads
(numpy releases the GIL in BLAS and in copies), each with its own scratch buffer, and
runs BLAS single-threaded meanwhile: on 2 cores that was 1.1-3x faster than letting
OpenBLAS thread each chunk's GEMM, because the im2col copies run in parallel too and
OpenBLAS's per-call fork/join costs more than a whole small GEMM.  The FFT engine
passes the same count to ``scipy.fft`` as ``workers``.
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

# Target size of one im2col chunk (per thread).  Measured on 2 cores with 1 MiB L2
# each: 128 KiB-1 MiB all within noise for K = 27; the GEMM rate for K = 576 drops
# from 85 to 65 GFLOP/s once a chunk is 9 MiB.  At least one output row per chunk.
IM2COL_CHUNK_BYTES = 768 * 1024
# Target size of one depthwise accumulator (one channel, some rows, per thread).
DEPTHWISE_CHUNK_BYTES = 256 * 1024
# Upper bound on the complex spectra held at once by the FFT engine.
FFT_MEMORY_BYTES = 64 * 1024 * 1024

_threads: int | None = None


def set_threads(threads: int | None) -> None:
    """Threads for both engines (None: every CPU this process may use).

    ``cbr batch`` workers set 1: each process then runs single-threaded and BLAS is
    left alone.
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


# Older names, kept for callers that only thought of the FFT engine.
set_fft_workers = set_threads
fft_workers = thread_count


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


def _run_tasks(
    tasks: Sequence[_Task], run: Callable[[_Task, Any], None], scratch: Callable[[], Any]
) -> None:
    """Call ``run(task, buffers)`` for every task, on up to :func:`thread_count` threads.

    Each thread makes its own ``buffers = scratch()`` once and pulls the next task
    when it is done with one, so a thread slowed by other processes does less.
    """
    threads = min(thread_count(), len(tasks))
    if threads <= 1:
        buffers = scratch()
        for task in tasks:
            run(task, buffers)
        return
    lock = threading.Lock()
    pending = iter(tasks)
    failed = threading.Event()

    def worker() -> None:
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

    with _single_threaded_blas(), ThreadPoolExecutor(threads) as pool:
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
    budget = DEPTHWISE_CHUNK_BYTES if c_in_g == 1 else IM2COL_CHUNK_BYTES
    rows = max(1, min(ho, budget // ((k + c_out_g) * wo * xp.dtype.itemsize)))
    wmat = np.ascontiguousarray(weight.reshape(groups, c_out_g, k))
    out_flat = out.reshape(n_batch, groups, c_out_g, ho * wo)
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
    tasks = [(n, g, r0) for n in range(n_batch) for g in range(groups) for r0 in range(0, ho, rows)]

    def run(task: tuple[int, int, int], buffer: np.ndarray) -> None:
        n, g, r0 = task
        r = min(rows, ho - r0)
        cols = buffer[: k * r * wo].reshape(c_in_g, kh, kw, r, wo)
        np.copyto(cols, windows[n, g, :, :, :, r0 : r0 + r])
        target = out_flat[n, g, :, r0 * wo : (r0 + r) * wo]
        np.matmul(wmat[g], cols.reshape(k, r * wo), out=target)

    _run_tasks(tasks, run, lambda: np.empty(k * rows * wo, dtype=xp.dtype))


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
    from scipy.fft import next_fast_len

    ho = geo.h.size_out
    sh, eh = geo.h.stride, geo.h.effective_kernel
    lw = next_fast_len(geo.w.padded, real=True)
    c_in_g, c_out_g = c_in // groups, c_out // groups
    planes = 2 * c_in + c_out * c_in_g + 3 * c_out_g
    per_row = (lw // 2 + 1) * 2 * itemsize * planes
    max_height = FFT_MEMORY_BYTES // max(per_row, 1)
    max_rows = max(1, min(ho, (max_height - eh) // sh + 1))
    tiles = -(-ho // max_rows)
    tile_rows = -(-ho // tiles)
    lh = next_fast_len((tile_rows - 1) * sh + eh, real=True)
    return FftPlan(tile_rows, tiles, lh, lw)


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
