"""Display ranges: the max rule (as before issue 10), percentiles, normalisation modes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from cbr_cli.errors import CbrError
from cbr_cli.io.render.colorize import colorize
from cbr_cli.io.render.colormaps import COLORMAPS
from cbr_cli.io.render.ranges import (
    SAMPLE_MAX,
    DisplayRange,
    auto_normalize,
    display_ranges,
    is_signed,
    map_ranges,
    parse_range,
    percentile,
    strided_sample,
    value_range,
)

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def _raise_on_fp_errors() -> Iterator[None]:
    with np.errstate(all="raise"):
        yield


# -- value ranges ------------------------------------------------------------------------


def test_value_range_signed_is_symmetric() -> None:
    assert value_range(np.array([-1.0, 3.0])) == (-3.0, 3.0)
    assert value_range(np.array([-5.0, 3.0]), signed=True) == (-5.0, 5.0)
    assert value_range(np.array([1.0, 3.0]), signed=True) == (-3.0, 3.0)


def test_value_range_non_negative_starts_at_zero() -> None:
    assert value_range(np.array([1.0, 3.0])) == (0.0, 3.0)
    assert value_range(np.array([2.0, 2.0])) == (0.0, 2.0)  # constant: top colour


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_all_zero_map_gets_the_unit_range_and_the_colour_of_zero(dtype: type) -> None:
    dead = np.zeros((4, 5), dtype=dtype)
    assert value_range(dead) == (0.0, 1.0)
    assert value_range(dead, signed=True) == (-1.0, 1.0)
    seq = colorize(dead, *value_range(dead), "viridis")
    assert np.all(seq == COLORMAPS["viridis"].lut[0])
    div = colorize(dead, *value_range(dead, signed=True), "rdbu")
    assert np.all(div == 255)


def test_constant_negative_map_renders_at_the_blue_end() -> None:
    x = np.full((3, 3), -0.5)
    assert value_range(x) == (-0.5, 0.5)
    assert np.all(colorize(x, *value_range(x), "rdbu") == COLORMAPS["rdbu"].lut[0])


def test_non_finite_values_are_ignored_by_ranges() -> None:
    x = np.array([np.nan, np.inf, -np.inf, -2.0, 1.0])
    assert value_range(x) == (-2.0, 2.0)
    assert value_range(np.full(3, np.nan)) == (0.0, 1.0)
    assert not is_signed(np.array([np.nan, -np.inf, 1.0]))


def stages() -> list[np.ndarray]:
    conv = np.zeros((3, 2, 2))
    conv[0] = [[-4, 1], [0, 0]]
    conv[1] = [[2, 0], [0, 0]]  # channel 2 stays all zero
    relu = np.maximum(conv, 0)
    relu[1] = [[0, 8], [0, 0]]
    return [conv, relu]


def test_map_ranges_per_channel() -> None:
    r = map_ranges(stages(), "per-channel")
    assert r == [[(-4.0, 4.0), (-2.0, 2.0), (-1.0, 1.0)], [(0.0, 1.0), (0.0, 8.0), (0.0, 1.0)]]


def test_map_ranges_per_stage() -> None:
    r = map_ranges(stages(), "per-stage")
    assert r == [[(-4.0, 4.0)] * 3, [(0.0, 8.0)] * 3]


def test_map_ranges_global() -> None:
    r = map_ranges(stages(), "global")
    assert r == [[(-8.0, 8.0)] * 3, [(0.0, 8.0)] * 3]


def test_map_ranges_signed_override_and_batches() -> None:
    batch = np.stack(stages()[:1] * 2)  # (N=2, C=3, H, W)
    batch[1, 2, 0, 0] = -7.0
    assert map_ranges([batch], "per-channel", signed=False) == [
        [(0.0, 1.0), (0.0, 2.0), (0.0, 1.0)]
    ]
    assert map_ranges([batch], "per-channel", signed=[True])[0][2] == (-7.0, 7.0)
    with pytest.raises(ValueError, match="2 signed flags for 1 stages"):
        map_ranges([batch], signed=[True, False])


def test_map_ranges_rejects_unknown_mode() -> None:
    with pytest.raises(CbrError, match=r"normalize must be one of \['per-channel', 'per-stage'"):
        map_ranges(stages(), "per-image")


# -- the --range rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "q"), [("max", 100.0), ("p100", 100.0), ("P99.5", 99.5), ("p90", 90.0), ("p.5", 0.5)]
)
def test_parse_range(text: str, q: float) -> None:
    rule = parse_range(text)
    assert rule.percentile == q
    assert str(rule) == ("max" if q == 100 else f"p{q:g}")


@pytest.mark.parametrize("text", ["p0", "p101", "p", "99.5", "pmax", "p-3", "median", ""])
def test_parse_range_rejects_with_one_line_naming_the_flag(text: str) -> None:
    with pytest.raises(CbrError) as info:
        parse_range(text)
    message = str(info.value)
    assert message.startswith("--range: expected 'max' or pNN") and repr(text) in message
    assert "\n" not in message


@pytest.mark.parametrize("q", [0.0, 0.5, 25.0, 50.0, 73.3, 99.0, 99.5, 99.9, 100.0])
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_percentile_matches_numpy(q: float, n: int) -> None:
    rng = np.random.default_rng(int(q * 10) + n)
    values = rng.standard_normal((3, n)) * [[1.0], [10.0], [1e-3]]
    expected = np.percentile(values, q, axis=1)  # numpy's default, method="linear"
    np.testing.assert_allclose(percentile(values, q), expected, rtol=1e-13, atol=0)


def _full_partition(values: np.ndarray, q: float) -> np.ndarray:
    """The percentile by one partition of each whole row (the path short rows take)."""
    n = values.shape[1]
    position = q / 100.0 * (n - 1)
    lo = int(np.floor(position))
    t = position - lo
    part = np.partition(values, lo, axis=1)
    below = part[:, lo]
    above = part[:, lo + 1 :].min(axis=1) if lo + 1 < n else below
    return np.where(t >= 0.5, above - (above - below) * (1 - t), below + (above - below) * t)


TAIL_ROWS = {
    "gaussian": lambda rng, n: rng.standard_normal(n),
    "heavy tail": lambda rng, n: rng.standard_cauchy(n),
    "ascending": lambda rng, n: np.arange(n, dtype=np.float64),  # the subsample sees a ramp
    "descending": lambda rng, n: np.arange(n, 0, -1, dtype=np.float64),
    "constant": lambda rng, n: np.full(n, 3.0),
    "few levels": lambda rng, n: rng.integers(0, 4, n).astype(np.float64),  # ties everywhere
    "relu": lambda rng, n: np.maximum(rng.standard_normal(n), 0.0),  # half zeros
    # The subsample (every 16th value) sees only zeros; the tail sits between its picks.
    "hidden tail": lambda rng, n: np.where(np.arange(n) % 16 == 7, 100.0 + np.arange(n), 0.0),
}


@pytest.mark.parametrize("kind", TAIL_ROWS)
@pytest.mark.parametrize("q", [87.5, 95.0, 99.0, 99.5, 99.9, 100.0])
@pytest.mark.parametrize("n", [4096, 5000, 65536])
def test_tail_search_finds_the_full_partitions_values(kind: str, q: float, n: int) -> None:
    rng = np.random.default_rng(n + int(q * 10))
    values = np.stack([TAIL_ROWS[kind](rng, n), rng.standard_normal(n) * 1e3])
    got = percentile(values, q)
    np.testing.assert_array_equal(got, _full_partition(values, q))  # the same ranks, exactly
    np.testing.assert_allclose(got, np.percentile(values, q, axis=1), rtol=1e-13, atol=0)


def test_tail_search_partitions_a_small_share_of_a_long_row(monkeypatch) -> None:
    import cbr_cli.io.render.ranges as ranges

    sizes: list[int] = []
    real = np.partition

    def counted(a, kth, axis=-1):
        sizes.append(np.asarray(a).size)
        return real(a, kth, axis=axis)

    values = np.random.default_rng(3).standard_normal((4, 65536))
    expected = _full_partition(values, 99.5)
    monkeypatch.setattr(ranges.np, "partition", counted)
    np.testing.assert_array_equal(percentile(values, 99.5), expected)
    # The subsample (a sixteenth) once, then per row about twice the 0.5% asked for.
    assert sizes[0] == values.size // 16
    assert len(sizes) == 5 and max(sizes[1:]) < 0.03 * 65536, sizes


def test_percentile_ignores_non_finite_values() -> None:
    values = np.array([[1.0, np.nan, 3.0, np.inf, 2.0, -np.inf], [np.nan] * 6])
    p = percentile(values, 50.0)
    assert p[0] == np.percentile([1.0, 3.0, 2.0], 50.0) and np.isnan(p[1])


def noisy_stage(seed: int = 0, shape: tuple[int, int, int] = (4, 300, 300)) -> np.ndarray:
    """Gaussian maps with a few huge outliers per channel, as a Laplacian's edges."""
    rng = np.random.default_rng(seed)
    x = (
        rng.standard_normal(shape).astype(np.float32)
        * np.array([1, 2, 4, 8], np.float32)[: shape[0], None, None]
    )
    x[:, 5, 7] = 50.0
    x[:, 9, 9] = -60.0
    return x


