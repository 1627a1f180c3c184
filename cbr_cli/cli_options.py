"""Typer option types shared by the commands that describe a layer (``apply``, ``shape``, ...).

Every layer flag defaults to ``None`` ("not given"); :mod:`cbr_cli.flags` applies the
defaults, so a flag given together with ``-c`` can be told apart from one left alone.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from cbr_cli.flags import LayerFlags

CONV = "Conv layer (one block; with -c they override a one-layer config)"
BN = "BatchNorm"
ACT = "Activation"

Config = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="Pipeline YAML (any number of layers)."),
]
OutChannels = Annotated[
    Optional[int],
    typer.Option(help="Output channels (random weights; default 8).", rich_help_panel=CONV),
]
Kernel = Annotated[
    Optional[list[str]],
    typer.Option(
        "--kernel",
        "-k",
        help="Built-in kernel or set (repeatable; see `cbr kernels`), or one .npy weight "
        "file of shape (out, in/groups, kH, kW). Default: the 'demo' set.",
        rich_help_panel=CONV,
    ),
]
KernelSize = Annotated[
    Optional[str],
    typer.Option(
        help="Kernel size for random weights: K or KHxKW (default 3).", rich_help_panel=CONV
    ),
]
Stride = Annotated[
    Optional[str], typer.Option(help="Stride: S or SHxSW (default 1).", rich_help_panel=CONV)
]
Padding = Annotated[
    Optional[str],
    typer.Option(
        help="Padding: P, PHxPW, valid, same or full (default 0). 'same' with stride > 1 "
        "follows TensorFlow (output = ceil(size/stride)).",
        rich_help_panel=CONV,
    ),
]
PaddingMode = Annotated[
    Optional[str],
    typer.Option(
        help="zeros, reflect, replicate or circular (default zeros).", rich_help_panel=CONV
    ),
]
Dilation = Annotated[
    Optional[str], typer.Option(help="Dilation: D or DHxDW (default 1).", rich_help_panel=CONV)
]
Groups = Annotated[
    Optional[int], typer.Option(help="Conv groups (default 1).", rich_help_panel=CONV)
]
Bias = Annotated[
    Optional[bool],
    typer.Option(
        "--bias/--no-bias",
        help="Conv bias (default: random for random weights, none for given kernels).",
        rich_help_panel=CONV,
    ),
]
Init = Annotated[
    Optional[str],
    typer.Option(
        help="Random init: kaiming_uniform (PyTorch's default), kaiming_normal, xavier_uniform.",
        rich_help_panel=CONV,
    ),
]
Seed = Annotated[
    Optional[int], typer.Option(help="Seed for random weights (default 0).", rich_help_panel=CONV)
]
BNMode = Annotated[
    Optional[str],
    typer.Option(
        "--bn",
        help="batch (batch statistics, PyTorch train mode), running (PyTorch eval mode with "
        "running stats 0/1 unless configured) or off (default batch).",
        rich_help_panel=BN,
    ),
]
Eps = Annotated[Optional[str], typer.Option(help="BN eps (default 1e-5).", rich_help_panel=BN)]
Momentum = Annotated[
    Optional[str], typer.Option(help="BN momentum (default 0.1).", rich_help_panel=BN)
]
Activation = Annotated[
    Optional[str],
    typer.Option(help="relu, leaky_relu or none (default relu).", rich_help_panel=ACT),
]
NegativeSlope = Annotated[
    Optional[str],
    typer.Option(help="LeakyReLU negative slope (default 0.01).", rich_help_panel=ACT),
]
Color = Annotated[
    Optional[str],
    typer.Option(help="Read images as gray or rgb (default: as stored)."),
]


def layer_flags(**values: object) -> "LayerFlags":
    """Collect the layer flag values of a command into :class:`LayerFlags`."""
    from cbr_cli.flags import LayerFlags  # not at import time: keeps `cbr --help` light

    return LayerFlags(**values)  # type: ignore[arg-type]
