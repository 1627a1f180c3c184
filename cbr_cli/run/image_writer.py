"""One image's outputs: the input PNG, per stage the channel PNGs, the grid and the ``.npy``.

Colours, ranges and labels come from :mod:`cbr_cli.io.render`; files go through the
image folder's layout (:mod:`cbr_cli.io.image_folder`), written on a pool of encoder threads.
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
from cbr_cli.run.memory import ENCODE_QUEUE
from cbr_cli.run.pipeline import (
    StageResult,
)
from cbr_cli.run.records import ApplyOptions, ImageRecord, StageRecord
from cbr_cli.spec.pipeline_types import PipelineSpec

if TYPE_CHECKING:
    pass


GRID_TILE_MAX = 256


_TIMINGS_LOCK = threading.Lock()


GRID_SIDE_MAX = 4096


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
    from cbr_cli.io.render.grid import grid_tile_scale, range_label
    from cbr_cli.io.render.resample import fit_to_tile
    from cbr_cli.io.writers import write_png

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
    if not options.pngs:  # --no-pngs: statistics and (with save_npy) the array only
        _save_npy(submit, result, data, options, stage)
        timings["render"] += time.perf_counter() - start
        return stage
    tiles = []
    channel_files = []
    # Tiles are shrunk by area averaging (every n-th pixel aliases fine edges away) and
    # small maps enlarged by nearest neighbour, one channel at a time (issue 14).
    scale = grid_tile_scale(data.shape[0], data.shape[1:])
    for c in range(data.shape[0]):
        vmin, vmax = stage_ranges[c]
        if options.channel_pngs:
            index, nan = render.color_index(data[c], vmin, vmax)
            name = layout.channel_name(result.layer, result.stage, c, data.shape[0])
            meta = _png_text(result, c, labels[c], vmin, vmax, cmap.name)
            rgb = np.take(cmap.lut, index, axis=0)
            if nan is None:  # indexed-colour PNG: a third of the bytes to compress
                channel_files.append(submit(write_png, name, index, meta, cmap.lut))
            else:
                rgb[nan] = render.NAN_COLOR
                channel_files.append(submit(write_png, name, rgb, meta))
        else:
            rgb = render.colorize(data[c], vmin, vmax, cmap)
        tiles.append(fit_to_tile(rgb, scale))
        del rgb
    vmin = min(r[0] for r in stage_ranges)
    vmax = max(r[1] for r in stage_ranges)
    title = f"{result.layer} {result.stage} {data.shape[0]}x{data.shape[1]}x{data.shape[2]}"
    if scale.describe():
        title += f", {scale.describe()}"
    same_range = len(set(stage_ranges)) == 1
    grid = render.montage(
        tiles,
        labels,
        title=title if same_range else f"{title} (per-channel ranges)",
        colorbar_spec=render.Colorbar(cmap, vmin, vmax) if same_range else None,
        sublabels=None if same_range else [range_label(r) for r in stage_ranges],
        marked=[s.dead for s in stats] if result.stage == "act" else None,
    )
    grid_text = _png_text(result, None, "grid", vmin, vmax, cmap.name)
    grid_path = submit(write_png, layout.grid_name(result.layer, result.stage), grid, grid_text)
    stage.files = {"grid": grid_path, "channels": channel_files}
    _save_npy(submit, result, data, options, stage)
    timings["render"] += time.perf_counter() - start
    return stage


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
