"""``cbr batch --dask``: :class:`~cbr_cli.batch.pool.WorkerPool`'s interface on a Dask cluster.

The one module that imports ``distributed`` (the ``cbr-cli[dask]`` extra); import it
only when ``--dask`` is given. :class:`DaskPool` has WorkerPool's methods (``start``,
``run``, ``unfinished``, ``stop``, ``close``, context manager), so the task functions of
``cbr batch`` and ``cbr calibrate`` run unchanged and read their per-run state with
:func:`cbr_cli.batch.pool.state`.

* Address: ``tcp://HOST:PORT`` (a running scheduler) or ``local[:N]``, a
  ``distributed.LocalCluster`` of ``N`` single-threaded worker processes on this
  machine (default: the CPUs available), started and ended by the pool.
* Workers must be single-threaded (``dask worker --nthreads 1 --nworkers K``): images
  are decoded in processes, not threads (Pillow's warning capture is not thread-safe),
  and the per-run state is per process.
* Per-worker state: a ``WorkerPlugin`` carries the state (``RunSetup``) to every worker,
  once, and to every worker that joins later (a restarted one); the same plugin limits
  BLAS (threadpoolctl) and cbr's convolution engines to the worker's share of its
  host's cores (cores // workers on that host) and makes local workers ignore SIGINT,
  so on Ctrl-C the client alone decides. Each task is a small record, as with
  WorkerPool; images and feature maps never cross the network.
* Start-up probe: one task pinned to each worker checks that IN and OUT exist there,
  that a file the client wrote in OUT is readable with the same content, that the
  worker can write in OUT, and that it runs the same cbr, numpy and scipy (outputs are
  byte-for-byte those of a local run only then). A worker that fails is one CbrError
  line naming it.
* Faults: an exception raised by the task function is raised here, as WorkerPool does.
  A worker that dies has the tasks it was running rescheduled on others by the
  scheduler (``distributed.scheduler.allowed-failures``, default 3: a task whose
  workers die more often than that is given up, and this pool raises the same
  CbrError as a dead local worker). Tasks never run twice on purpose, but a task may
  (a worker thought dead that was not): cbr's tasks are idempotent and deterministic,
  so a second run writes the same bytes.
* :meth:`DaskPool.stop` (Ctrl-C, ``fail_fast``) cancels the futures and returns only
  once no task of this run is still executing: a local cluster is shut down (its
  worker processes killed, as WorkerPool does), on a remote cluster the pool waits for
  the tasks already running to finish (they cannot be interrupted). The caller then
  cleans up the in-flight items exactly as after a local interrupt.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distributed.diagnostics.plugin import WorkerPlugin

from cbr_cli.errors import CbrError

T = TypeVar("T")
R = TypeVar("R")

PROBE_PREFIX = ".cbr-probe-"
STOP_TIMEOUT = 600.0  # seconds to wait for running tasks on a remote cluster after stop()
CONNECT_TIMEOUT = 20.0  # seconds to reach a scheduler and see its first worker
WORKER_DIED = (
    "a worker process died (killed, or out of memory?); finished images are kept: "
    "run the same command again to resume"
)

_ADDRESS = re.compile(r"^(?:local(?::(?P<n>\d+))?|(?P<tcp>tcp://[^\s/:]+:\d+))$")

# ------------------------------------------------------------------ worker side

_states: dict[str, Any] = {}  # run id -> the pool's state, in each worker process
_limits: dict[str, Any] = {}  # run id -> threadpoolctl limits kept alive


class _RunPlugin(WorkerPlugin):
    """Installs one run's state and thread limits in every worker, present and future."""

    def __init__(self, run_id: str, value: Any, threads: dict[str, int], quiet: bool) -> None:
        self.name = f"cbr-{run_id}"
        self.run_id = run_id
        self.value = value
        self.threads = threads
        self.quiet = quiet

    def setup(self, worker: Any) -> None:
        from distributed.comm import get_address_host
        from threadpoolctl import threadpool_limits

        from cbr_cli.core.threads import set_threads
        from cbr_cli.run.allocator import keep_freed_memory

        keep_freed_memory()
        if self.quiet and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        threads = self.threads.get(get_address_host(worker.address), 1)
        _limits[self.run_id] = threadpool_limits(limits=threads)
        set_threads(threads)
        _states[self.run_id] = self.value

    def teardown(self, worker: Any) -> None:
        _states.pop(self.run_id, None)
        limits = _limits.pop(self.run_id, None)
        if limits is not None:
            limits.restore_original_limits()


def _call(run_id: str, fn: Callable[[Any], Any], item: Any) -> Any:
    """Run ``fn(item)`` in a worker with the run's state installed for :func:`state`."""
    from cbr_cli.batch import pool

    if run_id not in _states:  # the plugin runs before any task; this is a bug if hit
        raise RuntimeError(f"cbr run {run_id} has no state on this worker")
    pool._state = _states[run_id]
    return fn(item)


