"""Two hot spots of a stage's pictures, today's code against a proposed rewrite, side by side.

Usage::

    python benchmarks/bench_render_hotspots.py [--repeat 30]

On the real maps of a run (one 16-channel block, k3 same, batch BN, ReLU; the act stage of
a 288² crop of samples/astronaut.png, as ``cbr batch`` sees in ``bench_batch.py``, and of
the astronaut upscaled to 1024², as ``bench_apply.py``), per channel:

* **tile** -- what ``run/image_writer.py::_write_stage`` does for every channel's grid tile:
  ``np.take(cmap.lut, index, axis=0)`` (full-resolution RGB) then
  ``render.resample.fit_to_tile`` (``Image.fromarray`` copies RGB into Pillow's 4-byte
  pixels, ``reduce``, ``np.asarray``); against: the indices as a Pillow "P" image with the
  colormap as its palette, ``convert("RGB")`` (the colour look-up in C, straight into
  Pillow's pixels), ``reduce``, ``np.asarray``.  The tiles must be identical.
* **color_index** -- ``render.colorize.color_index`` (five float passes over the whole map)
  against the same arithmetic on cache-sized blocks of 2^16 values.  Identical indices.

Medians of ``--repeat`` interleaved rounds; the ratio is the median of per-round ratios.
These files belong to the rendering code, which this benchmark does not change: it
measures what a rewrite there would gain.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cbr_cli.io import render
from cbr_cli.io.render.colorize import color_index
from cbr_cli.io.render.resample import TileScale, fit_to_tile, tile_scale
from cbr_cli.run.pipeline import build_layers, normalize_input, run_layers
from cbr_cli.spec.flags import LayerFlags, build_spec

ROOT = Path(__file__).resolve().parent.parent


def act_stage(side: int) -> np.ndarray:
    photo = Image.open(ROOT / "samples" / "astronaut.png").convert("RGB")
    photo = photo.crop((100, 60, 388, 348)) if side == 288 else photo.resize((side, side))
    pixels = np.moveaxis(np.asarray(photo, dtype=np.float32) / 255, -1, 0)
    spec = build_spec(None, LayerFlags(out_channels=16, padding="same", bn="batch"))
    results = run_layers(build_layers(spec, 3), normalize_input(pixels[None], spec.input))
    return next(r.data[0] for r in results if r.stage == "act")


def tile_now(index: np.ndarray, lut: np.ndarray, scale: TileScale) -> np.ndarray:
    return fit_to_tile(np.take(lut, index, axis=0), scale)


def tile_palette(index: np.ndarray, palette: bytes, scale: TileScale) -> np.ndarray:
    picture = Image.frombytes("P", index.shape[::-1], index.tobytes())
    picture.putpalette(palette)
    picture = picture.convert("RGB")
    if scale.down > 1:
        picture = picture.reduce(scale.down)
    elif scale.up > 1:
        picture = picture.resize(
            (picture.width * scale.up, picture.height * scale.up), Image.Resampling.NEAREST
        )
    return np.asarray(picture)


def index_blocked(x: np.ndarray, lo: float, hi: float, block: int = 1 << 16) -> np.ndarray:
    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    scratch = np.empty(min(block, flat.size), x.dtype)
    kind = x.dtype.type
    for start in range(0, flat.size, block):
        values = flat[start : start + block]
        t = scratch[: values.size]
        np.subtract(values, kind(lo), out=t)
        t /= kind(hi - lo)
        t *= 255
        np.clip(t, 0, 255, out=t)
        np.rint(t, out=t)
        out[start : start + block] = t
    return out.reshape(x.shape)


def compare(
    label: str, now: Callable[[int], np.ndarray], new: Callable[[int], np.ndarray], maps: int
) -> None:
    for c in range(maps):
        if not np.array_equal(now(c), new(c)):
            raise SystemExit(f"{label}: the proposal differs on channel {c}")
    rounds = ARGS.repeat
    t_now, t_new = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for c in range(maps):
            now(c)
        t_now.append((time.perf_counter() - start) / maps)
        start = time.perf_counter()
        for c in range(maps):
            new(c)
        t_new.append((time.perf_counter() - start) / maps)
    ratio = statistics.median(a / b for a, b in zip(t_now, t_new, strict=True))
    print(
        f"  {label:<28} now {statistics.median(t_now) * 1e3:6.2f} ms  proposed "
        f"{statistics.median(t_new) * 1e3:6.2f} ms per channel  {ratio:4.2f}x  (identical)"
    )


def one_size(side: int) -> None:
    cmap = render.default_colormap(False)  # ReLU outputs: the sequential map
    palette = np.ascontiguousarray(cmap.lut).tobytes()
    data = act_stage(side)
    lo, hi = 0.0, float(data.max())
    indices = [color_index(data[c], lo, hi)[0] for c in range(len(data))]
    scale = tile_scale(data.shape[1:])
    print(f"act stage 16x{side}x{side}, tile {scale}:")
    compare(
        "tile (LUT + fit_to_tile)",
        lambda c: tile_now(indices[c], cmap.lut, scale),
        lambda c: tile_palette(indices[c], palette, scale),
        len(data),
    )
    compare(
        "color_index",
        lambda c: color_index(data[c], lo, hi)[0],
        lambda c: index_blocked(data[c], lo, hi),
        len(data),
    )


def main() -> None:
    for side in (288, 1024):
        one_size(side)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    ARGS = parser.parse_args()
    main()
