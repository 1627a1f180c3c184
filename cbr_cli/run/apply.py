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
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbr_cli.core.stats import ChannelStats, channel_stats
from cbr_cli.core.threads import thread_count
from cbr_cli.errors import CbrError
from cbr_cli.run.memory import ENCODE_QUEUE, available_memory
from cbr_cli.run.pipeline import (
    BuiltLayer,
    StageResult,
    build_layers,
    needs_whole_batch,
    normalize_input,
    run_layers,
)
from cbr_cli.spec.pipeline_types import InputSpec, PipelineSpec

if TYPE_CHECKING:
    from cbr_cli.io.image_folder import ImageFolder, OutTree
    from cbr_cli.spec.layerstack import StackResult

GRID_TILE_MAX = 256
"""Largest side of a tile in a grid montage; bigger maps are subsampled for the grid only."""
_TIMINGS_LOCK = threading.Lock()
GRID_SIDE_MAX = 4096
"""Largest side of the tiles' area of a grid: many channels get smaller tiles."""


@dataclass(frozen=True)
class ApplyOptions:
    out_dir: str = "cbr-out"
    colormap: str | None = None
    normalize: str = "per-stage"
    save_npy: bool = False
    channel_pngs: bool = True
    resize: tuple[int, int] | None = None


@dataclass
class StageRecord:
    layer: str
    stage: str
    shape: tuple[int, int, int]
    colormap: str
    ranges: list[tuple[float, float]]
    stats: list[ChannelStats]
    labels: list[str]
    files: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "stage": self.stage,
            "shape": list(self.shape),
            "colormap": self.colormap,
            "channels": [
                {**s.to_dict(), "label": label, "vmin": r[0], "vmax": r[1]}
                for s, r, label in zip(self.stats, self.ranges, self.labels, strict=True)
            ],
            "files": self.files,
        }


@dataclass
class ImageRecord:
    path: str
    name: str
    out_dir: str
    source: dict[str, Any]
    stages: list[StageRecord] = field(default_factory=list)
    input_png: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "out_dir": self.out_dir,
            "source": self.source,
            "input_png": self.input_png,
            "stages": [s.to_dict() for s in self.stages],
        }


