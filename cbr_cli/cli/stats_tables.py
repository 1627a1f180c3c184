"""Rich tables for ``cbr apply``'s statistics and ``cbr kernels``' listing. Builds, never prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if value != value:  # NaN
        return "nan"
    return f"{value:.3g}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


MAX_CHANNEL_ROWS = 32
"""Channels listed per stage in the terminal table; ``--json`` always has all of them."""


def stats_tables(image: dict[str, Any], max_rows: int = MAX_CHANNEL_ROWS) -> list[Table]:
    """One image's statistics: a table per layer and stage, a row per channel.

    ``image`` is :meth:`cbr_cli.run.apply.ImageRecord.to_dict` output. Numbers are never cut
    (they need 80 columns; BN stages add the mean/var used to normalise). ``neg%`` is
    the fraction below zero, ``zero%`` the fraction exactly zero; ReLU outputs that are
    zero everywhere are flagged ``dead``. A stage with more than ``max_rows`` channels
    lists the first ``max_rows`` and summarises the rest in a last row.
    """
    tables = []
    for stage in image["stages"]:
        shape = "x".join(str(n) for n in stage["shape"])
        table = Table(
            title=f"{image['name']} · {stage['layer']} · {stage['stage']} · {shape}",
            title_justify="left",
            header_style="bold",
            pad_edge=False,
        )
        is_bn = stage["stage"] == "bn"
        table.add_column("ch", max_width=16, overflow="ellipsis", no_wrap=True)
        for name in ("min", "max", "mean", "std", "zero%", "neg%"):
            table.add_column(name, justify="right", no_wrap=True, min_width=6)
        for name in ("bn mean", "bn var") if is_bn else ("note",):
            table.add_column(name, justify="left" if name == "note" else "right", no_wrap=True)
        channels = stage["channels"]
        for ch in channels[:max_rows]:
            table.add_row(*_channel_row(stage["stage"], ch))
        if len(channels) > max_rows:
            rest = channels[max_rows:]
            dead = sum(bool(ch["dead"]) for ch in rest) if stage["stage"] == "act" else 0
            more = f"{len(rest)} more channels" + (f", {dead} of them dead" if dead else "")
            table.caption = f"… {more} (all of them in --json)"
            table.caption_justify = "left"
        tables.append(table)
    return tables


def _channel_row(stage: str, ch: dict[str, Any]) -> list[str | Text]:
    row: list[str | Text] = [
        ch["label"],
        _num(ch["min"]),
        _num(ch["max"]),
        _num(ch["mean"]),
        _num(ch["std"]),
        _pct(ch["frac_zero"]),
        _pct(ch["frac_negative"]),
    ]
    if stage == "bn":
        row += [_num(ch["bn_mean"]), _num(ch["bn_var"])]
    elif stage == "act" and ch["dead"]:
        row.append(Text("dead", style="bold red"))
    elif ch["min"] == ch["max"]:
        row.append(Text("constant", style="yellow"))
    else:
        row.append("")
    return row


def kernels_table(rows: Sequence[tuple[str, str, str, str]]) -> Table:
    """``cbr kernels``: name, size, description and a small preview per kernel."""
    table = Table(header_style="bold", show_lines=True)
    table.add_column("name", style="bold cyan", no_wrap=True, min_width=10)
    table.add_column("size", no_wrap=True, min_width=5)
    table.add_column("description", min_width=20, ratio=1)
    table.add_column("preview", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table
