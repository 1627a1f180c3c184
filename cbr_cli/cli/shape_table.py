"""Rich tables for the terminal; built here, printed by the CLI modules (``cli*.py``).

Only this module and the CLI know about rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from cbr_cli.cli.table_fit import natural_width

if TYPE_CHECKING:
    from cbr_cli.spec.layerstack import LayerRow, StackResult

# ------------------------------------------------------------------ cbr shape

_COLUMNS = (
    # (header, justify, importance: the least important are dropped first at narrow widths)
    ("Layer", "left", 99),
    ("In -> out\n(CxHxW)", "left", 98),
    ("Padding\nt/b/l/r", "left", 90),
    ("Kernel", "left", 95),
    ("Stride", "right", 94),
    ("Output size", "left", 10),
    ("Params", "right", 80),
    ("BN\nbuffers", "right", 20),
    ("MACs", "right", 70),
    ("RF / jump\n/ centre", "right", 40),
    ("Memory", "right", 60),
)
KERNEL = 3
STRIDE = 4
FORMULA = 5
"""Index of the "Output size" column, the filled-in formula (the widest, dropped first)."""
FORMULA_MIN = 30
"""Narrowest the formula column wraps to (its tokens are at most about 12 characters)."""
FOLD_STRIDE = -1
"""In ``dropped``: the Stride column was folded into the Kernel cell (``stride 2``)."""
LAYER_WIDTH = 16
"""The Layer column's warnings may wrap down to this width (names and stages never do)."""
LAYER_WIDTH_MAX = 30
"""...and up to this width they stay on one line (the longest short warning)."""


def shape_table(result: StackResult, width: int | None = None) -> Table:
    """One row per layer of a ``cbr shape`` result, totals at the bottom.

    Shapes are written ``CxHxW`` (the ``--input`` syntax); a per-axis value is written
    once when H and W agree and ``HxW`` otherwise.  A layer's BN, activation and
    warnings (``! ...``) are listed under its name.

    With ``width``, the table fits it: numbers are never cut or wrapped; the least
    important columns (the output-size formula first, then BN buffers, the receptive
    field, memory, MACs, params) are left out until it fits, and the caption names them
    (:func:`formula_lines` gives the formulas as lines to print under the table).
    """
    rows = [_shape_cells(row) for row in result.layers]
    total = _total_cells(result)
    shown = list(range(len(_COLUMNS)))
    if width is None:
        return _table(result, rows, total, shown, [])
    by_importance = sorted(shown, key=lambda i: _COLUMNS[i][2])
    dropped: list[int] = []
    # Measured with the formula wrapped to FORMULA_MIN columns: when the table is printed
    # it takes what is left (rich wraps it at spaces, so its numbers stay whole).
    while natural_width(_table(result, rows, total, shown, dropped, True)) > width:
        if len(shown) <= 2:
            break
        if dropped and FOLD_STRIDE not in dropped and _COLUMNS[by_importance[0]][2] > 30:
            dropped.append(FOLD_STRIDE)  # stride moves into the Kernel cell
            shown.remove(STRIDE)
            continue
        drop = next(i for i in by_importance if i in shown and i != STRIDE)
        by_importance.remove(drop)
        shown.remove(drop)
        dropped.append(drop)
    return _table(result, rows, total, shown, dropped)


def formula_lines(result: StackResult) -> list[str]:
    """The output-size formula of every layer, filled in: ``name: H, W: floor(...) = n``."""
    return [f"{row.name}  {line}" for row in result.layers for line in _formula(row).split("\n")]


