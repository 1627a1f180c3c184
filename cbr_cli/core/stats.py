"""Per-channel statistics of feature maps (pure numpy, no printing).

For one image's stage output (C, H, W), every channel gets min, max, mean, std
(population; :func:`cbr_cli.core.ops.channel_mean_var`, the statistics BatchNorm uses), the
fraction of exact zeros and the fraction of
negative values.  A channel after an activation that is zero everywhere is *dead*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cbr_cli.core.ops import channel_mean_var


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
    """
    channels = data.shape[0]
    flat = data.reshape(channels, -1)
    count = flat.shape[1]
    mins = flat.min(axis=1)
    maxs = flat.max(axis=1)
    means, variances = channel_mean_var(data[None])  # two-pass, float64: BN's own numbers
    stds = np.sqrt(variances)
    zeros = np.count_nonzero(flat == 0, axis=1) / count
    negative = np.count_nonzero(flat < 0, axis=1) / count
    return [
        ChannelStats(
            channel=c,
            min=float(mins[c]),
            max=float(maxs[c]),
            mean=float(means[c]),
            std=float(stds[c]),
            frac_zero=float(zeros[c]),
            frac_negative=float(negative[c]),
            bn_mean=None if bn_mean is None else float(bn_mean[c]),
            bn_var=None if bn_var is None else float(bn_var[c]),
        )
        for c in range(channels)
    ]