@dataclass(frozen=True)
class ProbeReport:
    """What a worker said about itself and the shared folders (None: all good)."""

    problem: str | None
    versions: dict[str, str]
    cores: int


def _versions() -> dict[str, str]:
    import numpy
    import scipy

    from cbr_cli import __version__

    return {"cbr": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__}


def _probe(folders: Sequence[str], probe: str, token: str) -> ProbeReport:
    """Runs on one worker: can it see the folders and the client's probe file?"""
    from cbr_cli.batch.pool import default_jobs

    report = _versions()
    for folder in folders:
        if not os.path.isdir(folder):
            return ProbeReport(f"cannot see the folder {folder}", report, default_jobs())
    try:
        with open(probe, encoding="utf-8") as f:
            seen = f.read()
    except OSError as exc:
        return ProbeReport(f"cannot read {probe} ({exc.strerror or exc})", report, default_jobs())
    if seen != token:
        return ProbeReport(
            f"{probe} has other content there: not the same filesystem", report, default_jobs()
        )
    reply = f"{probe}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        with open(reply, "w", encoding="utf-8") as f:
            f.write(token)
        os.unlink(reply)
    except OSError as exc:
        return ProbeReport(
            f"cannot write in {os.path.dirname(probe)} ({exc.strerror or exc})",
            report,
            default_jobs(),
        )
    return ProbeReport(None, report, default_jobs())


def _running(run_id: str, dask_worker: Any = None) -> int:
    """Tasks of a run that a worker is still executing (cancelled ones included)."""
    prefix = f"cbr-{run_id}-"
    return sum(
        1
        for ts in dask_worker.state.tasks.values()
        if str(ts.key).startswith(prefix) and ts.state in ("executing", "cancelled", "long-running")
    )


# ------------------------------------------------------------------ client side


def parse_address(text: str) -> tuple[str, int | None]:
    """``("local", N or None)`` or ``(tcp address, None)`` for a ``--dask`` value.

    Raises
    ------
    CbrError
        Not ``tcp://HOST:PORT``, ``local`` or ``local:N`` with ``N >= 1``.
    """
    match = _ADDRESS.match(text.strip())
    if match is None or match["n"] == "0" or (match["n"] or "1").startswith("0"):
        raise CbrError(
            f"--dask: expected a scheduler address tcp://HOST:PORT, local or local:N "
            f"with N >= 1 (got {text!r})"
        )
    if match["tcp"]:
        return match["tcp"], None
    return "local", int(match["n"]) if match["n"] else None


