"""Cost of display ranges next to the colouring they serve (issue 10).

One stage of 16 channels of 1024 x 1024 float32 (Gaussian maps with sparse large values,
as edges in a Laplacian). Times, best of ``--rounds``: colouring every channel
(``color_index`` + LUT, as ``cbr apply`` does for its per-channel PNGs); the max rule as
``map_ranges`` computed it before issue 10 and as it does now; ``display_ranges`` with
``p99.5`` (strided sample + partition + the true min/max), per channel and per stage.
Run: ``python benchmarks/bench_ranges.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cbr_cli.io.render.colorize import color_index
from cbr_cli.io.render.colormaps import COLORMAPS
from cbr_cli.io.render.ranges import display_ranges, map_ranges


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.channels, args.size, args.size), dtype=np.float32)
    x[:, ::97, ::89] *= 20  # sparse outliers, as edges in a Laplacian
    lut = COLORMAPS["rdbu"].lut
    ranges = map_ranges([x], "per-channel", True)[0]

    def colour() -> None:
        for c in range(len(x)):
            index, _ = color_index(x[c], *ranges[c])
            np.take(lut, index, axis=0)

    def before() -> None:  # map_ranges before issue 10: max|x| of the finite values
        a = x.reshape(len(x), -1)
        np.max(np.abs(a), axis=1, where=np.isfinite(a), initial=0.0)

    rows = {
        "colouring (color_index + LUT)": best(colour, args.rounds),
        "ranges before issue 10 (max)": best(before, args.rounds),
        "ranges, max rule (now)": best(
            lambda: map_ranges([x], "per-channel", True, "max"), args.rounds
        ),
        "ranges, p99.5 per-channel": best(
            lambda: display_ranges([x], "per-channel", True, "p99.5"), args.rounds
        ),
        "ranges, p99.5 per-stage": best(
            lambda: display_ranges([x], "per-stage", True, "p99.5"), args.rounds
        ),
    }
    base = rows["colouring (color_index + LUT)"]
    print(f"{args.channels} x {args.size} x {args.size} float32, best of {args.rounds}")
    for name, seconds in rows.items():
        print(f"  {name:32s} {seconds * 1e3:8.1f} ms  {seconds / base:6.1%} of colouring")


if __name__ == "__main__":
    main()
