"""Display ranges: which values map to the end colours of a picture.

Rule (``--range``)
------------------
``max`` (= ``p100``, the behaviour before issue 10): the range reaches the most extreme
finite value. ``pNN`` (e.g. ``p99.5``, the default :data:`DEFAULT_RULE`): the range reaches
the NN-th percentile of the *magnitudes*: of ``|x|`` for a signed map, of ``x`` for a
non-negative one (after ReLU, zeros included). Values beyond it clip to the end colours;
the colour bar says so and prints the true minimum and maximum (:class:`DisplayRange`).
Exact values stay in the ``.npy`` files: the PNG is a view.

Signed maps get the symmetric range ``[-m, m]`` (0 is the white centre of a diverging
map), non-negative maps ``[0, m]`` (0 is the darkest colour of a sequential map).

Cost: a percentile is taken on a bounded *strided sample* of each map - a regular grid
of at most :data:`SAMPLE_MAX` pixels per channel (every s-th row and column,
``s = ceil(sqrt(H * W / SAMPLE_MAX))``) - with :func:`numpy.partition`, ``O(n)``. The
true minimum and maximum are one full pass each (as the ``max`` rule always needed). A
shared (per-stage or global) range pools ``SAMPLE_MAX / C`` pixels of each of the ``C``
channels (at least 4096).

Normalisation
-------------
``per-channel``: each channel on its own scale. ``per-stage``: the channels of a stage
share one scale, so they can be compared. ``global``: one magnitude over the stages
marked global. ``auto`` (:func:`auto_normalize`) chooses per stage: **per-channel for conv
outputs** (kernels differ in gain by orders of magnitude - an identity kernel next to a
Laplacian - so one shared scale leaves most channels blank), **shared (per-stage) after
BN** (BN puts every channel on one scale; comparing them is the point) and for the
activation that follows a BN; an activation straight after a conv is per-channel too.

Edge cases, on purpose
----------------------
* Ranges use the finite values only; a map with none, or all zero, gets the unit range
  ``[-1, 1]`` / ``[0, 1]`` (it renders as the colour of 0; nothing divides by zero).
* A percentile of 0 where the maximum is not (a sparse map: 99.6 % zeros after ReLU) falls
  back to the maximum, so the few active pixels still show.
* A constant nonzero map ``v`` gets ``[-|v|, |v|]`` or ``[0, v]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cbr_cli.errors import CbrError

__all__ = [
    "DEFAULT_RULE",
    "MAX_RULE",
    "NORMALIZE_MODES",
    "SAMPLE_MAX",
    "DisplayRange",
    "RangeRule",
    "auto_normalize",
    "channel_extents",
    "display_ranges",
    "is_signed",
    "map_ranges",
    "parse_range",
    "percentile",
    "resolve_normalize",
    "strided_sample",
    "value_range",
]

NORMALIZE_MODES = ("per-channel", "per-stage", "global")
"""Normalisation modes of one stage; ``auto`` picks one per stage (:func:`auto_normalize`)."""
SAMPLE_MAX = 1 << 16
"""Most pixels per channel a percentile looks at (a strided grid of the map)."""


@dataclass(frozen=True)
class RangeRule:
    """How far a display range reaches: the ``percentile`` of the magnitudes (100 = max)."""

    percentile: float

    @property
    def is_max(self) -> bool:
        return self.percentile >= 100.0

    def __str__(self) -> str:
        return "max" if self.is_max else f"p{self.percentile:g}"

    def describe(self, signed: bool) -> str:
        """E.g. ``p99.5 of |x|``, ``max of x``."""
        return f"{self} of {'|x|' if signed else 'x'}"


MAX_RULE = RangeRule(100.0)
"""The most extreme finite value (``--range max`` = ``p100``)."""
DEFAULT_RULE = RangeRule(99.5)
"""``--range p99.5``."""

_PERCENTILE = re.compile(r"p(\d+(?:\.\d*)?|\.\d+)")


def parse_range(text: str | RangeRule, flag: str = "--range") -> RangeRule:
    """Parse ``max`` or ``pNN`` (``0 < NN <= 100``, e.g. ``p99.5``; ``p100`` = ``max``).

    Raises
    ------
    CbrError
        Anything else, naming ``flag`` and the value.
    """
    if isinstance(text, RangeRule):
        return text
    key = str(text).strip().lower()
    if key == "max":
        return MAX_RULE
    match = _PERCENTILE.fullmatch(key)
    value = float(match.group(1)) if match else math.nan
    if not 0.0 < value <= 100.0:
        raise CbrError(
            f"{flag}: expected 'max' or pNN with 0 < NN <= 100 (e.g. p99.5), but got {text!r}"
        )
    return RangeRule(value)


@dataclass(frozen=True)
class DisplayRange:
    """A channel's display range ``[vmin, vmax]`` and the finite data extent it came from.

    ``data_min``/``data_max`` are 0 for a channel without finite values.
    """

    vmin: float
    vmax: float
    data_min: float
    data_max: float

    @property
    def clipped_low(self) -> bool:
        """Some values lie below ``vmin`` (drawn in the first colour)."""
        return self.data_min < self.vmin

    @property
    def clipped_high(self) -> bool:
        """Some values lie above ``vmax`` (drawn in the last colour)."""
        return self.data_max > self.vmax

    @property
    def clipped(self) -> bool:
        return self.clipped_low or self.clipped_high

    def as_tuple(self) -> tuple[float, float]:
        return (self.vmin, self.vmax)


def auto_normalize(stage_names: Sequence[str]) -> list[str]:
    """The default normalisation of each stage, in pipeline order (see the module docstring).

    ``stage_names`` are ``conv``, ``bn`` or ``act``, layer after layer (as ``cbr apply``
    runs them); an ``act`` is shared when a ``bn`` came after its layer's ``conv``.
    """
    modes = []
    after_bn = False
    for name in stage_names:
        if name == "conv":
            after_bn = False
            modes.append("per-channel")
        elif name == "bn":
            after_bn = True
            modes.append("per-stage")
        else:
            modes.append("per-stage" if after_bn else "per-channel")
    return modes


# ---------------------------------------------------------------------------------------
# Building blocks


def _as_maps(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim < 3:
        raise ValueError(f"feature maps must have shape (..., C, H, W), but got {a.shape}")
    return a


def strided_sample(x: np.ndarray, limit: int = SAMPLE_MAX) -> np.ndarray:
    """A regular grid of at most ``limit`` pixels of each channel, as ``(C, n)`` float64.

    Parameters
    ----------
    x : ndarray of shape (..., C, H, W)
        Leading axes (a batch) are pooled into each channel's sample.

    Returns
    -------
    sample : ndarray of shape (C, n)
        ``x[..., ::s, ::s]`` with ``s = ceil(sqrt(H * W / limit))`` (so
        ``n <= prod(leading) * limit``); all of ``x`` when it is small enough.
    """
    a = _as_maps(x)
    h, w = a.shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w / limit)))
    while step > 1 and math.ceil(h / step) * math.ceil(w / step) > limit:
        step += 1  # ceil() rounding can leave a little over the limit
    grid = a[..., ::step, ::step]
    return np.moveaxis(grid, -3, 0).reshape(a.shape[-3], -1).astype(np.float64)


def percentile(values: np.ndarray, q: float) -> np.ndarray:
    """The ``q``-th percentile of each row's finite values, as :func:`numpy.percentile`.

    Linear interpolation between closest ranks (numpy's default ``method="linear"``),
    found with :func:`numpy.partition` in ``O(n)``.

    Parameters
    ----------
    values : ndarray of shape (R, n)
    q : float in [0, 100]

    Returns
    -------
    p : ndarray of shape (R,), float64
        ``nan`` for a row without finite values.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"values must have shape (R, n), but got {a.shape}")
    finite = np.isfinite(a)
    if finite.all():
        return _partition_percentile(a, q)
    out = np.full(a.shape[0], np.nan)
    for r in range(a.shape[0]):  # rare: only rows with NaN/inf take this path
        row = a[r, finite[r]]
        if row.size:
            out[r] = _partition_percentile(row[None], q)[0]
    return out


