"""Typer option types shared by the commands that describe a layer (``apply``, ``shape``, ...).

Every layer flag defaults to ``None`` ("not given"); :mod:`cbr_cli.spec.flags` applies the
defaults, so a flag given together with ``-c`` can be told apart from one left alone.
"""

import functools
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer

from cbr_cli.errors import CbrError

if TYPE_CHECKING:
    from cbr_cli.run.records import ApplyOptions
    from cbr_cli.spec.flags import LayerFlags

T = TypeVar("T")

# The choices, as the help shows them. Written out here: importing them from the
# library would import numpy (the colormaps) at `cbr --help`; tests/cli compare them.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
INITS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform")
BN_CHOICES = ("batch", "running", "off")
ACTIVATIONS = ("relu", "leaky_relu", "none")
COLORS = ("gray", "rgb")
COLORMAP_CHOICES = ("rdbu", "viridis", "magma", "gray")
NORMALIZE_CHOICES = ("auto", "per-channel", "per-stage", "global")


def choices_metavar(choices: tuple[str, ...]) -> str:
    """``[a|b|c]``: how the help shows an option that takes one of ``choices``."""
    return "[" + "|".join(choices) + "]"


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
        metavar="KERNEL",
        help="Built-in kernel or set (repeatable; see `cbr kernels`); an inline kernel as "
        "ImageMagick writes it, WxH: then the values row by row ('3x3:-1,0,1,-2,0,2,-1,0,1'; "
        "width first, unlike --kernel-size), or just an odd-square list of values; or one "
        ".npy weight file of shape (out, in/groups, kH, kW). Default: the 'demo' set.",
        rich_help_panel=CONV,
    ),
]
Flip = Annotated[
    Optional[bool],
    typer.Option(
        "--flip/--no-flip",
        help="Flip every kernel 180° first: a true convolution, as SciPy's convolve and "
        "ImageMagick's Convolve. Default off: PyTorch's conv2d is a cross-correlation "
        "(the kernel as given, not flipped). Recorded in the manifest.",
        rich_help_panel=CONV,
    ),
]
KernelSize = Annotated[
    Optional[str],
    typer.Option(
        metavar="K|KHxKW",
        help="Kernel size for random weights: K or KHxKW (default 3).",
        rich_help_panel=CONV,
    ),
]
Stride = Annotated[
    Optional[str],
    typer.Option(metavar="S|SHxSW", help="Stride: S or SHxSW (default 1).", rich_help_panel=CONV),
]
Padding = Annotated[
    Optional[str],
    typer.Option(
        metavar="[P|PHxPW|valid|same|full]",
        help="Padding: P, PHxPW, valid, same or full (default 0). 'same' with stride > 1 "
        "follows TensorFlow (output = ceil(size/stride)).",
        rich_help_panel=CONV,
    ),
]
PaddingMode = Annotated[
    Optional[str],
    typer.Option(
        metavar=choices_metavar(PADDING_MODES),
        help="How the padding is filled, as torch.nn.Conv2d (default zeros).",
        rich_help_panel=CONV,
    ),
]
Dilation = Annotated[
    Optional[str],
    typer.Option(metavar="D|DHxDW", help="Dilation: D or DHxDW (default 1).", rich_help_panel=CONV),
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
        metavar=choices_metavar(INITS),
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
        metavar=choices_metavar(BN_CHOICES),
        help="batch (batch statistics, PyTorch train mode), running (PyTorch eval mode with "
        "running stats 0/1 unless configured) or off (default batch).",
        rich_help_panel=BN,
    ),
]
Eps = Annotated[
    Optional[str], typer.Option(metavar="FLOAT", help="BN eps (default 1e-5).", rich_help_panel=BN)
]
Momentum = Annotated[
    Optional[str],
    typer.Option(metavar="FLOAT", help="BN momentum (default 0.1).", rich_help_panel=BN),
]
Activation = Annotated[
    Optional[str],
    typer.Option(
        metavar=choices_metavar(ACTIVATIONS),
        help="The activation after BN (default relu).",
        rich_help_panel=ACT,
    ),
]
NegativeSlope = Annotated[
    Optional[str],
    typer.Option(
        metavar="FLOAT", help="LeakyReLU negative slope (default 0.01).", rich_help_panel=ACT
    ),
]
Color = Annotated[
    Optional[str],
    typer.Option(
        metavar=choices_metavar(COLORS), help="Read images as gray or rgb (default: as stored)."
    ),
]
Preset = Annotated[
    Optional[str],
    typer.Option(
        metavar=choices_metavar(("imagenet", "imagenet-eval", "minus1to1")),
        help="Input preprocessing: imagenet (RGB, torchvision's mean/std), imagenet-eval "
        "(+ Resize(256), CenterCrop(224)) or minus1to1 (x*2-1). Sets input.preset.",
    ),
]
WEIGHTS = "Weights of a real model (see `cbr weights FILE`)"
WeightsFile = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        metavar="FILE",
        help="State_dict (.safetensors, .npz, .pt/.pth/.bin) or model file the layers' "
        "tensors come from; with -c it replaces the config's weights:.",
        rich_help_panel=WEIGHTS,
    ),
]
Layers = Annotated[
    Optional[str],
    typer.Option(
        "--layers",
        metavar="CONV+BN,...",
        help="Blocks of --weights to run, e.g. conv1+bn1,layer1.0.conv1+layer1.0.bn1 (conv "
        "tensors from the name before '+', BN's after it); the layer flags apply to every "
        "block.",
        rich_help_panel=WEIGHTS,
    ),
]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        metavar="FILE",
        help="ONNX (.onnx) or Keras (.keras/.h5) model: run its leading Conv -> BN -> "
        "activation chain with the graph's geometry (instead of -c and layer flags).",
        rich_help_panel=WEIGHTS,
    ),
]
Until = Annotated[
    Optional[str],
    typer.Option(
        "--until",
        metavar="NODE",
        help="With --model: stop the chain after this node (ONNX node/output name, Keras "
        "layer name).",
        rich_help_panel=WEIGHTS,
    ),
]


