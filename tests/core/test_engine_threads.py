"""``cbr_cli.core.threads.run_tasks``: the engines' thread pool (kept between calls)."""

from __future__ import annotations

import multiprocessing
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from cbr_cli.core import threads as _threads
from cbr_cli.core.ops import conv2d
from cbr_cli.core.threads import run_tasks


@pytest.fixture(autouse=True)
def two_threads():
    """Two threads whatever the machine, so the helper pool is always used."""
    _threads.set_threads(2)
    yield
    _threads.set_threads(None)


def blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_every_task_runs_once_each_thread_with_its_own_scratch() -> None:
    seen: list[int] = []
    owners: dict[int, str] = {}
    lock = threading.Lock()

    def scratch() -> dict[str, str]:
        return {"owner": threading.current_thread().name}

    def run(task: int, buffers: dict[str, str]) -> None:
        assert buffers["owner"] == threading.current_thread().name
        with lock:
            seen.append(task)
            owners[task] = buffers["owner"]
        threading.Event().wait(0.001)  # let the other thread take some tasks

    for _ in range(3):  # the pool is kept between calls
        seen.clear()
        owners.clear()
        run_tasks(range(40), run, scratch)
        assert sorted(seen) == list(range(40))
        assert len(set(owners.values())) == 2


@pytest.mark.parametrize("failing", [0, 39])
def test_an_exception_in_any_task_is_raised_and_blas_limits_are_restored(failing: int) -> None:
    before = blas_threads()

    def run(task: int, _: object) -> None:
        if task == failing:
            raise ValueError(f"task {task} failed")
        threading.Event().wait(0.001)

    with pytest.raises(ValueError, match=f"task {failing} failed"):
        run_tasks(range(40), run, lambda: None)
    assert blas_threads() == before
    done: list[int] = []
    run_tasks(range(5), lambda task, _: done.append(task), lambda: None)  # still usable
    assert sorted(done) == list(range(5))


def test_a_task_may_call_run_tasks_itself() -> None:
    """Nested calls run in the calling thread instead of waiting for a busy pool."""
    totals = [0] * 4

    def inner(task: tuple[int, int], _: object) -> None:
        totals[task[0]] += task[1]

    def outer(index: int, _: object) -> None:
        run_tasks([(index, value) for value in range(10)], inner, lambda: None)

    worker = threading.Thread(target=run_tasks, args=(range(4), outer, lambda: None))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "nested run_tasks deadlocked"
    assert totals == [45] * 4


def test_helpers_use_the_callers_numpy_error_state() -> None:
    big = np.full(1000, 3e38, np.float32)

    caller = threading.current_thread()

    def run(task: int, _: object) -> None:
        if threading.current_thread() is caller:
            threading.Event().wait(0.005)  # leave the overflows to the helper
        else:
            np.multiply(big, np.float32(10))

    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        run_tasks(range(8), run, lambda: None)


def _conv_in_child(queue) -> None:
    x = np.ones((1, 16, 12, 12), np.float32)
    w = np.ones((4, 16, 3, 3), np.float32)
    queue.put(float(conv2d(x, w, padding=1)[0, 0, 5, 5]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux's start method")
def test_a_forked_child_gets_a_pool_of_its_own() -> None:
    """``cbr batch`` forks workers; the parent's pool threads do not exist there."""
    conv2d(np.ones((1, 16, 12, 12), np.float32), np.ones((4, 16, 3, 3), np.float32))
    assert _threads._pool is not None  # the parent has started its helpers
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_conv_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 16 * 9


def test_calls_from_several_threads_at_once_with_different_pool_sizes() -> None:
    """A call that grows the helper pool must not break a call just submitting to it."""
    _threads.set_threads(8)
    errors: list[BaseException] = []
    complete: list[bool] = []
    start = threading.Barrier(7)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def user(tasks: int) -> None:
        start.wait()
        try:
            for _ in range(3):
                done: list[int] = []
                run_tasks(range(tasks), lambda task, _, done=done: done.append(task), list)
                complete.append(sorted(done) == list(range(tasks)))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    try:
        users = [threading.Thread(target=user, args=(n,)) for n in range(2, 9)]
        for thread in users:
            thread.start()
        for thread in users:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(previous)
    assert errors == []
    assert complete == [True] * 21  # every call ran each of its tasks exactly once


def test_no_task_still_runs_when_run_tasks_raises() -> None:
    """One helper fails while another is in a slow task: the call waits for it."""
    _threads.set_threads(3)
    caller = threading.current_thread()
    lock = threading.Lock()
    state = {"failed": False, "running": 0}

    def run(task: int, _: object) -> None:
        if threading.current_thread() is caller:
            threading.Event().wait(0.01)
            return
        with lock:
            first = not state["failed"]
            state["failed"] = True
        if first:
            threading.Event().wait(0.05)
            raise ValueError("helper failed")
        with lock:
            state["running"] += 1
        threading.Event().wait(0.3)
        with lock:
            state["running"] -= 1

    with pytest.raises(ValueError, match="helper failed"):
        run_tasks(range(100), run, lambda: None)
    assert state["running"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux's start method")
def test_worker_pool_ends_the_helpers_before_it_forks() -> None:
    """``cbr batch`` forks its workers: no helper thread may exist at that moment."""
    from cbr_cli.batch.pool import WorkerPool

    conv2d(np.ones((1, 16, 12, 12), np.float32), np.ones((4, 16, 3, 3), np.float32))
    assert any(t.name.startswith("cbr-engine") for t in threading.enumerate())
    with WorkerPool(2, None) as pool:
        pool.start()
        assert not any(t.name.startswith("cbr-engine") for t in threading.enumerate())
