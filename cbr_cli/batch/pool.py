"""Worker processes for ``cbr batch`` and ``cbr calibrate``: bounded, interruptible, fair.

* One process per job (``concurrent.futures.ProcessPoolExecutor``). Images are decoded
  and processed in processes, not threads: decoding captures Pillow's warnings, which
  is not thread-safe (see :mod:`cbr_cli.io.images`). Start method: ``fork`` on Linux (no
  re-import, pages shared copy-on-write), ``spawn`` elsewhere. The processes are
  started by :meth:`WorkerPool.start`, before the caller starts any thread of its own
  (a progress display), so no thread is ever forked.
* Each worker limits BLAS (threadpoolctl) and cbr's convolution engines
  (:func:`cbr_cli.core.threads.set_threads`) to ``cores // jobs`` threads, so ``jobs``
  workers use the cores once, not ``jobs`` times.
* Each worker ignores SIGINT: on Ctrl-C the parent alone decides (it cancels queued
  work and terminates the workers, :meth:`WorkerPool.stop`). Each worker also dies
  with the parent (Linux ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread), so a
  SIGKILL-ed ``cbr batch`` leaves no orphan still writing files.
* At most ``window`` tasks are in flight (``2 * jobs`` by default): the queue is
  bounded, and so is memory, whatever the number of images. Tasks and results are
  small records; images and feature maps never cross the process boundary.
* ``jobs == 1`` runs tasks in the calling process: no pickling, and BLAS keeps every core.

Task functions read the per-run state given to :class:`WorkerPool` with :func:`state`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cbr_cli.errors import CbrError

T = TypeVar("T")
R = TypeVar("R")

_state: Any = None
_limits: Any = None  # keeps threadpoolctl's limits alive in a worker


@dataclass(frozen=True)
class Progress:
    """Where a phase of a run stands; sent to a progress callback after every image.

    ``phase`` is e.g. ``"BN statistics layer1 (1/2)"`` or ``"process"``; ``done`` counts
    finished images (failed ones included); ``item``/``reason`` name the image just
    finished and, if it failed, why (one line). ``skipped`` counts images left out
    of the phase because an earlier run finished them.
    """

    phase: str
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    item: str | None = None
    reason: str | None = None


def default_jobs() -> int:
    """The CPUs this process may use: :func:`cbr_cli.core.threads.thread_count`."""
    from cbr_cli.core.threads import thread_count

    return thread_count()


JOBS_PER_CPU = 4
"""Most worker processes per CPU :func:`max_jobs` allows. Each worker is CPU-bound
(decoding, convolutions, PNG encoding) and holds its own copy of the built layers and
an image's feature maps: beyond one per CPU, more workers only time-share the cores,
and they add memory and contention. A small multiple still covers workers that wait on
a slow disk; 4 is that margin, not a speed-up."""


def max_jobs() -> int:
    """The largest ``--jobs``: :data:`JOBS_PER_CPU` per CPU this process may use."""
    affinity = getattr(os, "sched_getaffinity", None)  # the CPUs this process may run on
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return JOBS_PER_CPU * max(1, cpus)


def resolve_jobs(jobs: int | None, tasks: int) -> int:
    """Worker processes for ``tasks`` tasks: ``jobs`` (default :func:`default_jobs`),
    at most one per task, at least one.

    Raises
    ------
    CbrError
        ``jobs`` is given and not positive, or more than :func:`max_jobs` (refused, not
        clamped: ``-j 400`` for ``-j 40`` is a typo worth hearing about, and leaving
        ``--jobs`` out already means "the CPUs available" on any machine).
    """
    if jobs is not None and jobs < 1:
        raise CbrError(f"--jobs: expected a positive integer (got {jobs})")
    if jobs is not None and jobs > max_jobs():
        raise CbrError(
            f"--jobs: expected at most {max_jobs()}, {JOBS_PER_CPU} per CPU available "
            f"(got {jobs}); more worker processes only add memory and contention"
        )
    return max(1, min(jobs or default_jobs(), tasks))


def state() -> Any:
    """The state given to the :class:`WorkerPool` this task runs in."""
    return _state


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL)) == 0:
                if os.getppid() != parent:  # the parent died before prctl
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="cbr-parent-watch", daemon=True).start()


def _init_worker(parent: int, threads: int, value: Any) -> None:
    """Runs first in every worker process."""
    global _state, _limits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    from threadpoolctl import threadpool_limits

    from cbr_cli.core.threads import set_threads
    from cbr_cli.run.allocator import keep_freed_memory

    _limits = threadpool_limits(limits=threads)
    set_threads(threads)
    keep_freed_memory()
    _state = value


def _ready() -> int:
    return os.getpid()


class WorkerPool(Generic[T]):
    """``jobs`` worker processes (or the calling process when ``jobs == 1``).

    Use as a context manager; leaving it by an exception (Ctrl-C included) stops the
    workers at once (:meth:`stop`).
    """

    def __init__(self, jobs: int, value: Any) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, but got jobs={jobs}")
        self.jobs = jobs
        self._value = value
        self._executor: ProcessPoolExecutor | None = None
        self._in_flight: dict[object, T] = {}
        self._previous: Any = None
        self._installed = False  # jobs == 1: the state is set in this process

    def __enter__(self) -> WorkerPool[T]:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.close()
        else:
            self.stop()

    def start(self) -> None:
        """Start the workers now (before the caller starts threads); idempotent."""
        global _state
        if self.jobs == 1:
            from cbr_cli.run.allocator import keep_freed_memory

            keep_freed_memory()  # this process runs the tasks
            if not self._installed:
                self._previous, _state = _state, self._value
                self._installed = True
            return
        if self._executor is not None:
            return
        import multiprocessing

        from cbr_cli.core.threads import stop_helpers

        stop_helpers()  # the engines' helper threads, if an op already ran in this process
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        threads = max(1, default_jobs() // self.jobs)
        self._executor = ProcessPoolExecutor(
            max_workers=self.jobs,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(os.getpid(), threads, self._value),
        )
        self._executor.submit(_ready).result()  # forks every worker, surfaces init errors

    def run(
        self, fn: Callable[[T], R], items: Iterable[T], window: int | None = None
    ) -> Iterator[tuple[T, R]]:
        """``(item, fn(item))`` for every item, in order of completion.

        At most ``window`` (default ``2 * jobs``) items are in flight. An exception
        raised by ``fn`` in a worker is raised here; a worker that dies (the OOM killer,
        a crash) raises CbrError.
        """
        self.start()
        if self._executor is None:
            for item in items:
                self._in_flight[None] = item
                result = fn(item)
                del self._in_flight[None]
                yield item, result
            return
        limit = window or 2 * self.jobs
        pending: dict[Future[R], T] = {}
        self._in_flight = pending  # type: ignore[assignment]
        iterator = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                item = next(iterator, _END)
                if item is _END:
                    exhausted = True
                else:
                    pending[self._executor.submit(fn, item)] = item  # type: ignore[arg-type]
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise CbrError(
                        "a worker process died (killed, or out of memory?); finished images "
                        "are kept: run the same command again to resume",
                        exit_code=1,
                    ) from None
                yield pending.pop(future), result

    def unfinished(self) -> list[T]:
        """Items submitted whose results have not been handed out (yet)."""
        return list(self._in_flight.values())

    def stop(self) -> list[T]:
        """Cancel queued tasks, end the workers at once and wait until they are gone.

        Returns the items that were in flight: their work may be half done (their
        files are the caller's to clean up) or done with the result not received.
        """
        in_flight, self._in_flight = self._in_flight, {}
        executor, self._executor = self._executor, None
        if executor is not None:
            # Futures are not cancelled here: on Python < 3.14 the executor's manager
            # thread then fails setting BrokenProcessPool on them. shutdown() below
            # cancels what is still queued, after the workers are gone.
            terminate = getattr(executor, "terminate_workers", None)  # Python >= 3.14
            processes = list((getattr(executor, "_processes", None) or {}).values())
            if terminate is not None:
                terminate()
            else:  # no public way before 3.14; SIGTERM ends a worker (only SIGINT is ignored)
                for process in processes:
                    process.terminate()
            for process in processes:
                process.join(timeout=10)
            executor.shutdown(wait=True, cancel_futures=True)
        self._uninstall()
        return list(in_flight.values())

    def close(self) -> None:
        """Wait for running tasks and end the workers (the normal way out)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._uninstall()
        self._in_flight = {}

    def _uninstall(self) -> None:
        global _state
        if self._installed:
            _state, self._previous = self._previous, None
            self._installed = False


_END = object()