LAYER_FLAGS = {
    "out_channels": OutChannels,
    "kernel": Kernel,
    "kernel_size": KernelSize,
    "stride": Stride,
    "padding": Padding,
    "padding_mode": PaddingMode,
    "dilation": Dilation,
    "groups": Groups,
    "bias": Bias,
    "flip": Flip,
    "init": Init,
    "seed": Seed,
    "bn": BNMode,
    "eps": Eps,
    "momentum": Momentum,
    "activation": Activation,
    "negative_slope": NegativeSlope,
    "color": Color,
    "preset": Preset,
    "weights": WeightsFile,
    "layers": Layers,
    "model": Model,
    "until": Until,
}
"""The flags that describe one layer, by :class:`~cbr_cli.spec.flags.LayerFlags` field."""


def layer_flags(**values: object) -> "LayerFlags":
    """Collect the layer flag values of a command into :class:`LayerFlags`."""
    from cbr_cli.spec.flags import LayerFlags  # not at import time: keeps `cbr --help` light

    return LayerFlags(**values)  # type: ignore[arg-type]


def with_layer_flags(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command every layer flag; it receives them as one ``flags: LayerFlags``.

    Typer reads a command's options from its signature, so the wrapper advertises the
    command's own parameters (without ``flags``) followed by :data:`LAYER_FLAGS`, and
    gathers those into a :class:`~cbr_cli.spec.flags.LayerFlags` before calling the command.
    ``apply``, ``batch`` and ``shape`` thus take the same flags from one definition.
    """
    signature = inspect.signature(command)
    own = [p for name, p in signature.parameters.items() if name != "flags"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in LAYER_FLAGS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> T:
        values = {name: kwargs.pop(name) for name in LAYER_FLAGS}
        return command(flags=layer_flags(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "flags"}
    return wrapper


# ------------------------------------------------------------ output options

OUTPUT = "Output"

Colormap = Annotated[
    Optional[str],
    typer.Option(
        metavar=choices_metavar(COLORMAP_CHOICES),
        help="Colormap for every map: rdbu, viridis, magma or gray "
        "(default: diverging for signed maps, sequential after ReLU).",
        rich_help_panel=OUTPUT,
    ),
]
Normalize = Annotated[
    str,
    typer.Option(
        metavar=choices_metavar(NORMALIZE_CHOICES),
        help="Colour range per channel, per stage or one for all stages. auto: per channel "
        "for conv outputs (kernels differ in gain), shared after BN (one scale: comparable).",
        rich_help_panel=OUTPUT,
    ),
]
ViewRange = Annotated[
    str,
    typer.Option(
        "--range",
        metavar="max|pNN",
        help="How far a colour range reaches: pNN, the NN-th percentile of |x| (of x after "
        "ReLU), beyond which values clip to the end colours; max: the most extreme value. "
        "Exact values stay in the .npy.",
        rich_help_panel=OUTPUT,
    ),
]
Report = Annotated[
    bool,
    typer.Option(
        "--report/--no-report",
        help="Write the HTML report (kernels, grids, filmstrips, histograms, statistics).",
        rich_help_panel=OUTPUT,
    ),
]
BatchReport = Annotated[
    bool,
    typer.Option(
        "--report/--no-report",
        help="Write OUT/index.html (a gallery of the folder) and each image's report.html "
        "with its kernels and histograms (about 0.15 s more per image and layer).",
        rich_help_panel=OUTPUT,
    ),
]
SaveNpy = Annotated[
    bool,
    typer.Option(
        "--save-npy",
        help="Also save the raw arrays (C, H, W) as .npy (float32, or --dtype float16).",
        rich_help_panel=OUTPUT,
    ),
]
ChannelPngs = Annotated[
    bool,
    typer.Option(
        "--channel-pngs/--no-channel-pngs",
        help="Write one PNG per channel.",
        rich_help_panel=OUTPUT,
    ),
]
Pngs = Annotated[
    bool,
    typer.Option(
        "--pngs/--no-pngs",
        help="Write PNGs (input, channels, grids). --no-pngs: arrays and statistics only "
        "(needs --save-npy, or for batch --store).",
        rich_help_panel=OUTPUT,
    ),
]
DTYPE_CHOICES = ("float32", "float16")
Dtype = Annotated[
    str,
    typer.Option(
        "--dtype",
        metavar="float32|float16",
        help="dtype of the saved arrays (.npy, --store). float16 halves the disk; a map with "
        "values beyond float16's range (|x| > 65504) is refused, not saved as inf.",
        rich_help_panel=OUTPUT,
    ),
]
Resize = Annotated[
    Optional[str],
    typer.Option(
        metavar="HxW", help="Resize every image to HxW first (bicubic).", rich_help_panel=OUTPUT
    ),
]


def did_you_mean(text: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(text, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_size(text: str | None, flag: str = "--resize") -> tuple[int, int] | None:
    """``HxW`` (or ``H,W``) as a pair of positive ints; None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.lower().replace(",", "x").split("x")]
    if len(parts) != 2 or not all(re.fullmatch("[0-9]{1,30}", p) and int(p) > 0 for p in parts):
        raise CbrError(f"{flag}: expected HxW with positive integers, e.g. 512x512 (got {text!r})")
    height, width = int(parts[0]), int(parts[1])
    from PIL import Image  # only when the flag is given: `cbr --help` stays light

    if height * width > Image.MAX_IMAGE_PIXELS:  # the decompression-bomb limit, as for files
        raise CbrError(
            f"{flag} {height}x{width}: {height * width} pixels is more than the "
            f"{Image.MAX_IMAGE_PIXELS} an image may have"
        )
    return height, width


