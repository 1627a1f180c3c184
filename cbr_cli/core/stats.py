"""Per-channel statistics of feature maps (pure numpy, no printing).

For one image's stage output (C, H, W), every channel gets min, max, mean, std
(population; the numbers :func:`cbr_cli.core.moments.channel_mean_var` gives, the
statistics BatchNorm uses), the fraction of exact zeros and the fraction of negative
values.  A channel after an activation that is zero everywhere is *dead*.

All of them are taken in one read of the stage, block by cache-sized block
(:data:`~cbr_cli.core.moments.BLOCK_VALUES` values of one channel): a block's min, max,
zero and negative counts and its two-pass moments while it is in cache, instead of a
pass over the whole stage per statistic: 1.6x faster on 16 channels of 288^2 and
2x on 16 of 1024^2 (``benchmarks/bench_stats.py``), every number unchanged, bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cbr_cli.core.moments import BLOCK_VALUES, block_moments, merge
from cbr_cli.core.threads import run_tasks


@dataclass(frozen=True)
class ChannelStats:
    channel: int
    min: float
    max: float
    mean: float
    std: float
    frac_zero: float
    frac_negative: float
    bn_mean: float | None = None
    bn_var: float | None = None

    @property
    def dead(self) -> bool:
        """Zero everywhere (e.g. a ReLU output that never fires)."""
        return self.min == 0.0 and self.max == 0.0

    def to_dict(self) -> dict[str, float | int | bool | None]:
        out = asdict(self)
        out["dead"] = self.dead
        return out


def channel_stats(
    data: np.ndarray, bn_mean: np.ndarray | None = None, bn_var: np.ndarray | None = None
) -> list[ChannelStats]:
    """Statistics of every channel of ``data`` of shape (C, H, W).

    NaNs are ignored by nothing: a NaN makes that channel's min/max/mean NaN, so it shows.
    The mean and variance are :func:`~cbr_cli.core.moments.channel_mean_var`'s (the same
    blocks, merged in the same order: the same numbers).
    """
    channels = data.shape[0]
    flat = data.reshape(channels, -1)
    count = flat.shape[1]
    step = max(1, min(count, BLOCK_VALUES))
    blocks = [(c, s) for c in range(channels) for s in range(0, count, step)]
    summaries: list[tuple[float, float, int, int, tuple[float, float, int]]] = [
        (0.0, 0.0, 0, 0, (0.0, 0.0, 0))
    ] * len(blocks)
    ones = np.ones(step, flat.dtype)

    def run(index: int, scratch: tuple[np.ndarray, np.ndarray]) -> None:
        c, s = blocks[index]
        v = flat[c, s : s + step]
        values, flags = scratch[0], scratch[1][: v.shape[0]]
        # The counts first: block_moments overwrites its scratch, not the block.
        zeros = int(np.count_nonzero(np.equal(v, 0, out=flags)))
        negative = int(np.count_nonzero(np.less(v, 0, out=flags)))
        summaries[index] = (v.min(), v.max(), zeros, negative, block_moments(v, values, ones))

    run_tasks(
        range(len(blocks)),
        run,
        lambda: (np.empty(step, flat.dtype), np.empty(step, dtype=bool)),
    )
    mins = np.empty(channels, flat.dtype)
    maxs = np.empty(channels, flat.dtype)
    zeros = np.zeros(channels, np.int64)
    negative = np.zeros(channels, np.int64)
    n = np.zeros(channels)
    means = np.zeros(channels)
    m2 = np.zeros(channels)
    first = {c: True for c in range(channels)}
    for (c, _), (low, high, z, neg, (mean, block_m2, size)) in zip(blocks, summaries, strict=True):
        if first[c]:
            mins[c], maxs[c], first[c] = low, high, False
        else:  # np.minimum/np.maximum: NaN propagates, as it does through min()/max()
            mins[c], maxs[c] = np.minimum(mins[c], low), np.maximum(maxs[c], high)
        zeros[c] += z
        negative[c] += neg
        n[c], means[c], m2[c] = merge(n[c], means[c], m2[c], size, mean, block_m2)
    stds = np.sqrt(m2 / np.maximum(n, 1))
    return [
        ChannelStats(
            channel=c,
            min=float(mins[c]),
            max=float(maxs[c]),
            mean=float(means[c]),
            std=float(stds[c]),
            frac_zero=float(zeros[c] / count),
            frac_negative=float(negative[c] / count),
            bn_mean=None if bn_mean is None else float(bn_mean[c]),
            bn_var=None if bn_var is None else float(bn_var[c]),
        )
        for c in range(channels)
    ]
