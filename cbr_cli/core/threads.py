"""The engines' threads: how many, a helper pool kept between calls, BLAS held at one thread.

The direct engine splits its chunks over :func:`thread_count` threads (the caller and
helpers kept between calls; numpy releases the GIL in BLAS and in copies), each with its
own scratch buffer, and holds BLAS single-threaded meanwhile: on 2 cores that was 1.1-3x
faster than letting OpenBLAS thread each chunk's GEMM, because the im2col copies run in
parallel too and OpenBLAS's fork/join per call costs about as much as a small GEMM. The
FFT engine passes the same count to ``scipy.fft`` as ``workers``; BatchNorm and the
activations use :func:`run_tasks` too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

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