@dataclass
class ApplyResult:
    images: list[ImageRecord]
    manifest: str
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    """One line each: where the run departs from PyTorch or ignores input (as `cbr shape`)."""
    notes: list[str] = field(default_factory=list)
    """One line each: the weight file's conversions, where a model's chain stopped, ..."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": [i.to_dict() for i in self.images],
            "manifest": self.manifest,
            "warnings": self.warnings,
            "notes": self.notes,
        }


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


def geometry(spec: PipelineSpec, shape: tuple[int, int, int]) -> StackResult:
    """The layer arithmetic of ``spec`` on inputs of ``shape`` (C, H, W), as ``cbr shape``
    computes it; raises its CbrError (an empty output, ...) before anything is built."""
    from cbr_cli.spec.layerstack import analyze

    return analyze(spec, shape)


def memory_needed(stack: StackResult, images: int, channel_pngs: bool = True) -> int:
    """Bytes a run of ``images`` images of ``stack.input_shape`` needs at its peak, at most:
    :func:`cbr_cli.run.memory.apply_peak` (stage outputs, input copies, weights, engine
    scratch, colouring, grids and the PNG encoders' buffers)."""
    from cbr_cli.run.memory import apply_peak

    return apply_peak(stack, images, channel_pngs=channel_pngs).total


def check_memory(
    stack: StackResult | None,
    shape: tuple[int, int, int],
    images: int,
    channel_pngs: bool = True,
) -> None:
    """Refuse a run whose arrays would not fit in the available memory (one-line error).

    The estimate is :func:`memory_needed`, an upper bound; the message says what makes
    the run fit (:func:`cbr_cli.run.memory.too_big`). Without it, Linux kills the
    process instead of numpy raising MemoryError.
    """
    if stack is None:
        return
    from cbr_cli.run.memory import apply_peak, too_big

    available = available_memory()
    if available is None:
        return
    peak = apply_peak(stack, images, channel_pngs=channel_pngs)
    if peak.total > available:
        raise too_big(stack, images, peak, available, channel_pngs)


def load_batch(
    paths: Sequence[str],
    color: str | None,
    resize: tuple[int, int] | None,
    inputs: InputSpec | None = None,
) -> tuple[np.ndarray | list[np.ndarray], list[dict[str, Any]]]:
    """Decode images; returns pixel arrays (C, H, W) and a description of each source.

    Without an explicit colour, a mix of gray and RGB images is promoted to RGB (a gray
    image's channel is repeated), so every image feeds the same first layer. ``inputs``'
    ``resize``/``crop`` (:mod:`cbr_cli.run.inputs`) apply after ``resize`` (``--resize``).
    """
    from cbr_cli.io.images import load_image

    loaded = [load_image(p, color) for p in paths]  # type: ignore[arg-type]
    pixels = [im.pixels for im in loaded]
    if color is None and len({p.shape[0] for p in pixels}) > 1:
        pixels = [np.repeat(p, 3, axis=0) if p.shape[0] == 1 else p for p in pixels]
    if resize is not None:
        pixels = [_resize(p, resize) for p in pixels]
    if inputs is not None and (inputs.resize is not None or inputs.crop is not None):
        from cbr_cli.run.inputs import prepare

        pixels = [prepare(p, inputs, path) for p, path in zip(pixels, paths, strict=True)]
    sources = [
        {
            "format": im.format,
            "mode": im.source_mode,
            "bit_depth": im.bit_depth,
            "max_value": im.max_value,
            "size": [im.height, im.width],
            "channels": int(p.shape[0]),
            "notes": list(im.notes),
        }
        for im, p in zip(loaded, pixels, strict=True)
    ]
    return pixels, sources


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = size
    if height * width > Image.MAX_IMAGE_PIXELS:  # the decompression-bomb limit, as for files
        raise CbrError(
            f"--resize {height}x{width}: {height * width} pixels is more than the "
            f"{Image.MAX_IMAGE_PIXELS} an image may have"
        )
    if pixels.shape[1:] == (height, width):
        return pixels
    out = np.empty((pixels.shape[0], height, width), dtype=np.float32)
    for c in range(pixels.shape[0]):  # per channel: Pillow resamples float32 ("F") images
        image = Image.fromarray(np.ascontiguousarray(pixels[c]), mode="F")
        out[c] = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    return out


def _signed(spec: PipelineSpec, result: StageResult) -> bool:
    if result.stage != "act":
        return True
    layer = next(layer for layer in spec.layers if layer.name == result.layer)
    return layer.activation == "leaky_relu"


def _labels(spec: PipelineSpec, layer_name: str, channels: int) -> list[str]:
    layer = next(layer for layer in spec.layers if layer.name == layer_name)
    if layer.conv.kernels is not None:
        from cbr_cli.core.kernels import expand_names, kernel_label

        names = expand_names(list(layer.conv.kernels))
        if len(names) == channels:
            return [f"{i}:{kernel_label(name)}" for i, name in enumerate(names)]
    return [f"c{i}" for i in range(channels)]


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

    timings = {"load": 0.0, "compute": 0.0, "stats": 0.0, "render": 0.0, "write": 0.0}
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
    check_memory(stacks[shape], shape, len(largest), options.channel_pngs)  # type: ignore[arg-type, index]
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
    except BaseException:
        for folder in reversed(created):  # leave no OUT behind that this run made
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    manifest_path = str(Path(options.out_dir) / "manifest.json")
    return ApplyResult(records, manifest_path, timings, warnings, notes)


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

        recover(self.tree)  # an earlier, killed run's staging folder and temporary files
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
                            self.options, timings, staging.folder(name),
                        )  # fmt: skip
                        written += [f"{name}/{file}" for file in files]
                        records.append(record)
                        if on_image is not None:
                            on_image(record)
                    del results
            start = time.perf_counter()
            data = manifest(self.spec, records, self.options)
            staging.commit({**data, "geometry": geometry, "notes": self.notes}, written)
            timings["write"] += time.perf_counter() - start
        except BaseException:
            staging.discard()
            raise
        return records


