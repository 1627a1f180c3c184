"""channel_stats against plain numpy: one blocked read gives every statistic of every channel."""

from __future__ import annotations

import numpy as np
import pytest

from cbr_cli.core.moments import BLOCK_VALUES, channel_mean_var
from cbr_cli.core.stats import channel_stats
from cbr_cli.core.threads import set_threads


def _maps(kind: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if kind == "relu":  # two blocks per channel, the second short; exact zeros
        return np.maximum(rng.normal(size=(6, 300, 257)), 0).astype(np.float32)
    if kind == "signed-f64":
        return rng.normal(0.5, 2.0, size=(3, 40, 50))
    if kind == "tiny":
        return rng.normal(size=(2, 1, 3)).astype(np.float32)
    if kind == "offset":  # mean 1000, std 0.01: cancellation if the moments were one-pass
        return rng.normal(1000.0, 0.01, size=(2, 256, 300)).astype(np.float32)
    raise ValueError(kind)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["relu", "signed-f64", "tiny", "offset"])
def test_channel_stats_match_numpy(kind: str, threads: int) -> None:
    data = _maps(kind)
    assert data[0].size > BLOCK_VALUES or kind != "relu"  # the relu case spans blocks
    set_threads(threads)
    try:
        stats = channel_stats(data)
    finally:
        set_threads(None)
    mean, var = channel_mean_var(data[None])  # BatchNorm's numbers: the same, exactly
    flat = data.reshape(len(data), -1)
    exact = flat.astype(np.float64)
    for c, s in enumerate(stats):
        assert s.channel == c
        assert s.min == flat[c].min() and s.max == flat[c].max()
        assert s.frac_zero == np.count_nonzero(flat[c] == 0) / flat.shape[1]
        assert s.frac_negative == np.count_nonzero(flat[c] < 0) / flat.shape[1]
        assert s.mean == mean[c] and s.std == np.sqrt(var[c])
        # and those are right: float64 two-pass truth, within float32 rounding of the data
        assert s.mean == pytest.approx(exact[c].mean(), rel=1e-6, abs=1e-6 * exact[c].std())
        assert s.std == pytest.approx(exact[c].std(), rel=1e-5)


def test_nan_shows_and_dead_channels() -> None:
    data = np.zeros((3, 300, 300), np.float32)
    data[1] = 1.0
    data[2, 299, 299] = np.nan  # in the last, short block
    stats = channel_stats(data, bn_mean=np.arange(3.0), bn_var=np.ones(3))
    assert stats[0].dead and stats[0].frac_zero == 1.0 and stats[0].std == 0.0
    assert not stats[1].dead and stats[1].mean == 1.0 and stats[1].frac_zero == 0.0
    assert np.isnan(stats[2].min) and np.isnan(stats[2].max) and np.isnan(stats[2].mean)
    assert [s.bn_mean for s in stats] == [0.0, 1.0, 2.0]
