"""Images/s of ``cbr batch`` through WorkerPool(2) vs DaskPool on a LocalCluster(2).

Usage: ``python benchmarks/bench_dask.py [--images 48] [--repeat 3]``. Prints medians:

* run_batch end to end (BN statistics pass + images, ``--no-channel-pngs``, .npy) on
  ``--images`` small images, with the cluster already running (its start-up is timed
  apart);
* the per-task overhead: a task that does nothing, through WorkerPool(2), DaskPool
  (window 2 * workers and 16), and, for comparison, the state passed with every task as
  a scattered future instead of the WorkerPlugin DaskPool uses.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PIPELINE = (
    "layers:\n"
    "  - conv: {out_channels: 8, padding: 1, seed: 7}\n    bn: batch\n"
    "  - conv: {out_channels: 8, stride: 2, seed: 8}\n    bn: running\n"
)


def _noop(item: int) -> int:
    return item


def _noop_with(value: object, item: int) -> int:
    return item


def main() -> None:
    import distributed

    from cbr_cli.batch import runner as batch
    from cbr_cli.batch.dask_pool import DaskPool
    from cbr_cli.batch.options import BatchOptions
    from cbr_cli.batch.pool import WorkerPool
    from cbr_cli.batch.runner import run_batch
    from cbr_cli.run.records import ApplyOptions
    from cbr_cli.spec.flags import LayerFlags, build_spec

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=400)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    rng = np.random.default_rng(0)
    for i in range(args.images):
        pixels = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        (base / "in").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(base / "in" / f"im{i:03d}.png")
    (base / "p.yaml").write_text(PIPELINE)
    spec = build_spec(base / "p.yaml", LayerFlags())

    started = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=50,
    )
    startup = time.perf_counter() - started
    address = cluster.scheduler_address

    def batch_seconds(kind: str, run: int) -> float:
        out = base / f"{kind}{run}"
        out.mkdir()
        options = BatchOptions(
            out_dir=str(out),
            jobs=2,
            output=ApplyOptions(save_npy=True, channel_pngs=False),
        )
        original = batch.WorkerPool
        if kind == "dask":
            batch.WorkerPool = lambda jobs, value: DaskPool(  # type: ignore[assignment]
                address, value, folders=[str(base / "in"), str(out)]
            )
        try:
            started = time.perf_counter()
            run_batch(base / "in", spec, options)
            return time.perf_counter() - started
        finally:
            batch.WorkerPool = original

    rows = []
    for kind in ("local", "dask"):
        times = [batch_seconds(kind, r) for r in range(args.repeat)]
        rows.append((f"run_batch, {kind}", statistics.median(times), args.images))

    def task_seconds(make, window=None) -> float:
        with make() as pool:
            pool.start()
            started = time.perf_counter()
            for _ in pool.run(_noop, range(args.tasks), window=window):
                pass
            return time.perf_counter() - started

    for label, make, window in [
        ("no-op task, WorkerPool(2)", lambda: WorkerPool(2, None), None),
        ("no-op task, DaskPool window 4", lambda: DaskPool(address, None, [str(base)]), None),
        ("no-op task, DaskPool window 16", lambda: DaskPool(address, None, [str(base)]), 16),
    ]:
        times = [task_seconds(make, window) for _ in range(args.repeat)]
        rows.append((label, statistics.median(times), args.tasks))

    client = distributed.Client(address, set_as_default=False)
    value = client.scatter(spec, broadcast=True)
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        futures = client.map(_noop_with, [value] * args.tasks, range(args.tasks), pure=False)
        client.gather(futures)
        times.append(time.perf_counter() - started)
    rows.append(("no-op task, scattered state, map", statistics.median(times), args.tasks))
    client.close()
    cluster.close()

    print(f"LocalCluster(2) start-up: {startup:.2f} s")
    print(f"{'what':44s} {'seconds':>8s} {'items/s':>8s} {'ms/item':>8s}")
    for label, seconds, count in rows:
        print(f"{label:44s} {seconds:8.3f} {count / seconds:8.1f} {1000 * seconds / count:8.2f}")


if __name__ == "__main__":
    main()
