"""DaskPool: WorkerPool's interface on a Dask cluster (one LocalCluster of 2 processes)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from cbr_cli.batch import runner as batch  # noqa: E402
from cbr_cli.batch.dask_pool import DaskPool, _probe, parse_address  # noqa: E402
from cbr_cli.batch.options import BatchOptions  # noqa: E402
from cbr_cli.batch.pool import WorkerPool, state  # noqa: E402
from cbr_cli.batch.runner import run_batch  # noqa: E402
from cbr_cli.errors import CbrError  # noqa: E402
from cbr_cli.run.records import ApplyOptions  # noqa: E402
from cbr_cli.spec.flags import LayerFlags, build_spec  # noqa: E402
from tests.batch.conftest import PIPELINE, make_folder, tree  # noqa: E402

IMAGES = 12


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of 2 single-threaded worker processes for the whole module."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=50,
    ) as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory):
    """A folder (12 images, one broken), its pipeline and WorkerPool(2)'s output tree."""
    base = tmp_path_factory.mktemp("dask")
    make_folder(base / "in", IMAGES)
    (base / "in" / "p0" / "broken.png").write_bytes(b"not a png")
    (base / "pipeline.yaml").write_text(PIPELINE)
    spec = build_spec(base / "pipeline.yaml", LayerFlags())
    options = BatchOptions(
        out_dir=str(base / "local"), recursive=True, jobs=2, output=ApplyOptions(save_npy=True)
    )
    result = run_batch(base / "in", spec, options)
    assert result.count("processed") == IMAGES and result.count("failed") == 1
    return base, spec, tree(base / "local")


def _on_dask(monkeypatch, address: str, folders: list[Path]) -> list[DaskPool]:
    """Make run_batch use a DaskPool: the seam ``--dask`` will use (see the report)."""
    made: list[DaskPool] = []

    def pool(jobs: int, value: object) -> DaskPool:
        made.append(DaskPool(address, value, folders=[str(f) for f in folders]))
        return made[-1]

    monkeypatch.setattr(batch, "WorkerPool", pool)
    return made


def test_batch_on_the_cluster_equals_the_local_run(cluster, job, monkeypatch):
    base, spec, reference = job
    out = base / "on-dask"
    out.mkdir()
    made = _on_dask(monkeypatch, cluster, [base / "in", out])
    options = BatchOptions(out_dir=str(out), recursive=True, output=ApplyOptions(save_npy=True))
    result = run_batch(base / "in", spec, options)
    assert made and made[0].jobs == 2
    assert result.count("processed") == IMAGES and result.count("failed") == 1
    assert tree(out) == reference  # BN statistics pass, images, reports: byte for byte


def test_a_worker_killed_mid_run_has_its_tasks_redone_elsewhere(cluster, job, monkeypatch):
    base, spec, reference = job
    out = base / "killed"
    out.mkdir()
    client = distributed.Client(cluster, set_as_default=False)
    before = client.run(os.getpid)
    killed: list[int] = []

    def kill_one(progress) -> None:  # the client side, while images are in flight
        if progress.phase == "process" and progress.done == 2 and not killed:
            killed.append(sorted(before.values())[0])
            os.kill(killed[0], signal.SIGKILL)

    _on_dask(monkeypatch, cluster, [base / "in", out])
    options = BatchOptions(out_dir=str(out), recursive=True, output=ApplyOptions(save_npy=True))
    result = run_batch(base / "in", spec, options, on_progress=kill_one)
    assert killed and result.count("processed") == IMAGES
    assert tree(out) == reference
    client.wait_for_workers(2, timeout=30)  # the nanny restarted it
    after = client.run(os.getpid)
    assert killed[0] not in after.values()
    client.close()


def _raise_on_three(item: int) -> int:
    if item == 3:
        raise ValueError(f"item {item} is bad")
    if item == 4:
        raise CbrError("bad input x.png", 1)
    return item * state()


@pytest.mark.parametrize(
    "item, kind, message", [(3, ValueError, "item 3 is bad"), (4, CbrError, "bad input x.png")]
)
def test_a_task_that_raises_is_raised_like_a_local_one(cluster, tmp_path, item, kind, message):
    raised = []
    for pool in (WorkerPool(2, 10), DaskPool(cluster, 10, folders=[str(tmp_path)])):
        with pytest.raises(kind) as error, pool:
            results = dict(pool.run(_raise_on_three, [0, 1, 2, item]))
            assert results == {0: 0, 1: 10, 2: 20}  # not reached
        exc = error.value
        raised.append((type(exc), str(exc), getattr(exc, "exit_code", None)))
    assert raised[0] == raised[1] == (kind, message, 1 if kind is CbrError else None)


