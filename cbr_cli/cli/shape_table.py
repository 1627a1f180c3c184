"""Rich tables for the terminal; built here, printed by the CLI modules (``cli*.py``).

Only this module and the CLI know about rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from cbr_cli.spec.layerstack import LayerRow, StackResult

# ------------------------------------------------------------------ cbr shape


def shape_table(result: StackResult) -> Table:
    """One row per layer of a ``cbr shape`` result, totals at the bottom.

    Shapes are written ``CxHxW`` (the ``--input`` syntax); a per-axis value is written
    once when H and W agree and ``HxW`` otherwise.  A layer's BN, activation and
    warnings (``! ...``) are listed under its name.
    """
    table = Table(
        title=f"cbr shape: input {_shape(result.input_shape)}",
        caption=(
            "Params: conv weight + bias + BN affine (trainable); BN buffers: running "
            "mean/var. MACs: multiply-accumulates of the convolutions for one image (bias, "
            f"BN, activations not counted): {result.total_macs:,} in total; FLOPs = 2 x MACs "
            f"= {result.total_flops:,}. RF / jump / centre: receptive field in input pixels, "
            "input pixels between adjacent outputs, centre of the first output's field "
            "(input pixel i is centred at i). Memory: float32 bytes of each stage output "
            "(conv, bn, act) for one image."
        ),
        caption_justify="left",
        show_lines=True,
    )
    table.add_column("Layer")
    table.add_column("In -> out\n(CxHxW)", overflow="fold")
    table.add_column("Padding\nt/b/l/r")
    table.add_column("Kernel")
    table.add_column("Stride", justify="right")
    table.add_column("Output size")
    for header in ("Params", "BN\nbuffers", "MACs", "RF / jump\n/ centre", "Memory"):
        table.add_column(header, justify="right")
    for row in result.layers:
        table.add_row(*_shape_cells(row))
    last = result.layers[-1] if result.layers else None
    table.add_section()
    table.add_row(
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
    )
    return table


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
        f" / {_hw(_number(row.field_h.centre), _number(row.field_w.centre))}"
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
