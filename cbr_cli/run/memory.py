"""How much memory a new allocation may use: checked before cbr allocates anything large.

Linux does not make numpy raise MemoryError for an array larger than memory: it lets
the allocation succeed and kills the process when the pages are touched.  So sizes are
estimated and compared with this before the arrays are made.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_types import PipelineSpec

if TYPE_CHECKING:
    from cbr_cli.spec.layerstack import StackResult

GRID_TILE_MAX = 256
"""Largest side of a grid tile in ``cbr apply``'s grids (bigger maps are shrunk)."""
GRID_SIDE_MAX = 4096
"""Largest side of the tiles' area of a grid: many channels get smaller tiles."""


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), if known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------
# What a ``cbr apply`` run holds at its peak

ENCODE_QUEUE = 4
"""PNG/npy writes ``cbr apply`` keeps in flight at once (the arrays they hold count here)."""
ENCODERS = 4
"""Most encoder threads ``cbr apply`` runs (``min(4, thread_count())``)."""
MONTAGE_COPIES = 4.4
"""Grid-sized arrays counted while a grid is drawn. Labels are now blended into the grid
in place (``render.text.draw_texts``, no Pillow canvas and ``tobytes()`` copies as when
this was set), but with 1.0 the estimate fell 3-11% below the peaks measured in
``tests/run/test_memory_peak.py``: the allowance stays until the grid phase is modelled
anew."""
LATE_IMPORTS = 32 * 2**20
"""What the modules and buffers made after the check take (PNG writer, fonts, thread stacks,
the engine and encoder threads' malloc arenas): with 16 MiB the peaks measured in
``tests/run/test_memory_peak.py`` exceeded the estimate by up to 11 MiB (2-4% in 3 of 6
cases, in some runs: the arenas' free blocks, kept for reuse, depend on the threads' timing)."""
REPORT_IMPORTS = 72 * 2**20
"""What the report adds: matplotlib and one histogram figure (measured 61 MiB), Jinja2."""
HIST_VALUES = 1 << 18
"""Values per stage the histogram figures sample (``run.image_writer.HIST_SAMPLE``)."""


@dataclass(frozen=True)
class PeakEstimate:
    """Bytes a run needs on top of what the process holds when it is checked.

    ``total`` is the largest of the phases (``weights``, ``compute``, ``write``); the
    others say where it goes, for the error message and the tests.
    """

    total: int
    weights: int
    compute: int
    write: int
    stage_outputs: int


def _stage_maps(stack: StackResult) -> list[tuple[int, int, int]]:
    """(C, H, W) of every stage output, in run order (conv, bn, act of each layer)."""
    return [row.output_shape for row in stack.layers for _ in row.stages]


