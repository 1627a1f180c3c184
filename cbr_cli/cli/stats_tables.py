"""Rich tables for ``cbr apply``'s statistics and ``cbr kernels``' listing. Builds, never prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from cbr_cli.cli.table_fit import fit_columns


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

_CHANNEL_COLUMNS = ("ch", "min", "max", "mean", "std", "zero%", "neg%")
# Left out first at narrow widths: the lowest number. After an activation the fraction
# of zeros (sparsity) matters more than the fraction below zero, elsewhere the reverse.
_IMPORTANCE = {"ch": 99, "min": 90, "max": 90, "mean": 70, "std": 70, "note": 95}
_IMPORTANCE.update({"bn mean": 60, "bn var": 60})


def summary_table(image: dict[str, Any], width: int | None = None) -> Table:
    """One image's statistics, a row per layer and stage: what ``cbr apply`` prints.

    ``image`` is :meth:`cbr_cli.run.apply.ImageRecord.to_dict` output. Columns: channels,
    map size, dead channels (zero everywhere), the fraction of zeros over the whole stage
    (sparsity), below zero, and the stage's range; ``--verbose`` prints a table per stage
    with a row per channel (:func:`stats_tables`), ``--json`` has everything.
    """
    headers = ("layer", "stage", "ch", "HxW", "dead", "zero%", "neg%", "min", "max")
    rows = []
    for stage in image["stages"]:
        channels = stage["channels"]
        dead = sum(bool(ch["dead"]) for ch in channels)
        count = max(len(channels), 1)
        rows.append(
            [
                stage["layer"],
                stage["stage"],
                str(stage["shape"][0]),
                f"{stage['shape'][1]}x{stage['shape'][2]}",
                Text(str(dead), style="bold red") if dead else "0",
                _pct(sum(ch["frac_zero"] for ch in channels) / count),
                _pct(sum(ch["frac_negative"] for ch in channels) / count),
                _num(_extreme(min, (ch["min"] for ch in channels))),
                _num(_extreme(max, (ch["max"] for ch in channels))),
            ]
        )

    def build(shown: list[int]) -> Table:
        table = Table(
            title=f"{image['name']} · statistics per stage",
            title_justify="left",
            header_style="bold",
            pad_edge=False,
        )
        for i in shown:
            left = i < 2
            table.add_column(
                headers[i],
                justify="left" if left else "right",
                no_wrap=not left,
                overflow="fold",
            )
        for row in rows:
            table.add_row(*(row[i] for i in shown))
        return table

    importance = (99, 98, 90, 70, 95, 85, 60, 80, 80)
    table, dropped = fit_columns(build, importance, width, keep=2)
    table.caption = _caption(
        "dead: channels zero everywhere; zero%, neg%: of all values of the stage. "
        "--verbose: a table per stage, a row per channel",
        [headers[i] for i in dropped],
    )
    table.caption_justify = "left"
    return table


def _extreme(pick: Any, values: Any) -> float | None:
    finite = [v for v in values if v is not None and v == v]
    return pick(finite) if finite else None


def _caption(text: str, dropped: Sequence[str]) -> str:
    if dropped:
        text += f"; not shown at this width: {', '.join(dropped)} (--json has them)"
    return text


def stats_tables(
    image: dict[str, Any], max_rows: int = MAX_CHANNEL_ROWS, width: int | None = None
) -> list[Table]:
    """One image's statistics: a table per layer and stage, a row per channel.

    ``image`` is :meth:`cbr_cli.run.apply.ImageRecord.to_dict` output. Numbers are never cut:
    with ``width``, columns are left out, least important first (``neg%`` after an
    activation, ``zero%`` elsewhere, then the BN statistics, mean and std), and the
    caption names them. BN stages add the mean/var used to normalise. ``neg%`` is
    the fraction below zero, ``zero%`` the fraction exactly zero; ReLU outputs that are
    zero everywhere are flagged ``dead``. A stage with more than ``max_rows`` channels
    lists the first ``max_rows`` and summarises the rest in the caption.
    """
    tables = []
    for stage in image["stages"]:
        shape = "x".join(str(n) for n in stage["shape"])
        is_bn = stage["stage"] == "bn"
        headers = [*_CHANNEL_COLUMNS, *(("bn mean", "bn var") if is_bn else ("note",))]
        sparse_first = stage["stage"] == "act"
        importance = [
            _IMPORTANCE.get(name, (50 if sparse_first else 40) if name == "zero%" else 45)
            for name in headers
        ]
        channels = stage["channels"]
        rows = [_channel_row(stage["stage"], ch) for ch in channels[:max_rows]]
        title = f"{image['name']} · {stage['layer']} · {stage['stage']} · {shape}"

        def build(
            shown: list[int], headers: list[str] = headers, rows: Any = rows, title: str = title
        ) -> Table:
            table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
            for i in shown:
                if i == 0:  # labels fold (never "…"): an inline kernel's label has digits
                    table.add_column(headers[i], max_width=24, overflow="fold")
                else:
                    justify = "left" if headers[i] == "note" else "right"
                    table.add_column(
                        headers[i],
                        justify=justify,  # type: ignore[arg-type]
                        no_wrap=True,
                        min_width=6 if headers[i] != "note" else None,
                    )
            for row in rows:
                table.add_row(*(row[i] for i in shown))
            return table

        table, dropped = fit_columns(build, importance, width, keep=3)
        notes = []
        if len(channels) > max_rows:
            rest = channels[max_rows:]
            dead = sum(bool(ch["dead"]) for ch in rest) if stage["stage"] == "act" else 0
            more = f"{len(rest)} more channels" + (f", {dead} of them dead" if dead else "")
            notes.append(f"… {more} (all of them in --json)")
        if dropped:
            notes.append(_caption("", [headers[i] for i in dropped]).lstrip("; "))
        if notes:
            table.caption = "; ".join(notes)
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
