"""Write a folder into a Zarr store the way ``cbr batch --store`` would (tests only).

Importable by a subprocess (the SIGKILL test runs :func:`main` in one).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from cbr_cli.batch.dataset_bn import dataset_bn_stats
from cbr_cli.batch.pool import WorkerPool
from cbr_cli.batch.scan import RunSetup, check_config, scan_folder
from cbr_cli.batch.zarr_store import (
    FeatureStore,
    StoreLayout,
    StoreWriter,
    one_size,
    open_store,
    stage_shapes,
    store_keys,
    store_task,
)
from cbr_cli.spec.flags import LayerFlags, build_spec


def prepare(
    root: Path, config: Path, store: Path, dtype: str = "float32", rebuild: bool = False
) -> tuple[RunSetup, FeatureStore, list[tuple[int, str, str, StoreWriter, Any]]]:
    """Scan, calibrate, open the store; the tasks of the images not done yet."""
    spec = build_spec(config, LayerFlags())
    found = sorted(p for p in root.rglob("*.png"))
    paths = [str(p) for p in found]
    names = [p.relative_to(root).as_posix() for p in found]
    scan = scan_folder(spec, paths)
    setup = RunSetup(spec, scan.color)
    check_config(setup, scan)
    stats = dataset_bn_stats(paths, spec, color=scan.color).batch_stats()
    height, width = one_size(scan.sizes)
    (channels,) = scan.channels
    layout = StoreLayout(tuple(names), stage_shapes(spec, (channels, height, width)), dtype)
    keys = store_keys({"pipeline": spec.to_plain(), "bn_stats": stats, "dtype": dtype}, paths)
    opened = open_store(store, layout, keys, {"pipeline": spec.to_plain()}, rebuild=rebuild)
    done = opened.done()
    writer = opened.writer()
    todo = [(i, paths[i], names[i], writer, stats) for i in range(len(paths)) if not done[i]]
    return setup, opened, todo


def write_all(root: Path, config: Path, store: Path, jobs: int = 1, **kwargs: Any) -> list:
    """Write every image not done; ``[(name, reason)]`` of the failures."""
    setup, _, todo = prepare(root, config, store, **kwargs)
    failures = []
    with WorkerPool(jobs, setup) as pool:
        for item, reason in pool.run(store_task, todo):
            if reason is not None:
                failures.append((item[2], reason))
    return failures


class _Slow:
    """A zarr array whose writes take a while, so a SIGKILL lands mid-image."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = array.shape

    def __setitem__(self, key: Any, value: Any) -> None:
        time.sleep(0.02)
        self.array[key] = value


class SlowWriter(StoreWriter):
    def _open(self) -> dict[str, Any]:
        return {name: _Slow(a) for name, a in super()._open().items()}


def main(root: str, config: str, store: str) -> None:
    """Write the store one image after another, slowly (killed by the test)."""
    setup, _, todo = prepare(Path(root), Path(config), Path(store))
    slow = [(i, p, n, SlowWriter(w.path, w.arrays, w.dtype), s) for i, p, n, w, s in todo]
    with WorkerPool(1, setup) as pool:
        for _ in pool.run(store_task, slow):
            pass


if __name__ == "__main__":
    main(*sys.argv[1:4])
