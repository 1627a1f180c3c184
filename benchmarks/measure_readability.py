"""How much structure each channel's picture shows: before and after issue 10's ranges.

Runs the demo pipeline (``cbr apply IMAGE`` with no flags) on one image and, for every
channel of every stage, colours it twice - with the ranges ``cbr apply`` used before
issue 10 (per-stage, ``max``) and with the new defaults (``auto`` normalisation:
per-channel conv, shared after BN; ``p99.5``) - and prints the interquartile range of the
rendered luminance (0-255; Rec. 601 weights). A near-white or near-black picture has an
IQR near 0. Run: ``python benchmarks/measure_readability.py samples/astronaut.png``.

``--trees BEFORE AFTER`` measures the channel PNGs two real runs wrote instead (e.g. the
image folders of ``cbr apply`` from an earlier checkout and from this one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cbr_cli.core.kernels import expand_names
from cbr_cli.io.render.colorize import colorize
from cbr_cli.io.render.colormaps import default_colormap
from cbr_cli.io.render.ranges import display_ranges
from cbr_cli.run.inputs import load_batch
from cbr_cli.run.pipeline import build_layers, normalize_input, run_layers
from cbr_cli.spec.flags import LayerFlags, build_spec

WEIGHTS = np.array([0.299, 0.587, 0.114])


def iqr(rgb: np.ndarray) -> float:
    luminance = rgb.astype(np.float64) @ WEIGHTS
    q1, q3 = np.percentile(luminance, [25, 75])
    return float(q3 - q1)


def compare_trees(before: Path, after: Path) -> None:
    """IQR of every channel PNG (``*_c<NN>.png``) of two image folders, side by side."""
    from PIL import Image

    names = sorted(p.name for p in before.glob("*_c[0-9]*.png"))
    if not names:
        raise SystemExit(f"no channel PNGs in {before}")
    summary = []
    print(f"{'picture':28s} {'IQR before':>10s} {'IQR after':>10s}")
    for name in names:
        a, b = (iqr(np.asarray(Image.open(d / name).convert("RGB"))) for d in (before, after))
        summary.append((a, b))
        print(f"{name:28s} {a:10.1f} {b:10.1f}")
    a, b = np.array(summary).T
    print(f"median over all {len(a)} pictures: before {np.median(a):.1f}, after {np.median(b):.1f}")
    print(f"minimum: before {a.min():.1f}, after {b.min():.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?")
    parser.add_argument("--trees", nargs=2, metavar=("BEFORE", "AFTER"), type=Path)
    args = parser.parse_args()
    if args.trees:
        return compare_trees(*args.trees)
    spec = build_spec(None, LayerFlags())
    pixels, _ = load_batch([args.image], None, None)
    results = run_layers(build_layers(spec, 3), normalize_input(np.stack(pixels), spec.input))
    maps = [r.data[0] for r in results]
    stages = [r.stage for r in results]
    signed = [s != "act" for s in stages]
    before = display_ranges(maps, "per-stage", signed, "max")
    after = display_ranges(maps, "auto", signed, "p99.5", stage_names=stages)
    names = expand_names(list(spec.layers[0].conv.kernels))
    print(f"{'stage':5s} {'channel':12s} {'IQR before':>10s} {'IQR after':>10s}")
    summary = []
    for s, (data, flag) in enumerate(zip(maps, signed, strict=True)):
        cmap = default_colormap(flag)
        for c in range(data.shape[0]):
            a = iqr(colorize(data[c], *before[s][c].as_tuple(), cmap))
            b = iqr(colorize(data[c], *after[s][c].as_tuple(), cmap))
            summary.append((a, b))
            print(f"{stages[s]:5s} {names[c]:12s} {a:10.1f} {b:10.1f}")
    a, b = np.array(summary).T
    print(f"median over all {len(a)} pictures: before {np.median(a):.1f}, after {np.median(b):.1f}")
    print(f"minimum: before {a.min():.1f}, after {b.min():.1f}")


if __name__ == "__main__":
    main()