def test_p100_equals_the_max_rule() -> None:
    x = noisy_stage()
    for mode in ("per-channel", "per-stage", "global"):
        assert map_ranges([x], mode, rule="p100") == map_ranges([x], mode, rule="max")
    assert map_ranges([x], "per-channel", rule="max")[0][0] == (-60.0, 60.0)


@pytest.mark.parametrize("signed", [True, False])
def test_per_channel_percentile_on_small_maps_is_exact(signed: bool) -> None:
    x = noisy_stage(1, (4, 200, 200))  # 40 000 pixels: the sample is the whole map
    if not signed:
        x = np.maximum(x, 0)
    ranges = display_ranges([x], "per-channel", signed, "p99.5")[0]
    for c, r in enumerate(ranges):
        values = np.abs(x[c]) if signed else x[c]
        m = np.percentile(values.astype(np.float64), 99.5)
        assert r.as_tuple() == pytest.approx((-m, m) if signed else (0.0, m), rel=1e-12)
        assert r.data_min == float(x[c].min()) and r.data_max == float(x[c].max())
        assert r.clipped_high and r.clipped_low == signed


def test_per_stage_percentile_pools_the_channels() -> None:
    x = noisy_stage(2, (3, 100, 100))
    m = np.percentile(np.abs(x.astype(np.float64)), 99)
    assert map_ranges([x], "per-stage", True, "p99")[0] == [pytest.approx((-m, m))] * 3


