"""``cbr batch``'s work: a folder of images in, ``cbr apply``'s outputs per image out. No printing.

Steps
-----
1. Find the images (:mod:`cbr_cli.batch.discover`) and their output folders
   (``OUT/<relative dir>/<name>/``, the files ``cbr apply`` writes per image).
2. Scan the headers (:func:`cbr_cli.batch.scan.scan_folder`, ~0.1 ms per file) and check
   the config against them (:func:`cbr_cli.batch.scan.check_config`): the colour is
   ``input.color`` if configured; otherwise, as ``cbr apply`` does for a batch, a
   folder that mixes gray and colour images is read as RGB, else every image as
   stored. A config that does not fit the channels, or (when every image reaches the
   first layer at one size) the size, is one error before anything is written.
   Then OUT is locked (:mod:`cbr_cli.io.outlock`): a second run into the same OUT is
   refused before it reads, cleans or writes anything there.
3. Dataset-wide BN: with a ``mode: batch`` BN, compute its statistics over the whole
   folder first (:func:`cbr_cli.batch.dataset_bn.dataset_bn_stats`, cached in
   ``OUT/bn_stats.json`` for reruns on the same inputs), then give them to every image:
   each image's outputs are those of PyTorch's training-mode BN with the folder as
   one batch, computed one image at a time.
4. Skip images an earlier run finished (:mod:`cbr_cli.batch.resume`); process the others in
   worker processes (:mod:`cbr_cli.batch.pool`), each image on its own, its done-marker
   written last.
5. Image folders of images gone from IN (cbr's record names an input that no longer
   exists) are reported in :attr:`BatchResult.orphans`, and with ``prune`` removed
   first (only cbr's recorded files, then folders left empty).
6. Write the folder's reports (:mod:`cbr_cli.batch.reports`): ``stats.csv``,
   ``aggregate.csv``, ``failures.txt``, ``manifest.json``.

An image that fails (unreadable, corrupt, wrong channel count for given weights, out
of memory, cannot write) is reported and the run goes on (``fail_fast`` stops at
the first). Any other exception, Ctrl-C included, stops the workers at once and
removes the files of the images that were in flight before it propagates; finished
images are kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cbr_cli.batch.dataset_bn import batch_bn_layers, dataset_bn_stats
from cbr_cli.batch.discover import ImageJob, check_overlap, discover, plan_outputs
from cbr_cli.batch.options import BatchOptions, BatchResult
from cbr_cli.batch.pool import Progress, WorkerPool, resolve_jobs, state
from cbr_cli.batch.resume import (
    digest,
    finished,
    image_fingerprint,
    input_state,
    npy_digests,
    write_marker,
)
from cbr_cli.batch.scan import RunSetup, check_config, failure_reason, scan_folder
from cbr_cli.errors import CbrError
from cbr_cli.io.image_folder import ImageFolder, OutTree, find_recorded_folders
from cbr_cli.run.apply import process_image
from cbr_cli.run.pipeline import StageResult, needs_whole_batch
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.pipeline_types import PipelineSpec

BN_STATS_FILE = "bn_stats.json"

BatchStats = dict[str, tuple[np.ndarray, np.ndarray]]


# -------------------------------------------------------------- worker side


Task = tuple[ImageJob, str | None, str, BatchStats | None, Any]
"""``(job, fingerprint, OUT, dataset BN stats, StoreWriter or None)``: one image's work."""


def _store_hook(writer: Any, job: ImageJob) -> Callable[[list[StageResult]], None]:
    """Write one image's maps into the store (chunks, then its done flag)."""
    from cbr_cli.core.dtypes import to_output_dtype

    def write(results: list[StageResult]) -> None:
        maps = {}
        for r in results:
            name = f"{r.layer}/{r.stage}"
            maps[name] = to_output_dtype(r.data[0], writer.dtype, name)
        writer.write(job.index, maps, job.rel)

    return write


def _process_task(item: Task) -> str | None:
    """Process one image in a worker; None when done, else the reason it failed.

    With a store, the image's chunks and done flag are written once it is computed,
    before its folder's files; its folder's marker comes last. It counts as done only
    with both (:meth:`_Run.process`).
    """
    job, fingerprint, out_root, batch_stats, writer = item
    setup: RunSetup = state()
    folder = ImageFolder(OutTree(out_root), job.out_rel)
    try:
        record = process_image(
            job.path,
            job.name,
            job.folder,
            setup.spec,
            setup.options,
            color=setup.color,
            layers=setup.layers,
            batch_stats=batch_stats,
            folder=folder,  # cleared of an earlier run's files before the new ones come
            on_results=None if writer is None else _store_hook(writer, job),
        )
        write_marker(
            job.folder,
            fingerprint,
            record.to_dict(),
            channel_pngs=setup.options.channel_pngs,
            save_npy=setup.options.save_npy,
            pngs=setup.options.pngs,
            report=setup.options.report,
        )
        folder.drop_pending()
    except (CbrError, MemoryError) as exc:
        with contextlib.suppress(CbrError):
            folder.clear(remove_empty=True)
        if writer is not None:
            with contextlib.suppress(CbrError, OSError):
                writer.clear(job.index)
        return failure_reason(exc)
    return None


