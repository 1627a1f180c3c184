"""One image's outputs: the input PNG, per stage the channel PNGs, the grid and the ``.npy``,
and per layer the report's pictures (kernels, histograms).

Colours, ranges and labels come from :mod:`cbr_cli.io.render`: display ranges follow
``--range`` (default ``p99.5``: values beyond the 99.5th percentile of the magnitudes clip
to the end colours) and ``--normalize`` (default ``auto``: per-channel for conv outputs,
shared after BN; :func:`cbr_cli.io.render.ranges.auto_normalize`). Files go through the
image folder's layout (:mod:`cbr_cli.io.image_folder`), written on a pool of encoder threads;
the histogram figures are drawn on that pool too, from small strided samples, so the
main thread goes on with the next stage.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbr_cli.core.stats import channel_stats
from cbr_cli.io.render.ranges import RangeRule, display_ranges, parse_range, resolve_normalize
from cbr_cli.run.memory import ENCODE_QUEUE
from cbr_cli.run.pipeline import BuiltLayer, StageResult
from cbr_cli.run.records import ApplyOptions, ImageRecord, StageRecord
from cbr_cli.spec.pipeline_types import LayerSpec, PipelineSpec

if TYPE_CHECKING:
    from cbr_cli.core.stats import ChannelStats
    from cbr_cli.io.render.ranges import DisplayRange

_TIMINGS_LOCK = threading.Lock()
HIST_SAMPLE = 1 << 18
"""Values per stage (pooled over its channels) the histogram figure looks at."""


def _layer(spec: PipelineSpec, name: str) -> LayerSpec:
    return next(layer for layer in spec.layers if layer.name == name)


def _signed(spec: PipelineSpec, result: StageResult) -> bool:
    if result.stage != "act":
        return True
    return _layer(spec, result.layer).activation == "leaky_relu"


def _labels(spec: PipelineSpec, layer_name: str, channels: int) -> list[str]:
    layer = _layer(spec, layer_name)
    if layer.conv.kernels is not None:
        from cbr_cli.core.kernels import expand_names, kernel_label

        names = expand_names(list(layer.conv.kernels))
        if len(names) == channels:
            return [f"{i}:{kernel_label(name)}" for i, name in enumerate(names)]
    return [f"c{i}" for i in range(channels)]


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
    layers: list[BuiltLayer] | None = None,
) -> list[str]:
    """Write one image's files into the folder ``target``; return their names.

    ``record`` gets the paths in ``record.out_dir`` (where the files end up; ``target``
    may be a staging folder that is renamed into place later). With ``options.report``,
    ``layers`` (the built layers: their weights) gives each layer's kernels picture.
    """
    from cbr_cli.io import image_folder as layout
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

    def submit(fn: Callable[..., None], name: str, *args: Any, queued: bool = True) -> str:
        files.append(name)
        if pool is None:
            timed(fn, target / name, *args)
            return str(final / name)
        if not queued:  # small inputs (the report's pictures): no wait for them here
            pending.append(pool.submit(timed, fn, target / name, *args))
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
    if options.pngs:  # --no-pngs: arrays and statistics only
        shown = np.clip(pixels, 0.0, 1.0)
        input_rgb = np.rint(shown * 255).astype(np.uint8)
        input_rgb = np.moveaxis(
            np.repeat(input_rgb, 3, axis=0) if len(input_rgb) == 1 else input_rgb, 0, -1
        )
        # A photograph: the "up" filter makes it a third smaller than the montages' "none".
        write_photo = functools.partial(write_png, row_filter="up")
        record.input_png = submit(write_photo, layout.INPUT_PNG, input_rgb, {"source": record.path})

    maps = [r.data[position] for r in results]
    timings["render"] += time.perf_counter() - start
    start = time.perf_counter()
    stats = [
        channel_stats(data, r.bn_mean, r.bn_var) for r, data in zip(results, maps, strict=True)
    ]
    timings["stats"] += time.perf_counter() - start

    start = time.perf_counter()
    signed = [_signed(spec, r) for r in results]
    names = [r.stage for r in results]
    rule = parse_range(options.range_rule)
    modes = resolve_normalize(options.normalize, len(maps), names)
    # A display range is a picture's: --no-pngs draws none, so none is taken (its
    # percentiles were a quarter of a feature-only run's time per image).
    ranges: list[list[DisplayRange] | None] = [None] * len(maps)
    if options.pngs or options.report:
        extents = [_extents(s) for s in stats]
        ranges = list(display_ranges(maps, modes, signed, rule, extents=extents))
    timings["render"] += time.perf_counter() - start

    try:
        if options.report:  # first: the figures are drawn while the stages are coloured
            start = time.perf_counter()
            _report_pictures(submit, record, results, maps, stats, spec, layers)
            timings["render"] += time.perf_counter() - start
        for result, data, flag, stage_ranges, mode, stage_stats in zip(
            results, maps, signed, ranges, modes, stats, strict=True
        ):
            record.stages.append(
                _write_stage(
                    submit,
                    result,
                    data,
                    flag,
                    stage_ranges,
                    stage_stats,
                    mode,
                    spec,
                    options,
                    timings,
                )
            )
    except BaseException:
        wait(pending)  # no writer may still be busy when the caller cleans up
        raise
    start = time.perf_counter()
    for future in pending:
        future.result()  # re-raises the first write error (a CbrError naming the file)
    timings["write"] += time.perf_counter() - start
    return files


def _extents(stats: list[ChannelStats]) -> tuple[np.ndarray, np.ndarray] | None:
    """The channels' data extents from their statistics, where all are finite."""
    mins = np.array([s.min for s in stats], dtype=np.float64)
    maxs = np.array([s.max for s in stats], dtype=np.float64)
    return (mins, maxs) if np.isfinite(mins).all() and np.isfinite(maxs).all() else None


