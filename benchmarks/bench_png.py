"""Which PNG encoder, filter and level for cbr's pictures? MB/s and file size, side by side.

The pictures are the real ones: every PNG a `cbr apply` run writes (one 16-channel block,
k3 same, batch BN, ReLU) on each of samples/*.png and on a 1024x1024 upscale of the
astronaut, caught on their way into ``write_png``. They fall into four kinds:

* ``map512`` / ``map1024``: per-channel maps, palette indices (H, W) + a 256-colour table;
* ``grid``: the labelled RGB montages of a stage (16 tiles of up to 256 px, ~1182x1044x3);
* ``photo``: ``input.png``, the input image as RGB.

For each option every picture of a kind is encoded to bytes in memory (no disk), best of
``--repeat``; MB/s is raw bytes in (H*W*samples) per second of one thread, size is the
file size as a share of the raw bytes. Options whose package is missing are skipped.
``cbr`` is what ``write_png`` does (with the filter ``cbr apply`` asks for); ``own`` rows
use its chunk writer (:func:`cbr_cli.io.png.encode_png`) with another deflate or filter.
The machine is shared: run it when the cores are idle, or read ratios, not absolutes.

    python benchmarks/bench_png.py [--repeat 3] [--per-kind 8] [--quick]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

import cbr_cli.io.writers as writers
from cbr_cli.io import png
from cbr_cli.run.apply import run_apply
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.flags import LayerFlags, build_spec

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Picture:
    """One ``write_png`` call of a real run."""

    image: np.ndarray
    text: dict
    palette: np.ndarray | None
    row_filter: str | None  # what run_apply asked for (None: write_png's default)


Encoder = Callable[[Picture], bytes]


def capture() -> dict[str, list[Picture]]:
    """Every picture a real run writes, by kind."""
    caught: list[tuple[str, Picture]] = []

    def spy(path, image, text=None, palette=None, *, row_filter=None):  # type: ignore[no-untyped-def]
        caught.append(
            (
                Path(path).name,
                Picture(np.ascontiguousarray(image), dict(text or {}), palette, row_filter),
            )
        )

    real = writers.write_png
    writers.write_png = spy  # run/apply.py looks it up in the module at each call
    try:
        with tempfile.TemporaryDirectory() as tmp:
            big = Path(tmp) / "astronaut1024.png"
            Image.open(ROOT / "samples" / "astronaut.png").resize((1024, 1024)).save(big)
            spec = build_spec(None, LayerFlags(out_channels=16, padding="same", bn="batch"))
            paths = [*sorted(str(p) for p in (ROOT / "samples").glob("*.png")), str(big)]
            for i, path in enumerate(paths):  # one at a time: batch BN needs one size
                run_apply([path], spec, ApplyOptions(out_dir=f"{tmp}/out{i}"))
    finally:
        writers.write_png = real
    kinds: dict[str, list[Picture]] = {"map512": [], "map1024": [], "grid": [], "photo": []}
    for name, picture in caught:
        shape = picture.image.shape
        if "_grid" in name:
            kinds["grid"].append(picture)
        elif name == "input.png":
            kinds["photo"].append(picture)
        elif picture.palette is not None and shape in ((512, 512), (1024, 1024)):
            kinds[f"map{shape[0]}"].append(picture)
    return kinds


def _pillow(level: int, **options: object) -> Encoder:
    def encode(p: Picture) -> bytes:
        if p.palette is None:
            picture = Image.fromarray(p.image)
        else:
            picture = Image.frombytes("P", p.image.shape[::-1], p.image.tobytes())
            picture.putpalette(p.palette.tobytes())
        info = PngImagePlugin.PngInfo()
        for key, value in p.text.items():
            info.add_text(key, value)
        out = io.BytesIO()
        picture.save(out, format="PNG", pnginfo=info, compress_level=level, **options)
        return out.getvalue()

    return encode


def _cbr(compress: Callable[[memoryview], bytes] | None = None) -> Encoder:
    def encode(p: Picture) -> bytes:
        return png.encode_png(
            p.image, p.text, p.palette, row_filter=p.row_filter, compress=compress
        )

    return encode


def _own(row_filter: str, compress: Callable[[memoryview], bytes]) -> Encoder:
    def encode(p: Picture) -> bytes:
        return png.encode_png(p.image, p.text, p.palette, row_filter=row_filter, compress=compress)

    return encode


def _rgb_only(fn: Callable[[np.ndarray], bytes]) -> Encoder:
    def encode(p: Picture) -> bytes:
        if p.palette is not None:
            raise TypeError("no palette images")
        return fn(p.image)

    return encode


def options(quick: bool) -> dict[str, Encoder | str]:
    """Name -> encoder, or -> the reason it is skipped."""
    out: dict[str, Encoder | str] = {}
    out["cbr write_png (as shipped)"] = _cbr()
    out[f"cbr without isal (zlib-{zlib.ZLIB_VERSION} L1)"] = _cbr(lambda d: zlib.compress(d, 1))
    for level in (1, 6) if quick else (1, 2, 3, 4, 5, 6):
        out[f"pillow L{level}"] = _pillow(level)
    if not quick:
        out["pillow L1 Z_RLE"] = _pillow(1, compress_type=zlib.Z_RLE)
        out["pillow optimize (L9+avg)"] = _pillow(9, optimize=True)
    for row_filter in ("none", "up") if quick else ("none", "sub", "up", "paeth"):
        name = f"own zlib-{zlib.ZLIB_VERSION} L1 {row_filter}"
        out[name] = _own(row_filter, lambda d: zlib.compress(d, 1))
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        out["own zlib-ng"] = "pip install zlib-ng"
    else:
        for level in (1, 2) if quick else (1, 2, 4, 6):
            out[f"own zlib-ng L{level} none"] = _own(
                "none", lambda d, lv=level: zlib_ng.compress(d, lv)
            )
    try:
        import deflate
    except ImportError:
        out["own libdeflate"] = "pip install deflate"
    else:
        for level in (1, 2) if quick else (1, 2, 4, 6):
            out[f"own libdeflate L{level} none"] = _own(
                "none", lambda d, lv=level: deflate.zlib_compress(d, lv)
            )
        out["own libdeflate L1 up"] = _own("up", lambda d: deflate.zlib_compress(d, 1))
    try:
        from isal import isal_zlib
    except ImportError:
        out["own isal"] = "pip install isal"
    else:
        for level in (0, 1, 2, 3):
            out[f"own isal L{level} none"] = _own(
                "none", lambda d, lv=level: isal_zlib.compress(d, lv)
            )
        for row_filter in ("up",) if quick else ("sub", "up", "average", "paeth"):
            out[f"own isal L2 {row_filter}"] = _own(row_filter, lambda d: isal_zlib.compress(d, 2))
    try:
        import fpng
    except ImportError:
        out["fpng"] = "pip install fpng"
    else:
        out["fpng (RGB only, no text; holds the GIL)"] = _rgb_only(
            lambda im: fpng.from_bytes(im.tobytes(), im.shape[1], im.shape[0], 3)
        )
    try:
        import pyspng
    except ImportError:
        out["pyspng"] = "pip install pyspng-seunglab"
    else:
        if hasattr(pyspng, "encode"):
            out["pyspng L1 (RGB only, no text; holds the GIL)"] = _rgb_only(
                lambda im: pyspng.encode(im, compress_level=1)
            )
    try:
        import imagecodecs
    except ImportError:
        out["imagecodecs"] = "pip install imagecodecs"
    else:
        out["imagecodecs libpng L1 rle sub (RGB only)"] = _rgb_only(
            lambda im: imagecodecs.png_encode(im, level=1, strategy=3, filter=16)
        )
    return out


def measure(encode: Encoder, pictures: list[Picture], repeat: int) -> tuple[float, float] | None:
    """(MB/s, size as a share of raw), or None if the encoder cannot take these pictures."""
    raw = sum(p.image.nbytes for p in pictures)
    best = float("inf")
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            size = sum(len(encode(p)) for p in pictures)
        except TypeError:
            return None
        best = min(best, time.perf_counter() - start)
    return raw / best / 1e6, size / raw


def threaded(encode: Encoder, pictures: list[Picture], repeat: int, threads: int) -> float:
    """MB/s of ``threads`` threads encoding ``pictures`` together (does it release the GIL?)."""
    raw = sum(p.image.nbytes for p in pictures)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            start = time.perf_counter()
            list(pool.map(encode, pictures))
            best = min(best, time.perf_counter() - start)
    return raw / best / 1e6


def breakdown(pictures: list[Picture], repeat: int) -> dict[str, float]:
    """ms per MB raw of cbr's encoder: filter rows, deflate, and the rest (chunks, CRC)."""
    parts = {"filter": float("inf"), "deflate": float("inf"), "total": float("inf")}
    raw = sum(p.image.nbytes for p in pictures) / 1e6
    for _ in range(repeat):
        t0 = time.perf_counter()
        lines = []
        for p in pictures:  # the filter encode_png uses
            bpp = 1 if p.image.ndim == 2 else 3
            row_filter = p.row_filter or ("up" if bpp == 1 else "none")
            lines.append(png.filter_rows(p.image.reshape(p.image.shape[0], -1), bpp, row_filter))
        t1 = time.perf_counter()
        for line in lines:
            png.deflate(memoryview(line).cast("B"))
        t2 = time.perf_counter()
        for p in pictures:
            _cbr()(p)
        t3 = time.perf_counter()
        parts["filter"] = min(parts["filter"], 1e3 * (t1 - t0) / raw)
        parts["deflate"] = min(parts["deflate"], 1e3 * (t2 - t1) / raw)
        parts["total"] = min(parts["total"], 1e3 * (t3 - t2) / raw)
    parts["rest"] = max(0.0, parts["total"] - parts["filter"] - parts["deflate"])
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-kind", type=int, default=8, help="pictures of each kind")
    parser.add_argument("--quick", action="store_true", help="fewer options")
    args = parser.parse_args()

    kinds = capture()
    chosen = {}
    for kind, pictures in kinds.items():
        step = max(1, len(pictures) // args.per_kind)
        chosen[kind] = pictures[::step][: args.per_kind]
    described = ", ".join(
        f"{k} {len(p)} ({sum(x.image.nbytes for x in p) / 1e6:.1f} MB)" for k, p in chosen.items()
    )
    print(f"pictures (raw MB): {described}; best of {args.repeat}, one thread, MB/s of raw bytes")
    head = " | ".join(f"{k} MB/s | {k} size" for k in chosen)
    print(f"| option | {head} |")
    print("|---|" + "---:|---:|" * len(chosen))
    table = options(args.quick)
    for name, encode in table.items():
        if isinstance(encode, str):
            print(f"| {name} | skipped: {encode} |")
            continue
        cells = []
        for pictures in chosen.values():
            result = measure(encode, pictures, args.repeat)
            cells.append("- | -" if result is None else f"{result[0]:.0f} | {100 * result[1]:.1f}%")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)

    both = chosen["map512"] + chosen["grid"]
    repeat = max(5, args.repeat)
    print(f"\nthreads (map512 + grid), MB/s, best of {repeat}: 1 thread -> 2 threads")
    for name in ("pillow L1", "cbr write_png (as shipped)"):
        encode = table[name]
        assert not isinstance(encode, str)
        one, two = (threaded(encode, both, repeat, n) for n in (1, 2))
        print(f"  {name:<28} {one:6.0f} -> {two:6.0f}  (x{two / one:.2f})")
    print("\nwhere cbr's encoder spends its time, ms per MB raw (one thread):")
    for kind, pictures in chosen.items():
        parts = breakdown(pictures, args.repeat)
        print(f"  {kind:<8} " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    grid = kinds["grid"][0].image.nbytes / 1e6
    maps = 16 * 256 * 256 / 1e6
    print(
        f"\nraw bytes per stage of a 16-channel block on a 256x256 input: grid {grid:.1f} MB,"
        f" 16 channel maps {maps:.1f} MB (the grid's tiles are the maps themselves, in RGB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
