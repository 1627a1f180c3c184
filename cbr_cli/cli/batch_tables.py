"""Rich tables for the end of ``cbr batch`` and ``cbr calibrate``. Builds, never prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text

FAILURES_SHOWN = 20


def summary_table(counts: Mapping[str, int], title: str = "cbr batch") -> Table:
    """One row per outcome (processed, skipped, failed, not run) with its image count."""
    table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
    table.add_column("images")
    table.add_column("count", justify="right")
    styles = {"failed": "bold red", "not run": "yellow", "processed": "green"}
    for kind, count in counts.items():
        style = styles.get(kind, "") if count else ""
        table.add_row(Text(kind, style=style), Text(str(count), style=style))
    table.add_row(Text("total", style="bold"), Text(str(sum(counts.values())), style="bold"))
    return table


def failures_table(
    failures: Sequence[tuple[str, str]], report: str | None = None, limit: int = FAILURES_SHOWN
) -> Table:
    """The failed images with their one-line reasons (the first ``limit`` of them)."""
    more = len(failures) - limit
    caption = None
    if more > 0:
        caption = f"... and {more} more" + (f" (all in {report})" if report else "")
    elif report:
        caption = f"also in {report}"
    table = Table(
        title="failed", title_justify="left", header_style="bold", caption=caption, pad_edge=False
    )
    table.add_column("image", style="bold", overflow="fold")
    table.add_column("reason", overflow="fold")
    for name, reason in failures[:limit]:
        table.add_row(name, reason)
    return table


def bn_stats_table(running: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Table:
    """One row per calibrated BN layer: channels and the range of its running statistics."""
    table = Table(title="calibrated BatchNorm", title_justify="left", header_style="bold")
    for name in ("layer", "channels", "running_mean", "running_var"):
        table.add_column(name, justify="left" if name == "layer" else "right")
    for layer, (mean, var) in running.items():
        table.add_row(
            layer,
            str(len(mean)),
            f"{min(mean):.4g} .. {max(mean):.4g}",
            f"{min(var):.4g} .. {max(var):.4g}",
        )
    return table
