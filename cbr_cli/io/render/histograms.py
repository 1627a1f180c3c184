"""Per-layer distributions: conv -> BN -> activation, one histogram panel per stage.

Each panel overlays one step histogram per channel (the fraction of its pixels per bin,
log scale, so both the bulk and the tails show) on a shared x range: the 0.1st to 99.9th
percentile of the stage, widened to include 0; values beyond it are counted in the end
bins. What each stage does is written on its panel: BN's centring and scaling (the
largest channel mean, the range of channel stds), the activation's cut at 0 (its input's
pooled histogram in grey behind it, the region ReLU sets to 0 shaded, the fraction of
pixels that are 0, the dead channels).

Drawn with matplotlib (Agg backend, object API: no pyplot state, no display needed),
imported only here, when a figure is drawn. Histograms use the bounded strided sample of
:func:`~cbr_cli.io.render.ranges.strided_sample`; the zeroed fraction and dead channels
are counted on the full maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cbr_cli.io.render.ranges import percentile, strided_sample

if TYPE_CHECKING:
    from cbr_cli.core.stats import ChannelStats

__all__ = ["STAGE_TITLES", "layer_histograms", "warm_up"]

STAGE_TITLES = {"conv": "conv output", "bn": "after BatchNorm", "act": "after activation"}
_LEGEND_MAX = 10


def _edges(samples: np.ndarray, bins: int) -> np.ndarray:
    pooled = samples.reshape(1, -1)
    lo, hi = percentile(pooled, 0.1)[0], percentile(pooled, 99.9)[0]
    lo, hi = (min(lo, 0.0), max(hi, 0.0)) if np.isfinite(lo) and np.isfinite(hi) else (-1, 1)
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    return np.linspace(lo, hi, bins + 1)


def _fractions(row: np.ndarray, edges: np.ndarray) -> np.ndarray:
    finite = row[np.isfinite(row)]
    clipped = np.clip(finite, edges[0], edges[-1])
    counts, _ = np.histogram(clipped, edges)
    return counts / max(finite.size, 1)


def warm_up() -> None:
    """Import what :func:`layer_histograms` draws with (about 0.3 s, once per process)."""
    import matplotlib.backends.backend_agg
    import matplotlib.figure
    import matplotlib.ticker  # noqa: F401


def layer_histograms(
    stages: Mapping[str, np.ndarray],
    labels: Sequence[str] | None = None,
    *,
    layer: str = "",
    activation: str | None = "relu",
    bins: int = 60,
    width: int = 1100,
    height: int = 340,
    summaries: Mapping[str, Sequence[ChannelStats]] | None = None,
) -> np.ndarray:
    """One figure: a histogram panel per stage of one layer, in pipeline order.

    Parameters
    ----------
    stages : mapping of str to ndarray of shape (C, H, W)
        ``conv``, ``bn`` (if the layer has BN) and ``act`` (if it has an activation).
    labels : sequence of str, optional
        Channel names (legend, dead channels); default ``c0``, ``c1``, ...
    layer : str
        For the figure title.
    activation : str or None
        The layer's activation (``relu``, ``leaky_relu``), for the last panel's note.
    bins : int
    width, height : int
        Figure size in pixels.
    summaries : mapping of str to sequence of ChannelStats, optional
        Each stage's statistics over its full maps: the notes (BN's centring, the zeroed
        fraction, dead channels) come from them instead of ``stages``, which may then be
        samples (e.g. ``(C, 1, n)`` strided samples).

    Returns
    -------
    image : ndarray of shape (height, width, 3), uint8
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullLocator

    if not stages:
        raise ValueError("no stages to draw")
    channels = next(iter(stages.values())).shape[0]
    if labels is None:
        labels = [f"c{c}" for c in range(channels)]
    dpi = 100
    # A fixed layout: "constrained" redraws the ticks several times (3x the cost).
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    legend = channels <= _LEGEND_MAX
    right = 0.87 if legend else 0.99  # room for the legend beside the last panel
    fig.subplots_adjust(left=0.065, right=right, bottom=0.15, top=0.83, wspace=0.18)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(stages), squeeze=False, sharey=True)[0]
    colours = [f"C{c % 10}" for c in range(channels)]
    names = list(stages)
    for k, (ax, (stage, data)) in enumerate(zip(axes, stages.items(), strict=True)):
        samples = strided_sample(data)
        before = strided_sample(stages[names[k - 1]]) if stage == "act" and k > 0 else None
        edges = _edges(samples if before is None else np.concatenate([samples, before], 1), bins)
        centres = (edges[:-1] + edges[1:]) / 2
        if before is not None:  # the activation's cut: what came in, and what is set to 0
            ax.fill_between(
                centres,
                _fractions(before.reshape(-1), edges),
                step="mid",
                color="0.85",
                label=f"input ({names[k - 1]})",
            )
            if activation == "relu":
                ax.axvspan(edges[0], 0.0, color="tab:red", alpha=0.07, lw=0)
        for c in range(channels):
            fractions = _fractions(samples[c], edges)
            fractions = np.where(fractions > 0, fractions, np.nan)  # log scale: gaps, not -inf
            ax.step(centres, fractions, where="mid", color=colours[c], lw=1.1, label=labels[c])
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks: most of the drawing time
        ax.axvline(0.0, color="0.35", lw=0.8, ls="--")
        ax.set_title(STAGE_TITLES.get(stage, stage), fontsize=10)
        ax.set_xlabel("value")
        ax.grid(True, which="major", alpha=0.25)
        ax.text(
            0.98,
            0.97,
            _note(stage, data, labels, activation, (summaries or {}).get(stage)),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9},
        )
    axes[0].set_ylabel("fraction of pixels per bin")
    if legend:
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    title = f"{layer}: distributions per channel" if layer else "distributions per channel"
    fig.suptitle(f"{title} (tails beyond the 0.1/99.9th percentiles in the end bins)", fontsize=10)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def _note(
    stage: str,
    data: np.ndarray,
    labels: Sequence[str],
    activation: str | None,
    summary: Sequence[ChannelStats] | None = None,
) -> str:
    if summary is not None:
        means = np.array([s.mean for s in summary])
        stds = np.array([s.std for s in summary])
        zeroed = float(np.mean([s.frac_zero for s in summary]))
        negative = float(np.mean([s.frac_negative for s in summary]))
        dead = [labels[c] for c, s in enumerate(summary) if s.dead]
    else:
        flat = data.reshape(data.shape[0], -1)
        means = flat.mean(axis=1, dtype=np.float64)
        stds = flat.std(axis=1, dtype=np.float64)
        zeroed = np.count_nonzero(flat == 0) / max(flat.size, 1)
        negative = np.count_nonzero(flat < 0) / max(flat.size, 1)
        dead = [labels[c] for c in range(len(flat)) if not np.any(flat[c])]
    channels = len(means)
    if stage == "bn":
        return (
            f"centred: |channel mean| <= {np.abs(means).max():.1g}\n"
            f"scaled: channel stds {stds.min():.3g}..{stds.max():.3g}"
        )
    if stage == "act":
        lines = [f"{activation or 'activation'}: {zeroed:.1%} of pixels are 0"]
        if activation == "relu":
            lines.append("(shaded: x < 0, set to 0)")
        if activation == "leaky_relu":
            lines.append(f"{negative:.1%} negative (scaled by the slope)")
        shown = ", ".join(dead[:4]) + (", …" if len(dead) > 4 else "")
        lines.append(f"dead channels: {len(dead)}/{channels}" + (f" ({shown})" if dead else ""))
        return "\n".join(lines)
    return f"channel stds {stds.min():.2g}..{stds.max():.2g}"