def _square_times_state(item: int) -> tuple[int, int]:
    from cbr_cli.core.threads import thread_count

    return item * item * state(), thread_count()


def test_results_and_thread_limits_match_the_local_pool(cluster, tmp_path):
    with WorkerPool(2, 3) as pool:
        local = dict(pool.run(_square_times_state, range(20)))
    with DaskPool(cluster, 3, folders=[str(tmp_path)]) as pool:
        seen = [item for item, _ in pool.run(_square_times_state, range(20), window=5)]
        on_dask = dict(pool.run(_square_times_state, range(20)))
    assert on_dask == local  # values, and each worker's share of the cores
    assert sorted(seen) == list(range(20))


def test_a_worker_that_cannot_see_a_folder_is_named_in_one_line(cluster, tmp_path):
    missing = tmp_path / "not-mounted"
    with pytest.raises(CbrError) as error:
        DaskPool(cluster, None, folders=[str(missing), str(tmp_path)]).start()
    message = str(error.value)
    assert "\n" not in message and error.value.exit_code == 2
    assert message.startswith("--dask: worker tcp://127.0.0.1:")
    assert message.endswith(f": cannot see the folder {missing}")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cbr-probe")]


def test_the_probe_tells_another_filesystem_by_the_file_content(tmp_path):
    probe = tmp_path / ".cbr-probe-x"
    probe.write_text("written by another machine")
    report = _probe([str(tmp_path)], str(probe), "token")
    assert report.problem == f"{probe} has other content there: not the same filesystem"
    assert _probe([str(tmp_path)], str(tmp_path / "absent"), "t").problem.startswith(
        f"cannot read {tmp_path / 'absent'} (No such file"
    )
    probe.write_text("token")
    assert _probe([str(tmp_path)], str(probe), "token").problem is None


def test_multithreaded_workers_are_refused(tmp_path):
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as threaded,
        pytest.raises(CbrError, match=r"worker .* has 2 threads; cbr needs single-threaded"),
    ):
        DaskPool(threaded.scheduler_address, None, folders=[str(tmp_path)]).start()


def _slow_write(item: int) -> int:
    time.sleep(0.3)
    Path(state(), f"{item}.done").write_text("x")
    return item


def _executing(dask_worker=None) -> int:
    states = [ts.state for ts in dask_worker.state.tasks.values()]
    return sum(1 for s in states if s in ("executing", "cancelled"))


def test_stop_cancels_and_returns_once_nothing_of_the_run_executes(cluster, tmp_path):
    pool = DaskPool(cluster, str(tmp_path), folders=[str(tmp_path)])
    with pytest.raises(KeyboardInterrupt), pool:
        for _ in pool.run(_slow_write, range(40)):
            raise KeyboardInterrupt  # Ctrl-C while tasks are running and queued
    written = sorted(p.name for p in tmp_path.iterdir())
    assert 1 <= len(written) < 40
    client = distributed.Client(cluster, set_as_default=False)
    assert sum(client.run(_executing).values()) == 0
    time.sleep(0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == written  # nothing still writing
    client.close()


def test_a_local_cluster_is_started_and_ended_by_the_pool(tmp_path):
    pool = DaskPool("local:2", str(tmp_path), folders=[str(tmp_path)])
    with pytest.raises(KeyboardInterrupt), pool:
        pids = pool.worker_pids()
        assert len(pids) == 2
        for _ in pool.run(_slow_write, range(20)):
            raise KeyboardInterrupt
    time.sleep(0.2)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the workers are gone: nothing is still writing


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("local", ("local", None)),
        ("local:3", ("local", 3)),
        ("tcp://h:8786", ("tcp://h:8786", None)),
    ],
)
def test_addresses(text, parsed):
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["local:0", "local:x", "h:8786", "tcp://h", "local:03", ""])
def test_bad_addresses_are_one_line_errors(text):
    with pytest.raises(CbrError, match=r"^--dask: expected a scheduler address tcp://HOST:PORT"):
        parse_address(text)