class DaskPool(Generic[T]):
    """Workers of a Dask cluster, with :class:`~cbr_cli.batch.pool.WorkerPool`'s interface.

    Parameters
    ----------
    address : str
        ``tcp://HOST:PORT`` or ``local[:N]`` (:func:`parse_address`).
    value : any picklable
        The state every task reads with :func:`cbr_cli.batch.pool.state` (a ``RunSetup``).
    folders : sequence of str
        Folders every worker must see (IN, OUT); the probe file is written in the last
        one, which must exist and be writable.
    window : int, optional
        Tasks in flight at most (default ``2 * workers``, at least 4).
    """

    def __init__(
        self,
        address: str,
        value: Any,
        folders: Sequence[str] = (),
        window: int | None = None,
    ) -> None:
        self.address, self._local_workers = parse_address(address)
        self._value = value
        self._folders = [os.path.abspath(f) for f in folders]
        self._window = window
        self._run_id = uuid.uuid4().hex[:12]
        self._client: Any = None
        self._cluster: Any = None
        self._count = 0
        self._in_flight: dict[Any, T] = {}
        self.jobs = self._local_workers or 0  # known after start() for a remote cluster

    def __enter__(self) -> DaskPool[T]:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.close()
        else:
            self.stop()

    # ------------------------------------------------------------ start

    def start(self) -> None:
        """Connect (or start the local cluster), install the state, probe every worker."""
        if self._client is not None:
            return
        from distributed import Client, LocalCluster

        try:
            if self.address == "local":
                from cbr_cli.batch.pool import default_jobs

                workers = self._local_workers or default_jobs()
                self._cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    host="127.0.0.1",
                    # its HTTP server (health, metrics) on loopback, any free port: no
                    # "port 8787 in use" warning when another cluster runs
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    silence_logs=50,  # CRITICAL: no log lines on the terminal
                )
                self._client = Client(self._cluster, set_as_default=False)
            else:
                self._client = Client(self.address, timeout=CONNECT_TIMEOUT, set_as_default=False)
                self._client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            self._shutdown()
            raise CbrError(
                f"--dask {self.address}: cannot reach the scheduler or its workers ({exc})", 1
            ) from None
        try:
            self._install()
        except BaseException:
            self._shutdown()
            raise

    def _install(self) -> None:
        from distributed.comm import get_address_host

        info = self._client.nthreads()  # {worker address: threads}, every worker
        many = {addr: n for addr, n in info.items() if n != 1}
        if many:
            addr, n = sorted(many.items())[0]
            raise CbrError(
                f"--dask {self.address}: worker {addr} has {n} threads; cbr needs "
                "single-threaded workers (dask worker --nthreads 1 --nworkers K)",
                2,
            )
        reports = self._probe(sorted(info))
        here = _versions()
        per_host: dict[str, int] = {}
        cores: dict[str, int] = {}
        for addr, report in sorted(reports.items()):
            if report.problem is not None:
                raise CbrError(f"--dask: worker {addr}: {report.problem}", 2)
            if report.versions != here:
                theirs = ", ".join(f"{k} {v}" for k, v in report.versions.items())
                ours = ", ".join(f"{k} {v}" for k, v in here.items())
                raise CbrError(
                    f"--dask: worker {addr} runs {theirs} (here: {ours}); outputs are only "
                    "exact with the same versions everywhere",
                    2,
                )
            host = get_address_host(addr)
            per_host[host] = per_host.get(host, 0) + 1
            cores[host] = report.cores
        threads = {host: max(1, cores[host] // n) for host, n in per_host.items()}
        plugin = _RunPlugin(self._run_id, self._value, threads, quiet=self._cluster is not None)
        self._client.register_plugin(plugin)
        self.jobs = len(reports)

    def _probe(self, workers: list[str]) -> dict[str, ProbeReport]:
        """Run :func:`_probe` once on each worker (pinned there)."""
        folder = self._folders[-1] if self._folders else os.getcwd()
        token = uuid.uuid4().hex
        probe = os.path.join(folder, f"{PROBE_PREFIX}{token[:12]}")
        try:
            with open(probe, "x", encoding="utf-8") as f:
                f.write(token)
        except OSError as exc:
            why = exc.strerror or exc
            raise CbrError(f"--dask: cannot write the probe file {probe}: {why}", 1) from None
        try:
            futures = {
                addr: self._client.submit(
                    _probe,
                    self._folders,
                    probe,
                    token,
                    workers=[addr],
                    allow_other_workers=False,
                    pure=False,
                    key=f"cbr-probe-{token[:12]}-{i}",
                )
                for i, addr in enumerate(workers)
            }
            return {addr: future.result() for addr, future in futures.items()}
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)

    # ------------------------------------------------------------ run

    def run(
        self, fn: Callable[[T], R], items: Iterable[T], window: int | None = None
    ) -> Iterator[tuple[T, R]]:
        """``(item, fn(item))`` for every item, in order of completion (as WorkerPool.run).

        An exception raised by ``fn`` is raised here; a task given up after its workers
        died ``allowed-failures`` times raises CbrError.
        """
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        self.start()
        limit = window or self._window or max(4, 2 * self.jobs)
        pending: dict[Any, T] = {}
        self._in_flight = pending
        iterator = iter(items)
        finished = as_completed(loop=self._client.loop)

        def submit() -> bool:
            item = next(iterator, _END)
            if item is _END:
                return False
            self._count += 1
            future = self._client.submit(
                _call,
                self._run_id,
                fn,
                item,
                pure=False,
                key=f"cbr-{self._run_id}-{self._count}",
            )
            pending[future] = item  # type: ignore[assignment]
            finished.add(future)
            return True

        while len(pending) < limit and submit():
            pass
        for future in finished:
            item = pending.pop(future)
            try:
                result = future.result()
            except KilledWorker:
                raise CbrError(WORKER_DIED, exit_code=1) from None
            yield item, result
            while len(pending) < limit and submit():
                pass
            if not pending:
                return

    def unfinished(self) -> list[T]:
        """Items submitted whose results have not been handed out (yet)."""
        return list(self._in_flight.values())

    # ------------------------------------------------------------ stop

    def stop(self) -> list[T]:
        """Cancel the futures; return once none of this run's tasks still executes.

        Returns the items that were in flight (their files are the caller's to clean
        up), as :meth:`WorkerPool.stop` does.
        """
        in_flight, self._in_flight = self._in_flight, {}
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError, TimeoutError):
                client.cancel(list(in_flight), force=True)
        if client is not None and self._cluster is None:
            with contextlib.suppress(OSError, TimeoutError):
                deadline = time.monotonic() + STOP_TIMEOUT
                while time.monotonic() < deadline:
                    if not sum(client.run(_running, self._run_id).values()):
                        break
                    time.sleep(0.2)
        self._shutdown()  # a local cluster: its worker processes are killed here
        return list(in_flight.values())

    def close(self) -> None:
        """The normal way out: unregister the run's state, disconnect, end a local cluster."""
        if self._client is not None and self._cluster is None:
            with contextlib.suppress(OSError, TimeoutError, ValueError):
                self._client.unregister_worker_plugin(f"cbr-{self._run_id}")
        self._shutdown()
        self._in_flight = {}

    def worker_pids(self) -> dict[str, int]:
        """``{worker address: pid}`` (for tests and diagnostics)."""
        self.start()
        return self._client.run(os.getpid)

    def _shutdown(self) -> None:
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                client.close()
        if cluster is not None:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                cluster.close()


_END = object()