# -------------------------------------------------------------- parent side


def run_key(
    spec: PipelineSpec, color: str | None, options: ApplyOptions, stats: BatchStats | None
) -> str:
    """The part of every image's fingerprint that is the same for the whole run."""
    from cbr_cli import __version__

    plain = spec.to_plain()
    return digest(
        {
            "cbr": __version__,
            "pipeline": plain,
            "npy": npy_digests(plain),
            "color": color,
            "resize": options.resize,
            "colormap": options.colormap,
            "normalize": options.normalize,
            "range": options.range_rule,
            "report": options.report,
            "save_npy": options.save_npy,
            "channel_pngs": options.channel_pngs,
            "pngs": options.pngs,
            "npy_dtype": options.npy_dtype,
            "bn_stats": stats,
        }
    )


def stages_written(spec: PipelineSpec) -> list[tuple[str, str, int]]:
    """``(layer, stage, channels)`` of every stage an image's marker lists, in order."""
    stages = []
    for layer in spec.layers:
        channels = layer.conv.out_channels
        stages.append((layer.name, "conv", channels))
        if layer.bn is not None:
            stages.append((layer.name, "bn", channels))
        if layer.activation != "none":
            stages.append((layer.name, "act", channels))
    return stages


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Finish clean-up even if Ctrl-C is pressed again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stored(writer: Any, index: int) -> bool:
    """True if image ``index``'s done flag is set in the store of ``writer``."""
    from cbr_cli.batch.zarr_store import FeatureStore

    return bool(FeatureStore(writer.path).done()[index])


def _discard(item: Task, done: dict[int, str]) -> None:
    """After the workers are gone: keep an in-flight image that finished, clear the rest."""
    job, fingerprint, out_root, _, writer = item
    folder = ImageFolder(OutTree(out_root), job.out_rel)
    with contextlib.suppress(CbrError):
        if finished(job.folder, fingerprint) and (writer is None or _stored(writer, job.index)):
            done[job.index] = "processed"
            folder.drop_pending()  # killed between its marker and this
        else:
            folder.clear(remove_empty=True)
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.clear(job.index)


