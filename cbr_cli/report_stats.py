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


def stats_tables(image: dict[str, Any]) -> list[Table]:
    """One image's statistics: a table per layer and stage, a row per channel.

    ``image`` is :meth:`cbr_cli.apply.ImageRecord.to_dict` output. Columns fit 80
    characters: BN stages add the mean/var used to normalise; ``neg%`` is the fraction
    below zero, ``zero%`` the fraction exactly zero; ReLU outputs that are zero
    everywhere are flagged ``dead``.
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
        columns = ["ch", "min", "max", "mean", "std", "zero%", "neg%"]
        columns += ["bn mean", "bn var"] if is_bn else ["note"]
        for name in columns:
            table.add_column(name, justify="left" if name in ("ch", "note") else "right")
        for ch in stage["channels"]:
            row: list[str | Text] = [
                ch["label"],
                _num(ch["min"]),
                _num(ch["max"]),
                _num(ch["mean"]),
                _num(ch["std"]),
                _pct(ch["frac_zero"]),
                _pct(ch["frac_negative"]),
            ]
            if is_bn:
                row += [_num(ch["bn_mean"]), _num(ch["bn_var"])]
            elif stage["stage"] == "act" and ch["dead"]:
                row.append(Text("dead", style="bold red"))
            elif ch["min"] == ch["max"]:
                row.append(Text("constant", style="yellow"))
            else:
                row.append("")
            table.add_row(*row)
        tables.append(table)
    return tables


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
