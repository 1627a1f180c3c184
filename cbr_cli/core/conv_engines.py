"""The two convolution engines behind :func:`cbr_cli.core.ops.conv2d`, and the cost model.

Both take the unpadded input, its geometry and ``padding_mode``, and write into a
preallocated output; validation and dtype policy live in :mod:`cbr_cli.core.ops`.  Neither
loops over pixels:

* **direct** — im2col in chunks of output rows, each chunk (columns plus its slice of
  the output) sized to stay in cache, then GEMMs (BLAS through ``np.matmul``) written
  straight into the output.  No im2col matrix larger than one chunk per thread ever
  exists.  With vertical stride 1 and enough input channels the chunks hold only the
  taps of one kernel row over a band of input rows (``kH`` times fewer copies, zero
  padding written into the band); otherwise the input is padded whole and each chunk
  holds every tap.  Depthwise convolutions (one input channel per group) take the
  full-im2col path: their GEMM is a GEMV, with its own chunk budget.
* **fft** — overlap-save: each tile of output rows is one real 2-D FFT of the input
  rows it needs, multiplied by the conjugate kernel spectrum (cross-correlation
  theorem) and transformed back.  Tiles are as tall as ``FFT_MEMORY_BYTES`` allows,
  so the engine's scratch memory is bounded whatever the image size.

Threads.  The direct engine splits its chunks over :func:`thread_count` threads (the
caller and helpers kept between calls; numpy releases the GIL in BLAS and in copies),
each with its own scratch buffer, and holds BLAS single-threaded meanwhile: on 2 cores
that was 1.1-3x faster than letting OpenBLAS thread each chunk's GEMM, because the
im2col copies run in parallel too and OpenBLAS's fork/join per call costs about as
much as a small GEMM.  The FFT engine passes the same count to ``scipy.fft`` as
``workers``.

:func:`choose_method` picks the engine for ``method="auto"`` from a cost model whose
constants were measured on a 2-vCPU AVX-512 machine (see the comments there).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cbr_cli.core.shapes import ConvGeometry

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


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()  # .busy: this thread is running tasks of a run_tasks call


def _start_helpers(worker: Callable[[], None], count: int) -> list[Future[None]]:
    """Run ``worker`` on ``count`` helper threads of a process-wide pool kept between
    calls (starting threads for every call cost about 0.2 ms, several times per layer).

    Submitted under the lock, so a call that grows the pool never shuts down a pool
    another call is about to submit to (work already submitted still runs).
    """
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(count, thread_name_prefix="cbr-engine")
            _pool_size = count
        return [_pool.submit(worker) for _ in range(count)]


def stop_helpers() -> None:
    """End the helper threads (they start again when needed).

    :class:`cbr_cli.batch.pool.WorkerPool` calls this before it forks worker processes, so
    that no thread is ever forked.
    """
    global _pool, _pool_size
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = None, 0


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start from scratch.

    If the parent was inside :func:`run_tasks` (BLAS held at one thread), the child
    gets its BLAS threads back.
    """
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users, _blas_limiter
    limiter = _blas_limiter
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()
    _blas_lock, _blas_users, _blas_limiter = threading.Lock(), 0, None
    if limiter is not None:
        limiter.restore_original_limits()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_tasks(
    tasks: Sequence[_Task], run: Callable[[_Task, Any], None], scratch: Callable[[], Any]
) -> None:
    """Call ``run(task, buffers)`` for every task, on up to :func:`thread_count` threads.

    The calling thread works too, with ``threads - 1`` helpers from a pool kept between
    calls. Each thread makes its own ``buffers = scratch()`` once and pulls the next task
    when it is done with one, so a thread slowed down by other processes simply does
    fewer. A ``run`` that itself calls ``run_tasks`` gets its tasks run in its own thread.
    BLAS is held single-threaded throughout, also with one thread: OpenBLAS threading
    each small GEMM ran 20x slower than one thread while another process kept a core busy.
    """
    threads = min(thread_count(), len(tasks))
    if getattr(_local, "busy", False):
        threads = 1
    with _single_threaded_blas():
        if threads <= 1:
            buffers = scratch()
            for task in tasks:
                run(task, buffers)
            return
        lock = threading.Lock()
        pending = iter(tasks)
        failed = threading.Event()
        errors = np.geterr()  # numpy's error state is per thread: give helpers the caller's

        def worker() -> None:
            np.seterr(**errors)
            _local.busy = True
            try:
                buffers = scratch()
                while not failed.is_set():
                    with lock:
                        task = next(pending, None)
                    if task is None:
                        return
                    run(task, buffers)
            except BaseException:
                failed.set()
                raise
            finally:
                _local.busy = False

        futures = _start_helpers(worker, threads - 1)
        try:
            worker()
        finally:
            wait(futures)  # on failure, the helpers stop after their current task
        for future in futures:
            future.result()  # a helper's exception is raised here


# --------------------------------------------------------------------- direct


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


def conv2d_direct(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    padding_mode: str = "zeros",
) -> None:
    """Cross-correlate ``x`` (N, C_in, H, W), padded per ``geo``, with ``weight`` into ``out``.

    ``out`` has shape (N, C_out, H_out, W_out) and is C-contiguous.  Two ways:

    * **row taps** (vertical stride 1, several input channels per group): per chunk of
      output rows, one im2col of the *kernel-row* taps (``C_in/groups * kW`` values per
      column) over the band of input rows the chunk reads; kernel row ``i`` then reads
      that band from row ``i * dilation`` on, so ``kH`` GEMMs of depth ``C_in/groups * kW``
      add up to the output.  That copies about ``kH`` times less than a full im2col, and
      zero padding is written into the band directly instead of padding the whole input.
    * **full im2col** otherwise (strided rows, depthwise, few channels): one GEMM of
      depth ``C_in/groups * kH * kW`` per chunk, on the input padded by :func:`pad_input`.
    """
    c_out, c_in_g = weight.shape[:2]
    chunk = row_tap_chunk(
        x.shape[0], groups, c_in_g, c_out // groups, weight.shape[2:], geo, x.dtype.itemsize
    )
    if chunk is None:
        _im2col(pad_input(x, geo, padding_mode), weight, without_padding(geo), groups, out)
    elif padding_mode == "zeros":
        _row_taps(x, weight, geo, groups, out, chunk)
    else:
        xp = pad_input(x, geo, padding_mode)
        _row_taps(xp, weight, without_padding(geo), groups, out, chunk)


def _row_taps(
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    out: np.ndarray,
    chunk: tuple[int, int],
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
        lo = min(max(y0, 0), y0 + band)  # input rows [lo, hi) are inside the image
        hi = max(min(y0 + band, height), lo)
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

    def scratch() -> _RowTapScratch:
        return _RowTapScratch(
            np.empty(k * (rows + reach) * cols, dtype=x.dtype),
            np.empty(c_out_g * rows * cols if kh > 1 else 0, dtype=x.dtype),
        )

    run_tasks(tasks, run, scratch)


@dataclass
class _RowTapScratch:
    """One thread's buffers for :func:`_row_taps`: the band of taps, a partial sum, and
    the (band rows, columns, first column) layout whose padding columns are zeroed."""

    taps: np.ndarray
    partial: np.ndarray
    layout: tuple[int, int, int] | None = None


def _im2col(
    xp: np.ndarray, weight: np.ndarray, geo: ConvGeometry, groups: int, out: np.ndarray
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
    fft = fft_seconds(n_batch, c_in, c_out, groups, kernel, geo)
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
