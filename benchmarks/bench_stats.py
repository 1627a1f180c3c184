"""``core.stats.channel_stats`` (one blocked read) against whole-stage passes, side by side.

Usage::

    python benchmarks/bench_stats.py [--repeat 15] [--threads 1]

``passes`` is what ``channel_stats`` did before it read the stage in cache-sized blocks:
``min``, ``max``, ``== 0`` and ``< 0`` counts over the whole (C, H*W) array, each a pass,
plus :func:`cbr_cli.core.moments.channel_mean_var`. Both run on ReLU-like float32 stages
of the sizes ``cbr batch`` (16x288x288) and ``cbr apply`` (16x1024x1024) see, interleaved;
the results must be identical. ``--threads`` as a ``cbr batch`` worker on 2 cores (1) or
``cbr apply`` (2).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cbr_cli.core.moments import channel_mean_var
from cbr_cli.core.stats import ChannelStats, channel_stats
from cbr_cli.core.threads import set_threads


def passes(data: np.ndarray) -> list[ChannelStats]:
    flat = data.reshape(data.shape[0], -1)
    mins, maxs = flat.min(axis=1), flat.max(axis=1)
    means, variances = channel_mean_var(data[None])
    zeros = np.count_nonzero(flat == 0, axis=1) / flat.shape[1]
    negative = np.count_nonzero(flat < 0, axis=1) / flat.shape[1]
    stds = np.sqrt(variances)
    rows = zip(mins, maxs, means, stds, zeros, negative, strict=True)
    return [ChannelStats(c, *map(float, row)) for c, row in enumerate(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.threads} thread(s), median of {args.repeat} interleaved rounds")
    for side in (288, 1024):
        data = np.maximum(rng.normal(size=(16, side, side)), 0).astype(np.float32)
        if passes(data) != channel_stats(data):
            raise SystemExit(f"16x{side}x{side}: the two disagree")
        before, after = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            passes(data)
            before.append(time.perf_counter() - start)
            start = time.perf_counter()
            channel_stats(data)
            after.append(time.perf_counter() - start)
        ratio = statistics.median(b / a for b, a in zip(before, after, strict=True))
        print(
            f"  16x{side}x{side}: passes {statistics.median(before) * 1e3:6.2f} ms, "
            f"channel_stats {statistics.median(after) * 1e3:6.2f} ms, {ratio:.2f}x (identical)"
        )


if __name__ == "__main__":
    main()