def _table(
    result: StackResult,
    rows: list[list[str | Text]],
    total: list[str | Text],
    shown: list[int],
    dropped: list[int],
    measuring: bool = False,
) -> Table:
    caption = (
        "Params: conv weight + bias + BN affine (trainable); BN buffers: running "
        "mean/var. MACs: multiply-accumulates of the convolutions for one image (bias, "
        f"BN, activations not counted): {result.total_macs:,} in total; FLOPs = 2 x MACs "
        f"= {result.total_flops:,}. RF / jump / centre: receptive field in input pixels, "
        "input pixels between adjacent outputs, centre of the first output's field "
        "(input pixel i is centred at i). Memory: float32 bytes of each stage output "
        "(conv, bn, act) for one image."
    )
    gone = sorted(i for i in dropped if i >= 0)
    if gone:
        names = ", ".join(_COLUMNS[i][0].replace("\n", " ") for i in gone)
        how = " (--verbose prints the output-size formulas)" if FORMULA in dropped else ""
        caption += f" Not shown at this width: {names}{how}; --json has everything."
    table = Table(
        title=f"cbr shape: input {_shape(result.input_shape)}",
        caption=caption,
        caption_justify="left",
        show_lines=True,
    )
    for i in shown:
        header, justify, _ = _COLUMNS[i]
        if i == 0:  # warnings wrap at spaces; a name longer than the width still shows whole
            lines = [line for row in rows for line in _plain(row[0]).split("\n")]
            names = [len(line) for line in lines if not line.startswith("! ")]
            widest = max(LAYER_WIDTH if measuring else LAYER_WIDTH_MAX, *names)
            table.add_column(header, max_width=widest, overflow="fold")
        elif i == FORMULA:
            table.add_column(header, max_width=FORMULA_MIN if measuring else None)
        else:
            table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    fold = FOLD_STRIDE in dropped
    for row in rows:
        cells = list(row)
        if fold and cells[STRIDE] != "1":
            cells[KERNEL] = f"{cells[KERNEL]}\nstride {cells[STRIDE]}"
        table.add_row(*(cells[i] for i in shown))
    table.add_section()
    table.add_row(*(total[i] for i in shown))
    return table


def _plain(cell: str | Text) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _total_cells(result: StackResult) -> list[str | Text]:
    last = result.layers[-1] if result.layers else None
    return [
        Text("total", style="bold")
        + Text(f"\n! {len(result.warnings)} warning(s)" if result.warnings else "", "yellow"),
        f"{_shape(result.input_shape)}\n-> {_shape(result.output_shape)}",
        "",
        "",
        "",
        "",
        f"{result.total_params:,}",
        f"{result.total_buffers:,}",
        _count(result.total_macs),
        f"{_hw(last.field_h.size, last.field_w.size)} / {_hw(last.field_h.jump, last.field_w.jump)}"
        if last
        else "",
        _bytes(result.total_activation_bytes),
    ]


def _shape_cells(row: LayerRow) -> list[str | Text]:
    g = row.geometry
    stages = []
    if row.bn:
        stages.append(f"bn {row.bn}")
    if row.activation == "leaky_relu":
        stages.append(f"leaky_relu {row.negative_slope:g}")
    elif row.activation != "none":
        stages.append(row.activation)
    name = Text(row.name, style="bold")
    name.append("".join("\n" + stage for stage in stages), style="dim")
    for warning in row.warnings:
        name.append("\n! " + warning.short, style="yellow")
    kernel = _hw(g.h.kernel_size, g.w.kernel_size)
    if (g.h.dilation, g.w.dilation) != (1, 1):
        effective = _hw(g.h.effective_kernel, g.w.effective_kernel)
        kernel += f", d={_hw(g.h.dilation, g.w.dilation)}\n-> {effective}"
    if row.groups > 1:
        kernel += f"\ngroups {row.groups}"
    padding = "/".join(str(p) for p in g.padding)
    if row.padding_mode != "zeros":
        padding += f"\n{row.padding_mode}"
    field = (
        f"{_hw(row.field_h.size, row.field_w.size)} / {_hw(row.field_h.jump, row.field_w.jump)}"
        f"\n/ {_hw(_number(row.field_h.centre), _number(row.field_w.centre))}"
    )
    return [
        name,
        f"{_shape(row.input_shape)}\n-> {_shape(row.output_shape)}",
        padding,
        kernel,
        _hw(g.h.stride, g.w.stride),
        _formula(row),
        f"{row.params:,}",
        f"{row.bn_buffers:,}",
        _count(row.macs),
        field,
        _bytes(row.activation_bytes),
    ]


def _formula(row: LayerRow) -> str:
    """The output-size formula with the numbers, one line per axis (one if they agree)."""
    g = row.geometry
    if g.h == g.w:
        return f"H, W: {g.h.formula()}"
    return f"H: {g.h.formula()}\nW: {g.w.formula()}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _hw(h: object, w: object) -> str:
    return str(h) if h == w else f"{h}x{w}"


def _number(value: float) -> str:
    return f"{value:g}"


def _count(count: int) -> str:
    """``120130752`` → ``120.1 M``: three significant figures are enough to compare."""
    if count < 10_000:
        return f"{count:,}"
    value = float(count)
    for unit in ("k", "M", "G", "T"):
        value /= 1000
        if value < 999.95 or unit == "T":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _bytes(count: int) -> str:
    """``1234567`` → ``1.2 MiB`` (binary units); below 1 KiB in bytes."""
    size = float(count)
    unit = "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