def _write_stage(
    submit: Callable[..., str],
    result: StageResult,
    data: np.ndarray,
    flag: bool,
    stage_ranges: list[DisplayRange] | None,
    stats: list[ChannelStats],
    normalize: str,
    spec: PipelineSpec,
    options: ApplyOptions,
    timings: dict[str, float],
) -> StageRecord:
    """Channel PNGs, the grid and (with ``save_npy``) the array of one stage.

    ``stage_ranges`` None: nothing is drawn (``--no-pngs``), the record has no display
    range (:meth:`StageRecord.to_dict`).
    """
    from cbr_cli.io import image_folder as layout
    from cbr_cli.io import render
    from cbr_cli.io.render.grid import grid_from_tiles, grid_tile_scale, normalize_note
    from cbr_cli.io.render.resample import fit_index_to_tile, fit_to_tile
    from cbr_cli.io.writers import write_png

    start = time.perf_counter()
    rule = parse_range(options.range_rule)
    cmap = (
        render.get_colormap(options.colormap) if options.colormap else render.default_colormap(flag)
    )
    labels = _labels(spec, result.layer, data.shape[0])
    stage = StageRecord(
        result.layer,
        result.stage,
        tuple(data.shape),
        cmap.name,
        [r.as_tuple() for r in stage_ranges or []],
        stats,
        labels,
        normalize=normalize,
        range_rule=str(rule),
        note=normalize_note(normalize, rule, flag),
        clipped=[r.clipped for r in stage_ranges or []],
    )
    if not options.pngs or stage_ranges is None:  # --no-pngs: statistics and arrays only
        _save_npy(submit, result, data, options, stage)
        timings["render"] += time.perf_counter() - start
        return stage
    tiles = []
    channel_files = []
    # Tiles are shrunk by area averaging (every n-th pixel aliases fine edges away) and
    # small maps enlarged by nearest neighbour, one channel at a time (issue 14).
    scale = grid_tile_scale(data.shape[0], data.shape[1:])
    for c in range(data.shape[0]):
        vmin, vmax = stage_ranges[c].as_tuple()
        if options.channel_pngs:
            index, nan = render.color_index(data[c], vmin, vmax)
            name = layout.channel_name(result.layer, result.stage, c, data.shape[0])
            meta = _png_text(result, c, labels[c], vmin, vmax, cmap.name, normalize, rule)
            if nan is None:  # indexed-colour PNG: a third of the bytes to compress
                channel_files.append(submit(write_png, name, index, meta, cmap.lut))
                tiles.append(fit_index_to_tile(index, cmap.lut, scale))
                continue
            rgb = render.lookup(index, cmap.lut).copy()  # lookup's array may be read-only
            rgb[nan] = render.NAN_COLOR
            channel_files.append(submit(write_png, name, rgb, meta))
        else:
            rgb = render.colorize(data[c], vmin, vmax, cmap)
        tiles.append(fit_to_tile(rgb, scale))
        del rgb
    grid = grid_from_tiles(
        tiles,
        tuple(data.shape),  # type: ignore[arg-type]
        stage_ranges,
        cmap,
        labels,
        layer=result.layer,
        stage=result.stage,
        normalize=normalize,
        rule=rule,
        dead=[s.dead for s in stats] if result.stage == "act" else [False] * len(stats),
    )
    vmin = min(r.vmin for r in stage_ranges)
    vmax = max(r.vmax for r in stage_ranges)
    grid_text = _png_text(result, None, "grid", vmin, vmax, cmap.name, normalize, rule)
    grid_path = submit(write_png, layout.grid_name(result.layer, result.stage), grid, grid_text)
    stage.files = {"grid": grid_path, "channels": channel_files}
    _save_npy(submit, result, data, options, stage)
    timings["render"] += time.perf_counter() - start
    return stage