def _grid_bytes(channels: int, height: int, width: int) -> tuple[int, int]:
    """Bytes of one stage's grid tiles (all of them, RGB) and of the finished grid.

    The tile size as ``cbr apply`` draws it (subsampled to at most
    ``run.image_writer.GRID_TILE_MAX`` on a side, fewer for many channels; the render
    package's :func:`~cbr_cli.io.render.grid.grid_tile_scale` shrinks by area average
    and enlarges small maps to at least its ``GRID_TILE_MIN``: the larger of the two).
    """
    from cbr_cli.io.render.grid import grid_tile_scale
    from cbr_cli.io.render.montage import montage_shape

    columns = math.ceil(math.sqrt(channels))
    tile_max = max(16, min(GRID_TILE_MAX, GRID_SIDE_MAX // columns))
    step = max(1, -(-max(height, width) // tile_max))
    th, tw = -(-height // step), -(-width // step)
    scale = grid_tile_scale(channels, (height, width))
    if scale.down == 1:  # an enlarged small map
        th, tw = max(th, height * scale.up), max(tw, width * scale.up)
    tiles = channels * th * tw * 3
    gh, gw = montage_shape([(th, tw, 3)] * channels, title="x\nx", colorbar_info=True)
    return tiles, gh * gw * 3


def apply_peak(
    stack: StackResult,
    images: int = 1,
    *,
    channel_pngs: bool = True,
    encoders: int = ENCODERS,
    report: bool = False,
) -> PeakEstimate:
    """The most memory ``cbr apply`` allocates for ``images`` images of ``stack.input_shape``.

    What :func:`cbr_cli.run.apply.run_apply` holds at once, in its three phases (the
    decoded images are already in memory when this is asked, and not counted):

    * ``weights``: the conv weights (float32), and while the largest random weight is
      drawn, its float64 numbers (8 bytes per weight).
    * ``compute``, per layer :math:`i` of :func:`cbr_cli.run.pipeline.run_layers`: the
      batch and its normalised copy (layer 1 only: later layers read the previous
      stage), every stage output so far, and either this layer's conv output plus the
      engine's scratch (:func:`cbr_cli.core.conv_cost.scratch_bytes`) or all of its
      stage outputs, whichever is more.
    * ``write``, per stage of ``_write_image``: the batch and every stage output (kept
      until the image is written), the input shown (float32 clip and uint8 RGB), then
      for the stage being drawn its statistics' masks (one byte per value) or one
      channel's colouring (float32, index, NaN mask: 6 bytes per pixel), its grid tiles
      and grid, the previous stage's grid still being encoded (image, filtered rows and
      deflate output: 3x), :data:`ENCODE_QUEUE` channel PNGs waiting and ``encoders``
      being encoded (each its index, filtered rows and output: 3 bytes per pixel).

    Plus :data:`LATE_IMPORTS` for what is loaded after the check, and with ``report``
    :data:`REPORT_IMPORTS` and the histograms' samples (float64 while they are taken,
    then float32, of every stage at once: they wait on the encoder pool). Counts generously
    rather than exactly (an upper bound within 1.3x of the measured peak RSS, tested in
    ``tests/run/test_memory_peak.py``).
    """
    from cbr_cli.core.conv_cost import scratch_bytes

    c, h, w = stack.input_shape
    batch = images * 4 * c * h * w
    params = 4 * stack.total_params
    largest_draw = max((8 * row.conv_weight_params for row in stack.layers), default=0)
    weights = params + largest_draw

    compute = 0
    before = 0  # stage outputs of the layers already run
    for i, row in enumerate(stack.layers):
        g = row.geometry
        kernel = (g.h.kernel_size, g.w.kernel_size)
        channels = (row.input_shape[0], row.output_shape[0])
        scratch = scratch_bytes(images, *channels, row.groups, kernel, g, row.padding_mode)
        co, ho, wo = row.output_shape
        conv = images * 4 * co * ho * wo
        outputs = images * row.activation_bytes
        held = batch * (2 if i == 0 else 1) + before
        compute = max(compute, held + max(conv + scratch, outputs))
        before += outputs
    stage_outputs = before

    shown = 4 * c * h * w + 3 * h * w + 2 * 3 * h * w  # clip, RGB, its filtered rows + deflate
    write = 0
    previous_grid = 0
    for sc, sh, sw in _stage_maps(stack):
        plane = sh * sw
        transient = max(sc * plane, 6 * plane)
        tiles, grid = _grid_bytes(sc, sh, sw)
        queued = (ENCODE_QUEUE + 3 * encoders) * plane if channel_pngs else 0
        # The previous grid is still referenced (and, without channel PNGs queued after
        # it, may still be encoding: its filtered rows and deflate output besides).
        previous = previous_grid * (1 if channel_pngs and sc >= ENCODE_QUEUE else 3)
        stage = tiles + max(transient, MONTAGE_COPIES * grid) + previous + queued
        write = max(write, stage)
        previous_grid = grid
    write += params + batch + stage_outputs + shown
    compute += params
    total = max(weights, compute, write) + LATE_IMPORTS
    if report:
        samples = sum(12 * max(HIST_VALUES, 4096 * sc) for sc, _, _ in _stage_maps(stack))
        total += REPORT_IMPORTS + samples
    return PeakEstimate(int(total), weights, compute, int(write), stage_outputs)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def too_big(
    stack: StackResult,
    images: int,
    peak: PeakEstimate,
    available: int,
    channel_pngs: bool = True,
    report: bool = False,
) -> CbrError:
    """The one-line error for a run that does not fit: the estimate and what would fit.

    Suggested, each only where it helps: ``--no-channel-pngs`` (with its estimate), fewer
    channels (the stage outputs grow with them), ``--resize`` to a size whose estimate
    fits (memory grows with the pixels: the fixed part, weights and modules, does not),
    and ``cbr batch`` for several images at once (one image per worker).
    """
    h, w = stack.input_shape[1:]
    options = []
    if channel_pngs:
        without = apply_peak(stack, images, channel_pngs=False, report=report).total
        if without <= available:
            options.append(f"--no-channel-pngs (about {_gib(without)})")
    options.append("fewer channels")
    fixed = 4 * stack.total_params + LATE_IMPORTS
    budget = 0.9 * available - fixed
    if budget > 0 and peak.total > fixed:
        factor = math.sqrt(budget / (peak.total - fixed))
        height, width = max(1, math.floor(h * factor)), max(1, math.floor(w * factor))
        if factor < 1 and min(height, width) >= 8:
            options.append(f"--resize {height}x{width}")
    if images > 1:
        options.append("cbr batch (one image per worker)")
    listing = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
    return CbrError(
        f"this run needs about {_gib(peak.total)} ({images} image(s) of {h}x{w}), more than "
        f"the {_gib(available)} available (feature maps {_gib(peak.stage_outputs)}, plus "
        f"colouring, grids, PNG encoders and convolution buffers): to fit, use {listing}",
        exit_code=1,
    )


def geometry(spec: PipelineSpec, shape: tuple[int, int, int]) -> StackResult:
    """The layer arithmetic of ``spec`` on inputs of ``shape`` (C, H, W), as ``cbr shape``
    computes it; raises its CbrError (an empty output, ...) before anything is built."""
    from cbr_cli.spec.layerstack import analyze

    return analyze(spec, shape)


def memory_needed(
    stack: StackResult, images: int, channel_pngs: bool = True, report: bool = False
) -> int:
    """Bytes a run of ``images`` images of ``stack.input_shape`` needs at its peak, at most:
    :func:`cbr_cli.run.memory.apply_peak` (stage outputs, input copies, weights, engine
    scratch, colouring, grids and the PNG encoders' buffers)."""
    from cbr_cli.run.memory import apply_peak

    return apply_peak(stack, images, channel_pngs=channel_pngs, report=report).total


def check_memory(
    stack: StackResult | None,
    shape: tuple[int, int, int],
    images: int,
    channel_pngs: bool = True,
    report: bool = False,
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
    peak = apply_peak(stack, images, channel_pngs=channel_pngs, report=report)
    if peak.total > available:
        raise too_big(stack, images, peak, available, channel_pngs, report)