class _Run:
    """One ``run_batch`` call's state."""

    def __init__(
        self,
        in_dir: str,
        spec: PipelineSpec,
        options: BatchOptions,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        check_overlap(in_dir, options.out_dir)
        if os.path.exists(options.out_dir) and not os.path.isdir(options.out_dir):
            raise CbrError(f"--out {options.out_dir}: exists and is not a folder")
        images = discover(in_dir, options.recursive, options.glob)
        self.in_dir = in_dir
        self.spec = spec
        self.options = options
        self.tree = OutTree(options.out_dir)
        self.out_root = os.fspath(self.tree.root)
        self.jobs = plan_outputs(in_dir, images, options.out_dir)
        self.tree.check_all(job.out_rel for job in self.jobs)  # no link on any image's way
        self.workers = resolve_jobs(options.jobs, len(self.jobs))
        self.emit = on_progress or (lambda progress: None)
        self.status: dict[int, str] = {}
        self.failures: dict[int, str] = {}
        self.stopped = False
        self.warnings: list[str] = []
        scan = scan_folder(spec, [job.path for job in self.jobs], options.output.resize)
        self.color = scan.color
        self.setup = RunSetup(spec, self.color, options.output)
        check_config(self.setup, scan)
        self.store_path = self._store_path(in_dir) if options.store is not None else None
        if self.store_path is not None:
            from cbr_cli.batch.zarr_store import one_size, stage_shapes

            sizes = {spec.input.prepared_size(h, w) for h, w in scan.sizes}
            height, width = one_size(frozenset(sizes))
            (channels,) = scan.channels
            self.store_arrays = stage_shapes(spec, (channels, height, width))
        self.store: Any = None  # the open FeatureStore (open_store)

    def _store_path(self, in_dir: str) -> str:
        """``--store`` made absolute (relative: under OUT), refused inside IN or an image's
        output folder."""
        assert self.options.store is not None
        path = Path(self.out_root, self.options.store).resolve()  # absolute stays absolute
        shown = self.options.store
        inside = Path(in_dir).resolve()
        if path == inside or inside in path.parents:
            raise CbrError(f"--store {shown}: must not be inside IN_DIR {in_dir}")
        for job in self.jobs:
            folder = Path(job.folder).resolve()
            if path == folder or folder in path.parents or path in folder.parents:
                raise CbrError(
                    f"--store {shown}: is the output folder of image {job.rel} (or holds "
                    "it); give another path"
                )
        return os.fspath(path)

    def open_store(self) -> None:
        """Create the store or reopen it to resume (refused if it holds another config or
        input set, unless ``force``: then rebuilt)."""
        from cbr_cli import __version__
        from cbr_cli.batch.zarr_store import StoreLayout, open_store, store_keys
        from cbr_cli.run.manifest import run_description

        assert self.store_path is not None
        plain = self.spec.to_plain()
        dtype = self.options.output.npy_dtype
        layout = StoreLayout(tuple(job.rel for job in self.jobs), self.store_arrays, dtype)
        # The BN statistics are left out: they follow from these and the input set.
        config = {
            "cbr": __version__,
            "pipeline": plain,
            "npy": npy_digests(plain),
            "color": self.color,
            "resize": self.options.output.resize,
            "dtype": dtype,
        }
        keys = store_keys(config, [job.path for job in self.jobs])
        described = run_description(self.spec, self.options.output)
        attrs = {
            "pipeline": plain,
            "versions": described["versions"],
            "color": self.color,
            "resize": self.options.output.resize,
            "input_folder": os.path.abspath(self.in_dir),
        }
        Path(self.store_path).parent.mkdir(parents=True, exist_ok=True)
        self.store = open_store(self.store_path, layout, keys, attrs, rebuild=self.options.force)

    def folder(self, job: ImageJob) -> ImageFolder:
        return ImageFolder(self.tree, job.out_rel)

    def orphans(self) -> list[ImageFolder]:
        """Image folders in OUT whose image is gone from IN.

        A folder with cbr's marker or pending record that no image of this run writes,
        and whose recorded input file no longer exists (an image that ``--glob`` or a
        missing ``--recursive`` leaves out is still there: its folder is not an orphan).
        """
        mine = {job.out_rel for job in self.jobs}
        found = []
        for folder in find_recorded_folders(self.tree):
            if folder.rel in mine:
                continue  # this run's: its record is read when the image is checked
            source = folder.source()
            if source is None or not os.path.lexists(source):
                found.append(folder)
        return sorted(found, key=lambda f: f.rel)

    def calibrate(self, pool: WorkerPool[Any]) -> BatchStats | None:
        """Dataset-wide statistics of the batch-mode BN layers (cached in OUT)."""
        from cbr_cli import __version__
        from cbr_cli.io.statefiles import read_bn_cache
        from cbr_cli.io.writers import write_json

        plain = self.spec.to_plain()
        key = digest(
            {
                "cbr": __version__,
                "pipeline": plain,
                "npy": npy_digests(plain),
                "color": self.color,
                "resize": self.options.output.resize,
                "inputs": [input_state(job.path) for job in self.jobs],
            }
        )
        cache = Path(self.out_root) / BN_STATS_FILE
        by_rel = {job.rel: job.index for job in self.jobs}
        data = None
        if not self.options.force:
            layers = [self.spec.layers[i] for i in batch_bn_layers(self.spec)]
            channels = {layer.name: layer.conv.out_channels for layer in layers}
            data, problem = read_bn_cache(cache, key, channels, list(by_rel))
            self.warnings += [problem] if problem else []
        if data is None:
            result = dataset_bn_stats(
                [job.path for job in self.jobs],
                self.spec,
                color=self.color,
                resize=self.options.output.resize,
                pool=pool,
                names=[job.rel for job in self.jobs],
                on_progress=self.emit,
                fail_fast=self.options.fail_fast,
            )
            data = {
                "key": key,
                "images": result.images,
                "failures": [list(f) for f in result.failures],
                "layers": {
                    name: {"count": m.count, "mean": m.mean, "var": m.var}
                    for name, m in result.layers.items()
                },
            }
            if result.stopped:
                self.stopped = True
            else:
                write_json(cache, data)
        for rel, reason in data["failures"]:
            self.failures[by_rel[rel]] = reason
            self.status[by_rel[rel]] = "failed"
        if not data["layers"]:
            return None
        return {
            name: (np.asarray(v["mean"], dtype=np.float64), np.asarray(v["var"], dtype=np.float64))
            for name, v in data["layers"].items()
        }

    def process(self, pool: WorkerPool[Any], stats: BatchStats | None) -> None:
        key = run_key(self.spec, self.color, self.options.output, stats)
        self.stages = stages_written(self.spec)
        todo: list[Task] = []
        writer = None if self.store is None else self.store.writer()
        stored = None if self.store is None else self.store.done()
        for job in self.jobs:
            if job.index in self.failures:
                with contextlib.suppress(CbrError):  # stale outputs of an earlier, good file
                    self.folder(job).clear(remove_empty=True)
                continue
            fingerprint = image_fingerprint(key, job.path)
            if (
                not self.options.force
                and finished(job.folder, fingerprint, self.stages, self.warnings.append)
                and (stored is None or stored[job.index])  # and in the store, if any
            ):
                self.status[job.index] = "skipped"
                self.folder(job).drop_pending()  # if killed between its marker and this
            else:
                todo.append((job, fingerprint, self.out_root, stats, writer))
        skipped = sum(1 for s in self.status.values() if s == "skipped")
        progress = Progress("process", len(todo), skipped=skipped)
        if todo:
            pool.start()
        self.emit(progress)
        for (job, *_), reason in pool.run(_process_task, todo):
            if reason is None:
                self.status[job.index] = "processed"
            else:
                self.status[job.index] = "failed"
                self.failures[job.index] = reason
            progress = replace(
                progress,
                done=progress.done + 1,
                failed=progress.failed + (reason is not None),
                item=job.rel,
                reason=reason,
            )
            self.emit(progress)
            if reason is not None and self.options.fail_fast:
                self.stopped = True
                for item in pool.stop():
                    _discard(item, self.status)
                break


def run_batch(
    in_dir: str | os.PathLike[str],
    spec: PipelineSpec,
    options: BatchOptions,
    on_progress: Callable[[Progress], None] | None = None,
) -> BatchResult:
    """Process every image under ``in_dir`` into ``options.out_dir`` (see the module docstring).

    Raises
    ------
    CbrError
        Bad folders or options (nothing is written), or a report cannot be written.
    KeyboardInterrupt
        After stopping the workers and removing the in-flight images' files.
    """
    from cbr_cli.io.outlock import out_lock

    run = _Run(os.fspath(in_dir), spec, options, on_progress)
    run.tree.create_root()
    with out_lock(options.out_dir):  # before anything in OUT is read, cleaned or written
        return _locked_run(run, os.fspath(in_dir), spec, options)


def _make_pool(run: _Run, in_dir: str, options: BatchOptions) -> Any:
    """The local :class:`WorkerPool`, or with ``--dask`` a :class:`DaskPool` (same interface)."""
    if options.dask is None:
        return WorkerPool(run.workers, run.setup)
    try:
        from cbr_cli.batch.dask_pool import DaskPool
    except ImportError:
        raise CbrError("--dask needs the dask extra: pip install 'cbr-cli[dask]'") from None
    folders = [os.path.abspath(in_dir), run.out_root]
    if run.store_path is not None and not run.store_path.startswith(run.out_root + os.sep):
        folders.insert(1, os.path.dirname(run.store_path))  # the probe file goes in OUT (last)
    return DaskPool(options.dask, run.setup, folders=folders)


def _locked_run(run: _Run, in_dir: str, spec: PipelineSpec, options: BatchOptions) -> BatchResult:
    """The part of :func:`run_batch` that reads and writes OUT (holding its lock)."""
    from cbr_cli.batch.reports import write_reports

    run.tree.clean_root_temps()
    orphans = run.orphans()
    if options.prune:
        for folder in orphans:
            folder.clear(remove_empty=True)
    if not needs_whole_batch(spec):  # an earlier run's, with another pipeline
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(run.out_root) / BN_STATS_FILE)
    if run.store_path is not None:
        run.open_store()  # before any work: a store of another config is refused now
    with _make_pool(run, in_dir, options) as pool:
        try:
            stats = run.calibrate(pool) if needs_whole_batch(spec) else None
            if not run.stopped and (stats is not None or not needs_whole_batch(spec)):
                run.process(pool, stats)
        except BaseException:
            with _sigint_ignored():
                for item in pool.stop():
                    if len(item) == 5 and isinstance(item[0], ImageJob):
                        _discard(item, {})
            raise
    status = {job.rel: run.status.get(job.index, "not run") for job in run.jobs}
    failures = [(job.rel, run.failures[job.index]) for job in run.jobs if job.index in run.failures]
    files = write_reports(
        os.fspath(in_dir),
        run.out_root,
        run.jobs,
        status,
        dict(failures),
        spec,
        run.color,
        options,
        bn_stats=BN_STATS_FILE if needs_whole_batch(spec) else None,
    )
    return BatchResult(
        run.out_root,
        status,
        failures,
        files,
        stopped=run.stopped,
        warnings=run.warnings,
        orphans=[folder.rel for folder in orphans],
        pruned=options.prune,
        store=run.store_path,
    )