def _report_pictures(
    submit: Callable[..., str],
    record: ImageRecord,
    results: list[StageResult],
    maps: list[np.ndarray],
    stats: list[list[ChannelStats]],
    spec: PipelineSpec,
    layers: list[BuiltLayer] | None,
) -> None:
    """Per layer: the kernels picture and the histogram figure (drawn on the writer pool)."""
    from cbr_cli.io import image_folder as layout
    from cbr_cli.io.render.ranges import strided_sample

    built = {b.spec.name: b for b in layers or []}
    for name in dict.fromkeys(r.layer for r in results):
        files: dict[str, str] = {}
        layer = _layer(spec, name)
        indices = [i for i, r in enumerate(results) if r.layer == name]
        labels = _labels(spec, name, maps[indices[0]].shape[0])
        if name in built:
            names = labels if layer.conv.kernels is not None else None
            files["kernels"] = submit(
                _write_kernels, layout.kernels_name(name), built[name].weight, names, name,
                queued=False,
            )  # fmt: skip
        # Small float32 copies: the figure is drawn after this image's maps are gone.
        channels = maps[indices[0]].shape[0]
        limit = max(HIST_SAMPLE // max(channels, 1), 4096)
        samples = {
            results[i].stage: strided_sample(maps[i][None], limit).astype(np.float32)
            for i in indices
        }
        summaries = {results[i].stage: stats[i] for i in indices}
        activation = layer.activation if layer.activation != "none" else None
        files["hist"] = submit(
            _write_histograms, layout.hist_name(name), samples, summaries, labels, name,
            activation, queued=False,
        )  # fmt: skip
        record.layers[name] = files


def _write_kernels(path: Path, weight: np.ndarray, names: list[str] | None, layer: str) -> None:
    from cbr_cli.io.render.kernel_picture import kernels_picture
    from cbr_cli.io.writers import write_png

    write_png(path, kernels_picture(weight, names, layer=layer), {"Software": "cbr"})


def _write_histograms(
    path: Path,
    samples: dict[str, np.ndarray],
    summaries: dict[str, list[ChannelStats]],
    labels: list[str],
    layer: str,
    activation: str | None,
) -> None:
    from cbr_cli.io.render.histograms import layer_histograms
    from cbr_cli.io.writers import write_png

    shaped = {stage: s[:, None, :] for stage, s in samples.items()}  # (C, 1, n) "maps"
    figure = layer_histograms(
        shaped, labels, layer=layer, activation=activation, summaries=summaries
    )
    write_png(path, figure, {"Software": "cbr"})


def _save_npy(
    submit: Callable[..., str],
    result: StageResult,
    data: np.ndarray,
    options: ApplyOptions,
    stage: StageRecord,
) -> None:
    """With ``save_npy``: the stage's (C, H, W) array as ``options.npy_dtype``."""
    from cbr_cli.core.dtypes import to_output_dtype
    from cbr_cli.io import image_folder as layout
    from cbr_cli.io.writers import write_npy

    if options.save_npy:
        array = to_output_dtype(data, options.npy_dtype, f"{result.layer}/{result.stage}")
        stage.files["npy"] = submit(write_npy, layout.npy_name(result.layer, result.stage), array)


def _png_text(
    result: StageResult,
    channel: int | None,
    label: str,
    vmin: float,
    vmax: float,
    cmap: str,
    normalize: str,
    rule: RangeRule,
) -> dict[str, str]:
    text = {
        "Software": "cbr",
        "cbr:layer": result.layer,
        "cbr:stage": result.stage,
        "cbr:label": label,
        "cbr:vmin": repr(float(vmin)),
        "cbr:vmax": repr(float(vmax)),
        "cbr:colormap": cmap,
        "cbr:range": str(rule),
        "cbr:normalize": normalize,
    }
    if channel is not None:
        text["cbr:channel"] = str(channel)
    return text