def output_options(
    out: Path,
    colormap: str | None,
    normalize: str,
    save_npy: bool,
    channel_pngs: bool,
    resize: str | None,
    *,
    range_rule: str = "p99.5",
    report: bool = False,
    command: str = "",
    pngs: bool = True,
    dtype: str = "float32",
    store: bool | None = None,
) -> "ApplyOptions":
    """Validate the output flags shared by ``apply`` and ``batch`` into ApplyOptions.

    ``store`` is whether ``--store`` was given (None: the command has no ``--store``).
    """
    from cbr_cli.io import render
    from cbr_cli.io.render.ranges import parse_range
    from cbr_cli.run.records import ApplyOptions

    if colormap is not None and colormap.lower() not in render.COLORMAPS:
        raise CbrError(
            f"--colormap: expected one of {list(render.COLORMAPS)} (got {colormap!r})"
            + did_you_mean(colormap.lower(), render.COLORMAPS)
        )
    if normalize not in NORMALIZE_CHOICES:
        raise CbrError(
            f"--normalize: expected one of {list(NORMALIZE_CHOICES)} (got {normalize!r})"
            + did_you_mean(normalize, NORMALIZE_CHOICES)
        )
    if dtype not in DTYPE_CHOICES:
        raise CbrError(
            f"--dtype: expected one of {list(DTYPE_CHOICES)} (got {dtype!r})"
            + did_you_mean(dtype, DTYPE_CHOICES)
        )
    if not pngs and not save_npy and not store:
        add = "--save-npy or --store" if store is not None else "--save-npy"
        raise CbrError(f"--no-pngs: nothing would be written; add {add}")
    return ApplyOptions(
        out_dir=str(out),
        colormap=colormap.lower() if colormap else None,
        normalize=normalize,
        save_npy=save_npy,
        channel_pngs=channel_pngs,
        resize=parse_size(resize),
        range_rule=str(parse_range(range_rule)),
        report=report and pngs,  # a report of pictures: none with --no-pngs
        command=command,
        pngs=pngs,
        npy_dtype=dtype,
    )


def command_line() -> str:
    """The command as the user typed it (for the report), program name as ``cbr``."""
    import shlex

    return shlex.join(["cbr", *sys.argv[1:]])


# ------------------------------------------------------------ plain numbers
#
# Numbers taken as text and parsed here, not by Typer (whose errors are a multi-line
# usage message), so that a bad one is a one-line ``error: FLAG: expected ... (got ...)``
# like every other cbr error. Ranges are checked where the value is used.


def parse_int(text: str | None, flag: str, expected: str = "an integer") -> int | None:
    """``text`` as an int; None stays None."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise CbrError(f"{flag}: expected {expected} (got {text!r})") from None


def parse_float(text: str | None, flag: str, expected: str = "a number") -> float | None:
    """``text`` as a float; None stays None."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise CbrError(f"{flag}: expected {expected} (got {text!r})") from None