def test_large_maps_use_a_bounded_sample_close_to_the_full_percentile() -> None:
    x = noisy_stage(3, (2, 1024, 1024))
    sample = strided_sample(x)
    assert sample.shape[0] == 2 and sample.shape[1] <= SAMPLE_MAX
    assert sample.shape[1] >= SAMPLE_MAX // 2  # not needlessly small
    ranges = display_ranges([x], "per-channel", True, "p99.5")[0]
    for c, r in enumerate(ranges):
        full = np.percentile(np.abs(x[c]), 99.5)
        assert r.vmax == pytest.approx(full, rel=0.03)  # a 65k-pixel sample: within ~1 %


def test_constant_and_all_zero_maps_under_a_percentile() -> None:
    x = np.zeros((3, 50, 50))
    x[1] = 2.5
    x[2] = -0.5
    assert map_ranges([x], "per-channel", True, "p99.5") == [
        [(-1.0, 1.0), (-2.5, 2.5), (-0.5, 0.5)]
    ]
    assert map_ranges([x], "per-channel", False, "p99.5") == [[(0.0, 1.0), (0.0, 2.5), (0.0, 1.0)]]


def test_sparse_map_falls_back_to_its_maximum() -> None:
    x = np.zeros((1, 100, 100))
    x[0, :3, :3] = 4.0  # 0.09 % active: the 99.5th percentile is 0
    assert map_ranges([x], "per-channel", False, "p99.5") == [[(0.0, 4.0)]]


def test_nan_and_inf_are_ignored_by_percentile_ranges() -> None:
    x = noisy_stage(4, (2, 60, 60)).astype(np.float64)
    clean = x.copy()
    x[0, 0, :5] = np.nan
    x[1, 1, 1] = np.inf
    ranges = display_ranges([x], "per-channel", True, "p99")[0]
    for c, r in enumerate(ranges):
        values = np.abs(clean[c]).ravel()
        values = values[np.isfinite(x[c].ravel())]
        assert r.vmax == pytest.approx(np.percentile(values, 99), rel=1e-12)
        finite = x[c][np.isfinite(x[c])]
        assert (r.data_min, r.data_max) == (finite.min(), finite.max())
    nothing = np.full((1, 4, 4), np.nan)
    assert display_ranges([nothing], "per-channel", True, "p99.5")[0][0] == DisplayRange(
        -1.0, 1.0, 0.0, 0.0
    )


def test_auto_normalisation_per_stage() -> None:
    assert auto_normalize(["conv", "bn", "act", "conv", "act"]) == [
        "per-channel",
        "per-stage",
        "per-stage",
        "per-channel",
        "per-channel",  # an activation straight after a conv: kernels' gains differ
    ]
    conv = noisy_stage(5, (4, 40, 40))
    bn = conv / conv.std(axis=(1, 2), keepdims=True)
    act = np.maximum(bn, 0)
    ranges = display_ranges(
        [conv, bn, act], "auto", [True, True, False], "p99", stage_names=["conv", "bn", "act"]
    )
    assert len({r.vmax for r in ranges[0]}) == 4  # per channel
    assert len({r.vmax for r in ranges[1]}) == 1 and len({r.vmax for r in ranges[2]}) == 1
    with pytest.raises(ValueError, match="needs one stage name per stage"):
        display_ranges([conv], "auto")
    with pytest.raises(CbrError, match="normalize must be one of"):
        display_ranges([conv], ["per-image"])