def run_notes(spec: PipelineSpec) -> list[str]:
    """The spec's notes, then the weight file's (conversions made reading its tensors)."""
    notes = list(spec.notes)
    if spec.weights is not None:
        notes += [f"{spec.weights.display}: {note}" for note in spec.weights.notes]
    return list(dict.fromkeys(notes))


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
    """
    from cbr_cli.io.image_folder import output_names
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
    record = ImageRecord(
        path=os.path.abspath(path), name=name, out_dir=os.fspath(out_dir), source=sources[0]
    )
    if folder is None:
        target = ensure_dir(out_dir)
    else:
        stages = [(r.layer, r.stage, int(r.data.shape[1])) for r in results]
        names = output_names(stages, channel_pngs=options.channel_pngs, save_npy=options.save_npy)
        folder.prepare(names, record.path)
        target = folder.path
    _write_image(None, record, image, results, 0, spec, options, timings, target)
    return record


def _write_image(
    pool: ThreadPoolExecutor | None,
    record: ImageRecord,
    pixels: np.ndarray,
    results: list[StageResult],
    position: int,
    spec: PipelineSpec,
    options: ApplyOptions,
    timings: dict[str, float],
    target: Path,
) -> list[str]:
    """Write one image's files into the folder ``target``; return their names.

    ``record`` gets the paths in ``record.out_dir`` (where the files end up; ``target``
    may be a staging folder that is renamed into place later).
    """
    from cbr_cli.io import image_folder as layout
    from cbr_cli.io import render
    from cbr_cli.io.writers import write_png

    final = Path(record.out_dir)
    pending: list[Future[None]] = []
    files: list[str] = []
    in_flight: list[Future[None]] = []

    def timed(fn: Callable[..., None], *args: Any) -> None:
        start = time.perf_counter()
        fn(*args)
        elapsed = time.perf_counter() - start
        with _TIMINGS_LOCK:  # encoder threads add up concurrently
            timings["encode"] = timings.get("encode", 0.0) + elapsed

    def submit(fn: Callable[..., None], name: str, *args: Any) -> str:
        files.append(name)
        if pool is None:
            timed(fn, target / name, *args)
            return str(final / name)
        # At most ENCODE_QUEUE writes in flight: the arrays they hold are what the memory
        # check counts (run.memory), instead of a backlog of every channel of the image.
        in_flight[:] = [f for f in in_flight if not f.done()]
        if len(in_flight) >= ENCODE_QUEUE:
            in_flight.pop(0).result()
        pending.append(pool.submit(timed, fn, target / name, *args))
        in_flight.append(pending[-1])
        return str(final / name)

    start = time.perf_counter()
    shown = np.clip(pixels, 0.0, 1.0)
    input_rgb = np.rint(shown * 255).astype(np.uint8)
    input_rgb = np.moveaxis(
        np.repeat(input_rgb, 3, axis=0) if len(input_rgb) == 1 else input_rgb, 0, -1
    )
    # A photograph: the "up" filter makes it a third smaller than the montages' "none".
    write_photo = functools.partial(write_png, row_filter="up")
    record.input_png = submit(write_photo, layout.INPUT_PNG, input_rgb, {"source": record.path})

    maps = [r.data[position] for r in results]
    signed = [_signed(spec, r) for r in results]
    ranges = render.map_ranges(maps, options.normalize, signed)
    timings["render"] += time.perf_counter() - start

    try:
        for result, data, flag, stage_ranges in zip(results, maps, signed, ranges, strict=True):
            record.stages.append(
                _write_stage(submit, result, data, flag, stage_ranges, spec, options, timings)
            )
    except BaseException:
        wait(pending)  # no writer may still be busy when the caller cleans up
        raise
    start = time.perf_counter()
    for future in pending:
        future.result()  # re-raises the first write error (a CbrError naming the file)
    timings["write"] += time.perf_counter() - start
    return files


def _write_stage(
    submit: Callable[..., str],
    result: StageResult,
    data: np.ndarray,
    flag: bool,
    stage_ranges: list[tuple[float, float]],
    spec: PipelineSpec,
    options: ApplyOptions,
    timings: dict[str, float],
) -> StageRecord:
    """Statistics, channel PNGs, the grid and (with ``save_npy``) the array of one stage."""
    from cbr_cli.io import image_folder as layout
    from cbr_cli.io import render
    from cbr_cli.io.writers import write_npy, write_png

    start = time.perf_counter()
    stats = channel_stats(data, result.bn_mean, result.bn_var)
    timings["stats"] += time.perf_counter() - start

    start = time.perf_counter()
    cmap = (
        render.get_colormap(options.colormap) if options.colormap else render.default_colormap(flag)
    )
    labels = _labels(spec, result.layer, data.shape[0])
    stage = StageRecord(
        result.layer, result.stage, tuple(data.shape), cmap.name, stage_ranges, stats, labels
    )
    tiles = []
    channel_files = []
    columns = math.ceil(math.sqrt(data.shape[0]))  # the montage's default layout
    tile_max = max(16, min(GRID_TILE_MAX, GRID_SIDE_MAX // columns))
    step = max(1, -(-max(data.shape[1:]) // tile_max))
    for c in range(data.shape[0]):
        vmin, vmax = stage_ranges[c]
        if options.channel_pngs:
            index, nan = render.color_index(data[c], vmin, vmax)
            name = layout.channel_name(result.layer, result.stage, c, data.shape[0])
            meta = _png_text(result, c, labels[c], vmin, vmax, cmap.name)
            if nan is None:  # indexed-colour PNG: a third of the bytes to compress
                tiles.append(np.take(cmap.lut, index[::step, ::step], axis=0))
                channel_files.append(submit(write_png, name, index, meta, cmap.lut))
            else:
                rgb = np.take(cmap.lut, index, axis=0)
                rgb[nan] = render.NAN_COLOR
                tiles.append(rgb[::step, ::step])
                channel_files.append(submit(write_png, name, rgb, meta))
        else:
            tiles.append(render.colorize(data[c, ::step, ::step], vmin, vmax, cmap))
    vmin = min(r[0] for r in stage_ranges)
    vmax = max(r[1] for r in stage_ranges)
    title = f"{result.layer} {result.stage} {data.shape[0]}x{data.shape[1]}x{data.shape[2]}"
    same_range = len(set(stage_ranges)) == 1
    grid = render.montage(
        tiles,
        labels,
        title=title if same_range else f"{title} (per-channel ranges)",
        colorbar_spec=render.Colorbar(cmap, vmin, vmax) if same_range else None,
    )
    grid_text = _png_text(result, None, "grid", vmin, vmax, cmap.name)
    grid_path = submit(write_png, layout.grid_name(result.layer, result.stage), grid, grid_text)
    stage.files = {"grid": grid_path, "channels": channel_files}
    if options.save_npy:
        array = np.ascontiguousarray(data, dtype=np.float32)
        stage.files["npy"] = submit(write_npy, layout.npy_name(result.layer, result.stage), array)
    timings["render"] += time.perf_counter() - start
    return stage


def _png_text(
    result: StageResult, channel: int | None, label: str, vmin: float, vmax: float, cmap: str
) -> dict[str, str]:
    text = {
        "Software": "cbr",
        "cbr:layer": result.layer,
        "cbr:stage": result.stage,
        "cbr:label": label,
        "cbr:vmin": repr(float(vmin)),
        "cbr:vmax": repr(float(vmax)),
        "cbr:colormap": cmap,
    }
    if channel is not None:
        text["cbr:channel"] = str(channel)
    return text


def manifest(
    spec: PipelineSpec, records: list[ImageRecord], options: ApplyOptions
) -> dict[str, Any]:
    """What was run, on what, with which versions: enough to reproduce the run."""
    import platform
    from importlib import metadata

    from cbr_cli import __version__

    versions = {"cbr-cli": __version__, "python": platform.python_version()}
    for package in ("numpy", "scipy", "pillow", "isal", "pyyaml", "typer", "rich"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cbr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_source": spec.source,
        "pipeline": spec.to_plain(),
        "seeds": {
            layer.name: layer.conv.seed
            for layer in spec.layers
            if layer.conv.weight is None and layer.conv.kernels is None
        },
        "inputs": [{"path": r.path, "name": r.name, **r.source} for r in records],
        "options": {
            "colormap": options.colormap,
            "normalize": options.normalize,
            "save_npy": options.save_npy,
            "resize": list(options.resize) if options.resize else None,
        },
        "versions": versions,
    }
