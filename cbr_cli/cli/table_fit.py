"""Fitting rich tables to a terminal width: columns left out, never numbers cut.

Rich shrinks a table that is too wide by wrapping or cutting its cells (``2,4…``); cbr's
tables instead leave out their least important columns until the rest fits at its
natural width, and say which (the JSON output keeps everything).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import StringIO

from rich.console import Console
from rich.table import Table


def natural_width(table: Table) -> int:
    """Columns ``table`` takes when nothing in it is wrapped or cut."""
    console = Console(width=100_000, file=StringIO(), emoji=False)
    return console.measure(table).maximum


def fit_columns(
    build: Callable[[list[int]], Table],
    importance: Sequence[int],
    width: int | None,
    keep: int = 1,
) -> tuple[Table, list[int]]:
    """The table ``build(shown)`` with as many columns as fit in ``width``.

    ``importance[i]`` ranks column ``i``; the lowest goes first, then the next, keeping
    at least ``keep`` columns.  Returns the table and the indices left out, in the order
    they were dropped.  ``width=None`` keeps every column.
    """
    shown = list(range(len(importance)))
    dropped: list[int] = []
    table = build(shown)
    if width is None:
        return table, dropped
    order = sorted(shown, key=lambda i: importance[i])
    while natural_width(table) > width and len(shown) > keep:
        drop = order.pop(0)
        shown.remove(drop)
        dropped.append(drop)
        table = build(shown)
    return table, dropped
