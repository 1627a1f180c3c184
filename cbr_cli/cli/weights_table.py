"""Rich tables of ``cbr weights``: a weight file's tensors and the blocks found in it.

Built here, printed by :mod:`cbr_cli.cli.weights`.  Names fold onto further lines when
the terminal is narrow; numbers never do (``no_wrap``), so an 80-column terminal shows
every shape and count whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from cbr_cli.io.weights import Block, DetectedBlock, TensorFile


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _hw(pair: tuple[int, int] | str) -> str:
    if isinstance(pair, str):
        return pair
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def tensors_table(read: TensorFile) -> Table:
    """Every tensor: name, shape, dtype, parameters; the total in the caption."""
    total = sum(info.numel for info in read.info.values())
    table = Table(
        title=f"{read.path}: {read.format}, {len(read.info)} tensors",
        caption=f"{total:,} values in all",
        caption_justify="left",
    )
    table.add_column("Tensor", overflow="fold", ratio=1)
    table.add_column("Shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("Parameters", justify="right", no_wrap=True)
    for info in read.info.values():
        table.add_row(info.name, _shape(info.shape), info.dtype, f"{info.numel:,}")
    return table


def detected_table(blocks: list[DetectedBlock]) -> Table:
    """A state_dict's Conv -> BN blocks, found by name and shape."""
    table = Table(title="Conv -> BN blocks (by name and shape; --layers CONV+BN)")
    table.add_column("Conv", overflow="fold", ratio=1)
    table.add_column("BN", overflow="fold", ratio=1)
    table.add_column("Out", justify="right", no_wrap=True)
    table.add_column("In/g", justify="right", no_wrap=True)
    table.add_column("Kernel", no_wrap=True)
    table.add_column("Bias", no_wrap=True)
    for block in blocks:
        table.add_row(
            block.conv,
            block.bn or "-",
            str(block.out_channels),
            str(block.in_channels_per_group),
            _hw(block.kernel_size),
            "yes" if block.has_bias else "no",
        )
    return table


def chain_table(blocks: list[Block]) -> Table:
    """A model's leading chain, one row per cbr layer, geometry from the graph."""
    table = Table(title="Leading chain (cbr apply --model runs these)")
    table.add_column("Conv", overflow="fold", ratio=1)
    table.add_column("In->out", no_wrap=True)
    table.add_column("Kernel", no_wrap=True)
    table.add_column("Stride", no_wrap=True)
    table.add_column("Pad", no_wrap=True)
    table.add_column("Groups", justify="right", no_wrap=True)
    table.add_column("BN / act", overflow="fold", ratio=1)
    for block in blocks:
        c = block.conv
        after = []
        if block.bn is not None:
            after.append(f"BN eps {block.bn.eps:g}")
        if block.act is not None:
            act = block.act.activation
            if act == "leaky_relu":
                act += f" {block.act.negative_slope:g}"
            after.append(act)
        table.add_row(
            c.name,
            f"{c.in_channels}->{c.out_channels}",
            _hw(c.kernel_size),
            _hw(c.stride),
            _hw(c.padding),
            str(c.groups),
            ", ".join(after) or "-",
        )
    return table
