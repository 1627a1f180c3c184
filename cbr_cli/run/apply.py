"""``cbr apply``'s work: images in, feature maps, PNGs, arrays and statistics out. No printing.

Output layout (``OUT`` is ``--out``)::

    OUT/manifest.json                       resolved pipeline, inputs, versions, seeds, files
    OUT/<stem>/input.png                    the input as the pipeline sees it (before mean/std)
    OUT/<stem>/<layer>_<stage>_grid.png     all channels of a stage, labelled, with a colour bar
    OUT/<stem>/<layer>_<stage>_c<NN>.png    one PNG per channel (full resolution)
    OUT/<stem>/<layer>_<stage>.npy          with --save-npy: float32 (C, H, W)

``stage`` is ``conv``, ``bn`` or ``act``. Colours: conv and BN outputs (and LeakyReLU
outputs) are signed maps, drawn with a diverging colormap on a symmetric range so that
zero is white; ReLU outputs are non-negative, drawn with a sequential colormap from 0.
Each PNG records its value range (``vmin``/``vmax``) in PNG text metadata, and the
statistics record it too. Every file is written atomically (temporary file + rename),
and the whole run into a staging folder that is committed by renames
(:mod:`cbr_cli.io.staging`); the names are :mod:`cbr_cli.io.image_folder`'s.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbr_cli.core.threads import thread_count
from cbr_cli.errors import CbrError
from cbr_cli.run.image_writer import _write_image
from cbr_cli.run.inputs import load_batch
from cbr_cli.run.manifest import manifest, run_notes
from cbr_cli.run.memory import check_memory, geometry
from cbr_cli.run.pipeline import (
    BuiltLayer,
    StageResult,
    build_layers,
    needs_whole_batch,
    normalize_input,
    run_layers,
)
from cbr_cli.run.records import ApplyOptions, ApplyResult, ImageRecord
from cbr_cli.spec.pipeline_types import PipelineSpec

if TYPE_CHECKING:
    from cbr_cli.io.image_folder import ImageFolder, OutTree


def _check_paths(paths: Sequence[str], tree: OutTree, names: Sequence[str]) -> None:
    """Refuse, before any work, an OUT (or an image folder in it) that cannot be written."""
    if not paths:
        raise CbrError("no input images given")
    out_dir = tree.label
    out = Path(out_dir).resolve()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved == out or out in resolved.parents:  # outputs could overwrite inputs
            raise CbrError(f"--out {out_dir}: the output folder must not contain input {path}")
    if out.exists() and not out.is_dir():
        raise CbrError(f"--out {out_dir}: exists and is not a directory")
    if out.is_dir():
        for name in names:  # a link or a file where an image folder goes
            tree.folder(name)


def warm_report_imports() -> None:
    """Import the report's libraries (matplotlib, Jinja2) on a background thread now.

    They take about 0.35 s to import, mostly in Python; started before the images are
    decoded and convolved (work that runs outside the GIL), that time mostly overlaps.
    An import error here is left for the real import to report.
    """
    import threading

    def load() -> None:
        with contextlib.suppress(Exception):
            from cbr_cli.io.render.histograms import warm_up
            from cbr_cli.io.render.report import warm_up as warm_templates

            warm_up()
            warm_templates()

    threading.Thread(target=load, name="cbr-warm-imports", daemon=True).start()


def run_apply(
    paths: Sequence[str],
    spec: PipelineSpec,
    options: ApplyOptions,
    on_image: Callable[[ImageRecord], None] | None = None,
) -> ApplyResult:
    """Run ``spec`` on the images at ``paths`` and write every output under ``options.out_dir``.

    Images are processed one at a time unless a ``mode: batch`` BN couples them, in
    which case they form one batch (and must share a size, or use ``resize``). The new
    files are written beside an earlier run's and committed by renames at the end
    (:mod:`cbr_cli.io.staging`): a run that fails or is killed leaves the earlier output
    complete, and a run that fails leaves no OUT it created. OUT is locked
    (:func:`cbr_cli.io.outlock.out_lock`) from its creation to the end: a concurrent run
    into the same OUT is refused.
    """
    from cbr_cli.io.image_folder import OutTree, unique_names
    from cbr_cli.io.outlock import out_lock
    from cbr_cli.run.allocator import keep_freed_memory

    keep_freed_memory()  # before the first image's arrays
    timings = {"load": 0.0, "compute": 0.0, "stats": 0.0, "render": 0.0, "write": 0.0}
    if options.report:
        warm_report_imports()
    names = unique_names(paths, reserved=True)
    tree = OutTree(options.out_dir)
    _check_paths(paths, tree, names)
    start = time.perf_counter()
    pixels, sources = load_batch(paths, spec.input.color, options.resize, spec.input)
    timings["load"] += time.perf_counter() - start

    if needs_whole_batch(spec) and len(pixels) > 1:
        sizes = {p.shape[1:] for p in pixels}
        if len(sizes) > 1:
            listing = ", ".join(
                f"{Path(p).name} {a.shape[1]}x{a.shape[2]}"  # HxW, as --resize takes it
                for p, a in zip(paths, pixels, strict=True)
            )
            raise CbrError(
                f"images differ in size ({listing}); bn mode 'batch' normalises over the whole "
                "batch, so all images need one size: pass --resize HxW or run them separately"
            )
        groups = [list(range(len(pixels)))]
    else:
        groups = [[i] for i in range(len(pixels))]

    # The arithmetic `cbr shape` shows, per input size: memory check, warnings (where cbr
    # departs from PyTorch or drops input rows), resolved padding for the manifest.
    stacks = {shape: geometry(spec, shape) for shape in {p.shape for p in pixels}}  # type: ignore[misc]
    largest = max(groups, key=lambda g: len(g) * pixels[g[0]].size)
    shape = tuple(pixels[largest[0]].shape)
    check_memory(stacks[shape], shape, len(largest), options.channel_pngs, options.report)  # type: ignore[arg-type, index]
    warnings = list(dict.fromkeys(w.message for s in stacks.values() if s for w in s.warnings))
    layers = build_layers(spec, int(pixels[0].shape[0]))  # config errors before any write
    shapes = {
        "x".join(map(str, shape)): stack.to_plain()["layers"]
        for shape, stack in stacks.items()
        if stack is not None
    }
    notes = run_notes(spec)
    run = _StagedRun(tree, spec, options, timings, paths, names, sources, notes)
    created = tree.create_root()
    try:
        with out_lock(tree.root, "--out"):
            records = run.run(groups, layers, pixels, shapes, on_image)
            result = ApplyResult(
                records, str(tree.root / "manifest.json"), timings, warnings, notes
            )
            if options.report:
                from cbr_cli.run.report_page import write_report

                start = time.perf_counter()
                result.report = write_report(result, spec, options)
                timings["write"] += time.perf_counter() - start
    except BaseException:
        for folder in reversed(created):  # leave no OUT behind that this run made
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    result.manifest = str(Path(options.out_dir) / "manifest.json")
    return result


@dataclass
class _StagedRun:
    """What :func:`run_apply` writes, and where: images into a staging folder, then a commit."""

    tree: OutTree
    spec: PipelineSpec
    options: ApplyOptions
    timings: dict[str, float]
    paths: Sequence[str]
    names: Sequence[str]
    sources: Sequence[dict[str, Any]]
    notes: list[str]

    def run(
        self,
        groups: list[list[int]],
        layers: list[BuiltLayer],
        pixels: Sequence[np.ndarray],
        geometry: dict[str, Any],
        on_image: Callable[[ImageRecord], None] | None,
    ) -> list[ImageRecord]:
        """Compute and write every image into a staging folder, then commit it into OUT."""
        from cbr_cli.io.staging import Staging, recover
        from cbr_cli.io.statefiles import load
        from cbr_cli.run.report_page import REPORT

        recover(self.tree)  # an earlier, killed run's staging folder and temporary files
        earlier, _ = load(self.tree.root / "manifest.json")
        staging = Staging(self.tree)
        records: list[ImageRecord] = []
        written: list[str] = []
        timings = self.timings
        try:
            # PNG encoders: the deflate runs without the GIL, one thread per core this process
            # may use; the pool drains before the next image's convolution, so it never
            # competes with the engine's threads or BLAS.
            with ThreadPoolExecutor(max_workers=min(4, thread_count())) as pool:
                for group in groups:
                    start = time.perf_counter()
                    batch = np.stack([pixels[i] for i in group])
                    results = run_layers(layers, normalize_input(batch, self.spec.input))
                    timings["compute"] += time.perf_counter() - start
                    for position, index in enumerate(group):
                        name = self.names[index]
                        record = ImageRecord(
                            path=os.path.abspath(self.paths[index]),
                            name=name,
                            out_dir=str(Path(self.options.out_dir) / name),
                            source=self.sources[index],
                        )
                        files = _write_image(
                            pool, record, pixels[index], results, position, self.spec,
                            self.options, timings, staging.folder(name), layers,
                        )  # fmt: skip
                        written += [f"{name}/{file}" for file in files]
                        records.append(record)
                        if on_image is not None:
                            on_image(record)
                    del results
            start = time.perf_counter()
            data = manifest(self.spec, records, self.options)
            data = {**data, "geometry": geometry, "notes": self.notes}
            data["report"] = REPORT if self.options.report else None
            staging.commit(data, written)
            if not self.options.report and isinstance(earlier, dict) and earlier.get("report"):
                self.tree.remove(".", [REPORT])  # the earlier run's page: its links are gone
            timings["write"] += time.perf_counter() - start
        except BaseException:
            staging.discard()
            raise
        return records


def process_image(
    path: str,
    name: str,
    out_dir: str | os.PathLike[str],
    spec: PipelineSpec,
    options: ApplyOptions,
    *,
    color: str | None = None,
    layers: Callable[[int], list[BuiltLayer]] | None = None,
    batch_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    timings: dict[str, float] | None = None,
    folder: ImageFolder | None = None,
    on_results: Callable[[list[StageResult]], None] | None = None,
) -> ImageRecord:
    """Run ``spec`` on one image alone and write its files into the folder ``out_dir``.

    The files are those :func:`run_apply` writes per image (``options.out_dir`` is not
    used). ``color`` overrides ``spec.input.color``; ``layers(channels)`` supplies built
    layers (default: :func:`~cbr_cli.run.pipeline.build_layers`); ``batch_stats`` gives
    dataset-wide statistics for ``mode: batch`` BN layers (see
    :func:`~cbr_cli.run.pipeline.run_layers`). With ``folder`` (``out_dir``'s
    :class:`~cbr_cli.io.image_folder.ImageFolder`), the folder is prepared for the new files
    once they are computed (:meth:`~cbr_cli.io.image_folder.ImageFolder.prepare`: the files
    cbr wrote there before are removed). Files are written one after another, in the
    calling thread (``cbr batch`` runs one such call per worker process). ``timings``, if
    given, accumulates seconds per phase (load, compute, stats, render, encode).
    ``on_results``, if given, is called with the image's stage results (batch of one)
    once they are computed, before any file is written (``cbr batch --store``).
    """
    from cbr_cli.io.image_folder import IMAGE_REPORT, output_names
    from cbr_cli.io.writers import ensure_dir

    if timings is None:
        timings = {}
    for phase in ("load", "compute", "stats", "render", "write"):
        timings.setdefault(phase, 0.0)
    start = time.perf_counter()
    pixels, sources = load_batch([path], color or spec.input.color, options.resize, spec.input)
    timings["load"] += time.perf_counter() - start
    image = pixels[0]
    start = time.perf_counter()
    built = layers(image.shape[0]) if layers is not None else build_layers(spec, image.shape[0])
    results = run_layers(built, normalize_input(image[None], spec.input), batch_stats=batch_stats)
    timings["compute"] += time.perf_counter() - start
    if on_results is not None:
        on_results(results)
    record = ImageRecord(
        path=os.path.abspath(path), name=name, out_dir=os.fspath(out_dir), source=sources[0]
    )
    if folder is None:
        target = ensure_dir(out_dir)
    else:
        stages = [(r.layer, r.stage, int(r.data.shape[1])) for r in results]
        names = output_names(
            stages,
            channel_pngs=options.channel_pngs,
            save_npy=options.save_npy,
            report=options.report,
            pngs=options.pngs,
        )
        folder.prepare([*names, IMAGE_REPORT] if options.report else names, record.path)
        target = folder.path
    _write_image(None, record, image, results, 0, spec, options, timings, target, built)
    if options.report:
        from cbr_cli.run.report_page import write_image_report

        start = time.perf_counter()
        shape = tuple(int(n) for n in image.shape)
        record.report = write_image_report(record, spec, options, target, geometry(spec, shape))  # type: ignore[arg-type]
        timings["write"] += time.perf_counter() - start
    return record