def _partition_percentile(a: np.ndarray, q: float) -> np.ndarray:
    n = a.shape[1]
    if n == 0:
        return np.full(a.shape[0], np.nan)
    position = q / 100.0 * (n - 1)
    lo = math.floor(position)
    hi = min(lo + 1, n - 1)
    t = position - lo
    if n >= TAIL_MIN_VALUES and (n - lo) * TAIL_FRACTION <= n:
        below, above = _upper_ranks(a, lo)
        above = above if hi > lo else below
    else:
        # One kth: partitioning at two ranks costs ~8x more in numpy. The next rank up is
        # the smallest value above position lo.
        part = np.partition(a, lo, axis=1)
        below = part[:, lo]
        above = part[:, lo + 1 :].min(axis=1) if hi > lo else below
    # numpy's _lerp: exact at both ends of the interval.
    return np.where(t >= 0.5, above - (above - below) * (1 - t), below + (above - below) * t)


TAIL_MIN_VALUES = 1 << 12
"""Rows shorter than this are partitioned whole (the tail search would not pay)."""
TAIL_FRACTION = 8
"""The tail search serves ranks in a row's top ``1 / TAIL_FRACTION`` (``p99.5``: top 0.5%)."""
_TAIL_STEP = 16


def _upper_ranks(a: np.ndarray, lo: int) -> tuple[np.ndarray, np.ndarray]:
    """The values at ranks ``lo`` and ``lo + 1`` (0-based, ascending; the second is the
    first one's where ``lo`` is the last rank) of every row of ``a`` (R, n), exactly as a
    full :func:`numpy.partition` finds them, for ``lo`` in the rows' top few percent.

    A threshold per row from a strided subsample sits, with a wide margin, below rank
    ``lo``; only the values at or above it (about twice as many as the ranks wanted) are
    partitioned. Every value left out is below every value kept, so rank ``lo`` of the row
    is rank ``lo - left_out`` of the kept ones; where the subsample misleads (the
    threshold lands above rank ``lo``), that row is partitioned whole. At p99.5 this is
    5-10x faster than partitioning the row (``benchmarks/bench_ranges.py``).
    """
    rows, n = a.shape
    sub = a[:, ::_TAIL_STEP]
    wanted = -(-(n - lo) // _TAIL_STEP)  # the subsample's share of ranks lo..n-1
    keep = min(sub.shape[1], 2 * wanted + 16)
    thresholds = np.partition(sub, sub.shape[1] - keep, axis=1)[:, sub.shape[1] - keep]
    below = np.empty(rows, dtype=a.dtype)
    above = np.empty(rows, dtype=a.dtype)
    for r in range(rows):  # per row (channel), never per value
        row = a[r]
        kept = row[row >= thresholds[r]]
        k = lo - (n - kept.size)
        if k < 0:
            kept, k = row, lo
        part = np.partition(kept, k)
        below[r] = part[k]
        above[r] = part[k + 1 :].min() if k + 1 < part.size else part[k]
    return below, above


def channel_extents(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite minimum and maximum of every channel (0, 0 where there is no finite value).

    Parameters
    ----------
    x : ndarray of shape (..., C, H, W)

    Returns
    -------
    mins, maxs : ndarray of shape (C,), float64
    """
    a = _as_maps(x)
    axes = tuple(i for i in range(a.ndim) if i != a.ndim - 3)
    with np.errstate(invalid="ignore"):
        mins = np.min(a, axis=axes).astype(np.float64)
        maxs = np.max(a, axis=axes).astype(np.float64)
    bad = ~(np.isfinite(mins) & np.isfinite(maxs))
    for c in np.flatnonzero(bad):  # rare: channels with NaN or inf
        channel = np.take(a, c, axis=-3)
        finite = np.isfinite(channel)
        if finite.any():
            mins[c] = float(np.min(channel, where=finite, initial=np.inf))
            maxs[c] = float(np.max(channel, where=finite, initial=-np.inf))
        else:
            mins[c] = maxs[c] = 0.0
    return mins, maxs


def _magnitude(mins: np.ndarray, maxs: np.ndarray, signed: bool) -> np.ndarray:
    """What the ``max`` rule reaches: ``max|x|`` (signed) or ``max(x, 0)``."""
    return np.maximum(np.abs(mins), np.abs(maxs)) if signed else np.maximum(maxs, 0.0)


def _robust(sample: np.ndarray, q: float, signed: bool, fallback: np.ndarray) -> np.ndarray:
    """Percentile magnitudes of ``sample`` rows, falling back to ``fallback`` where <= 0."""
    values = np.abs(sample) if signed else sample
    m = percentile(values, q)
    m = np.where(np.isfinite(m) & (m > 0), m, fallback)
    return np.minimum(m, fallback)  # a sample never reaches beyond the data


def _range(m: float, signed: bool) -> tuple[float, float]:
    m = float(m)
    if not m > 0.0 or not math.isfinite(m):
        m = 1.0  # all-zero (or no finite value): unit range, renders as the colour of 0
    return (-m, m) if signed else (0.0, m)


def is_signed(x: np.ndarray) -> bool:
    """True if any finite value is negative (such maps get a diverging colormap)."""
    a = np.asarray(x)
    return bool(np.any(a < 0, where=np.isfinite(a)))


def value_range(
    x: np.ndarray, signed: bool | None = None, rule: RangeRule | str = MAX_RULE
) -> tuple[float, float]:
    """The display range of one array, pooled: ``(-m, m)`` if signed, else ``(0, m)``.

    ``signed=None`` decides with :func:`is_signed`; ``m`` follows ``rule``.
    """
    a = np.asarray(x, dtype=np.float64).reshape(1, 1, -1)
    if signed is None:
        signed = is_signed(a)
    return display_ranges([a], "per-stage", [signed], rule)[0][0].as_tuple()


# ---------------------------------------------------------------------------------------
# All stages at once


def display_ranges(
    stages: Sequence[np.ndarray],
    normalize: str | Sequence[str] = "per-stage",
    signed: bool | Sequence[bool] | None = None,
    rule: RangeRule | str = DEFAULT_RULE,
    stage_names: Sequence[str] | None = None,
    extents: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
) -> list[list[DisplayRange]]:
    """Display ranges for every channel of every stage.

    Parameters
    ----------
    stages : sequence of ndarray of shape (..., C, H, W)
        Feature maps per stage (leading axes, e.g. a batch, are pooled).
    normalize : {"per-channel", "per-stage", "global", "auto"} or sequence of those
        One mode for all stages, or one per stage. ``auto`` needs ``stage_names``.
    signed : bool, sequence of bool (one per stage) or None
        Whether each stage is shown as signed; ``None`` decides per stage with
        :func:`is_signed`.
    rule : RangeRule or str
        ``max`` or ``pNN`` (:func:`parse_range`).
    stage_names : sequence of str, optional
        ``conv`` / ``bn`` / ``act`` per stage, for ``auto``.
    extents : sequence of (mins, maxs) or None, optional
        Each stage's finite per-channel minimum and maximum (float64, shape (C,)) where
        already known (e.g. from the statistics), saving a pass over the data; ``None``
        for a stage: computed (:func:`channel_extents`).

    Returns
    -------
    ranges : list of list of DisplayRange
        ``ranges[s][c]`` for stage ``s``, channel ``c``; ``vmin < vmax`` always.

    Raises
    ------
    CbrError
        Unknown ``normalize`` or bad ``rule``.
    """
    rule = parse_range(rule)
    modes = resolve_normalize(normalize, len(stages), stage_names)
    if signed is None or isinstance(signed, bool):
        flags = [is_signed(s) if signed is None else signed for s in stages]
    else:
        flags = [bool(f) for f in signed]
        if len(flags) != len(stages):
            raise ValueError(f"got {len(flags)} signed flags for {len(stages)} stages")

    given = list(extents) if extents is not None else [None] * len(stages)
    if len(given) != len(stages):
        raise ValueError(f"got {len(given)} extents for {len(stages)} stages")
    extents = [channel_extents(s) if e is None else e for s, e in zip(stages, given, strict=True)]
    samples = [
        None if rule.is_max else strided_sample(s, _sample_limit(s.shape[-3], mode))
        for s, mode in zip(stages, modes, strict=True)
    ]
    magnitudes: list[np.ndarray] = []
    for (mins, maxs), sample, flag, mode in zip(extents, samples, flags, modes, strict=True):
        full = _magnitude(mins, maxs, flag)
        if mode == "per-channel":
            m = full if sample is None else _robust(sample, rule.percentile, flag, full)
        elif mode == "per-stage":
            top = np.max(full, initial=0.0)
            if sample is not None:
                top = _robust(sample.reshape(1, -1), rule.percentile, flag, np.array([top]))[0]
            m = np.full(len(full), top)
        else:
            m = full  # global: filled in below
        magnitudes.append(m)

    global_stages = [i for i, mode in enumerate(modes) if mode == "global"]
    if global_stages:
        top = max(float(np.max(_magnitude(*extents[i], True), initial=0.0)) for i in global_stages)
        if not rule.is_max:
            pooled = np.concatenate([samples[i].reshape(-1) for i in global_stages])  # type: ignore[union-attr]
            top = float(_robust(pooled[None], rule.percentile, True, np.array([top]))[0])
        for i in global_stages:
            magnitudes[i] = np.full(len(magnitudes[i]), top)

    return [
        [
            DisplayRange(*_range(m, flag), float(lo), float(hi))
            for m, lo, hi in zip(mags, mins, maxs, strict=True)
        ]
        for mags, flag, (mins, maxs) in zip(magnitudes, flags, extents, strict=True)
    ]


def _sample_limit(channels: int, mode: str) -> int:
    """Pixels per channel to sample: a pooled (shared) range needs SAMPLE_MAX in all."""
    if mode == "per-channel":
        return SAMPLE_MAX
    return max(SAMPLE_MAX // max(channels, 1), 4096)


def resolve_normalize(
    normalize: str | Sequence[str], count: int, names: Sequence[str] | None
) -> list[str]:
    """One of :data:`NORMALIZE_MODES` per stage: ``auto`` resolved from the stage ``names``.

    Raises
    ------
    CbrError
        An unknown mode.
    """
    given = [normalize] * count if isinstance(normalize, str) else list(normalize)
    if len(given) != count:
        raise ValueError(f"got {len(given)} normalize modes for {count} stages")
    if "auto" in given:
        if names is None or len(names) != count:
            raise ValueError("normalize='auto' needs one stage name per stage")
        auto = auto_normalize(names)
        given = [a if g == "auto" else g for g, a in zip(given, auto, strict=True)]
    for mode in given:
        if mode not in NORMALIZE_MODES:
            choices = [*NORMALIZE_MODES, "auto"]
            raise CbrError(f"normalize must be one of {choices}, but got normalize='{mode}'")
    return given


def map_ranges(
    stages: Sequence[np.ndarray],
    normalize: str | Sequence[str] = "per-stage",
    signed: bool | Sequence[bool] | None = None,
    rule: RangeRule | str = MAX_RULE,
    stage_names: Sequence[str] | None = None,
) -> list[list[tuple[float, float]]]:
    """:func:`display_ranges` as ``(vmin, vmax)`` pairs; the default rule is ``max``
    (the behaviour ``cbr apply`` has until ``--range`` is wired in)."""
    ranges = display_ranges(stages, normalize, signed, rule, stage_names)
    return [[r.as_tuple() for r in stage] for stage in ranges]
