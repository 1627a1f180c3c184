"""The pipeline description's types: what a validated config or set of flags becomes.

:class:`PipelineSpec` (input, layers), :class:`LayerSpec`, :class:`ConvSpec`,
:class:`BNSpec`, :class:`InputSpec`, :class:`ParamSource`, with the choices and bounds
the validator (:mod:`cbr_cli.spec.pipeline_spec`) checks values against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cbr_cli.errors import CbrError
from cbr_cli.spec.weights_source import TensorRef, WeightsFile

COLORS = ("gray", "rgb")
INITS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform")
BN_MODES = ("batch", "running")
ACTIVATIONS = ("relu", "leaky_relu", "none")
LAYER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

TOP_KEYS = ("weights", "input", "layers")
INPUT_KEYS = ("preset", "color", "mean", "std", "resize", "crop")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_PRESETS: dict[str, dict[str, Any]] = {
    # torchvision's ImageNet weights: ToTensor() then Normalize(mean, std), RGB.
    "imagenet": {"color": "rgb", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    # ... with the evaluation transform: Resize(256) (shorter side) + CenterCrop(224).
    "imagenet-eval": {
        "color": "rgb",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "resize": 256,
        "crop": 224,
    },
    # [0, 1] -> [-1, 1]: Normalize(0.5, 0.5), i.e. (x - 0.5) / 0.5 = 2x - 1, any channels.
    "minus1to1": {"mean": 0.5, "std": 0.5},
}
"""``input.preset`` names: the values they set (keys given next to a preset win)."""
LAYER_KEYS = ("name", "conv", "bn", "activation", "negative_slope")
CONV_KEYS = (
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "padding_mode",
    "dilation",
    "groups",
    "bias",
    "init",
    "seed",
    "weight",
    "kernels",
    "from",
    "tensors",
    "flip",
)
BN_KEYS = (
    "mode",
    "eps",
    "momentum",
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "from",
    "tensors",
)
TENSOR_KEYS = ("from", "tensors")

# Bounds on every integer, checked when it is parsed, so that a typo is one error naming
# the key or flag instead of an OverflowError/ValueError deep in numpy (a worker's
# traceback in `cbr batch`).  The largest image cbr decodes has Pillow's
# MAX_IMAGE_PIXELS (~89.5 M pixels, 9459 x 9459 when square), so a kernel, stride,
# dilation or padding of more than 2**16 on a side does nothing a smaller one would not
# (or makes an empty output), and 2**16 channels is 16x the widest layer of common
# networks.  Within these bounds every size cbr derives -- effective kernel
# dilation * (kernel_size - 1) + 1 < 2**32, padded sides < 2**34, weight and map element
# counts -- stays far inside int64 (numpy's and PyTorch's index type); what is too big
# for memory is refused by the memory estimate before any array is made.
MAX_SIDE = 2**16
"""Largest kernel_size, stride, dilation or padding on one side."""
MAX_CHANNELS = 2**16
"""Largest out_channels (and groups, which must divide it)."""
MAX_SEED = 2**64 - 1
"""Largest seed: torch.manual_seed's (uint64); numpy's default_rng takes any such seed."""


# ------------------------------------------------------------------ the spec


@dataclass(frozen=True)
class ParamSource:
    """A per-channel parameter: a scalar (broadcast), a list, a ``.npy`` path or a tensor."""

    value: float | tuple[float, ...] | str | TensorRef
    where: str

    def plain(self) -> Any:
        if isinstance(self.value, TensorRef):
            return self.value.name
        return list(self.value) if isinstance(self.value, tuple) else self.value

    def check(self, channels: int, what: str) -> None:
        """Refuse a list or ``.npy`` (header only) without one value per channel.

        ``what`` names the parameter in the message (e.g. ``bn.weight of layer 'stem'``).
        Used by the engine and by ``cbr shape`` alike, so both say the same.
        """
        if isinstance(self.value, TensorRef):
            if self.value.shape != (channels,):
                raise self.value.error(
                    f"expected shape ({channels},), got {self.value.shape} ({what})"
                )
            return
        if isinstance(self.value, tuple) and len(self.value) != channels:
            raise CbrError(
                f"{self.where}: expected {channels} value{'s' if channels != 1 else ''} for "
                f"{what}, one per channel (got {len(self.value)})"
            )
        if isinstance(self.value, str):
            from cbr_cli.io.npyfiles import npy_shape  # numpy only when a .npy is named

            shape = npy_shape(self.value, self.where)
            if shape != (channels,):
                raise CbrError(
                    f"{self.where}: {what} must have shape ({channels},), one value per "
                    f"channel (got {shape} in {self.value})"
                )


@dataclass(frozen=True)
class InputSpec:
    """How images become the first layer's input: colour and optional normalisation."""

    color: str | None = None
    mean: ParamSource | None = None
    std: ParamSource | None = None
    resize: int | None = None
    """Shorter side after resizing (torchvision's ``Resize(int)``, bilinear), or None."""
    crop: tuple[int, int] | None = None
    """Centre crop ``(h, w)`` after ``resize`` (torchvision's ``CenterCrop``), or None."""
    preset: str | None = None

    def prepared_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H, W)`` an image of ``height x width`` has after ``resize`` and ``crop``."""
        if self.resize is not None:
            height, width = resized_size(height, width, self.resize)
        return self.crop if self.crop is not None else (height, width)


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """torchvision's ``Resize(shorter)``: the shorter side becomes ``shorter``, the longer
    ``int(shorter * longer / shorter_side)`` (truncated, as torchvision computes it)."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


@dataclass(frozen=True)
class ConvSpec:
    """One ``Conv2d``. Exactly one weight source: ``weight`` (.npy), ``kernels``, or ``init``."""

    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    padding_mode: str = "zeros"
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool | ParamSource = True
    init: str = "kaiming_uniform"
    seed: int = 0  # default: the layer's index (0 for the first), so layers differ
    weight: str | TensorRef | None = None  # a .npy path or a tensor of the weight file
    kernels: tuple[str, ...] | None = None
    flip: bool = False
    """Flip every kernel 180° first: a true convolution (SciPy's ``convolve``, ImageMagick's
    ``Convolve``) instead of PyTorch's cross-correlation."""
    where: dict[str, str] = field(default_factory=dict, compare=False)

    def check_groups(self, in_channels: int, label: str = "") -> None:
        """Refuse ``groups`` that do not divide ``in_channels`` or ``out_channels``.

        The one place this rule is worded: ``cbr shape``, the engine's layer building and
        the config reader all call it. ``label`` (e.g. ``layer 'stem'``) names the layer.
        """
        where = self.where.get("groups") or self.where.get("conv", "")
        prefix = "".join(f"{part}: " for part in (where, label) if part and part != "flags")
        for what, channels in (
            ("the input channels", in_channels),
            ("out_channels", self.out_channels),
        ):
            if channels % self.groups:
                raise CbrError(
                    f"{prefix}groups must divide {what} ({channels}) (got groups={self.groups})"
                )

    def check_weight_file(self, in_channels: int) -> tuple[int, int, int, int]:
        """The weight shape for ``in_channels``; a ``weight:`` .npy must have it (header only).

        Returns ``(out_channels, in_channels/groups, kH, kW)``.
        """
        shape = (self.out_channels, in_channels // self.groups, *self.kernel_size)
        if isinstance(self.weight, TensorRef):
            if self.weight.shape != shape:
                raise self.weight.error(
                    f"expected shape (out_channels, in_channels/groups, kH, kW) = {shape} for "
                    f"{in_channels} input channel(s) and groups={self.groups}, "
                    f"got {self.weight.shape}",
                    self.where.get("from", self.where.get("tensors")),
                )
        elif self.weight is not None:
            from cbr_cli.io.npyfiles import npy_shape  # numpy only when a .npy is named

            found = npy_shape(self.weight, self.where["weight"])
            if found != shape:
                raise CbrError(
                    f"{self.where['weight']}: expected shape (out_channels, in_channels/groups, "
                    f"kH, kW) = {shape} for {in_channels} input channel(s) and "
                    f"groups={self.groups} (got {found} in {self.weight})"
                )
        return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class BNSpec:
    """One ``BatchNorm2d``: ``batch`` statistics (training mode) or given ``running`` ones."""

    mode: str = "batch"
    eps: float = 1e-5
    momentum: float = 0.1
    weight: ParamSource | None = None
    bias: ParamSource | None = None
    running_mean: ParamSource | None = None
    running_var: ParamSource | None = None
    where: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LayerSpec:
    """Conv -> optional BN -> activation."""

    name: str
    conv: ConvSpec
    bn: BNSpec | None = None
    activation: str = "relu"
    negative_slope: float = 0.01


@dataclass(frozen=True)
class PipelineSpec:
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    source: str = "flags"
    weights: WeightsFile | None = field(default=None, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)
    """One line each: where a model's chain stopped and why, BN folded into a conv, ..."""

    def to_plain(self) -> dict[str, Any]:
        """The resolved pipeline as config data (paths absolute): loads back to this spec."""
        return pipeline_to_plain(self)


# ------------------------------------------------------------- round trip


def pipeline_to_plain(spec: PipelineSpec) -> dict[str, Any]:
    """Config data for ``spec``: every default written out, paths absolute."""
    inp: dict[str, Any] = {}
    if spec.input.color:
        inp["color"] = spec.input.color
    if spec.input.mean is not None:
        inp["mean"] = spec.input.mean.plain()
    if spec.input.std is not None:
        inp["std"] = spec.input.std.plain()
    if spec.input.resize is not None:
        inp["resize"] = spec.input.resize
    if spec.input.crop is not None:
        inp["crop"] = list(spec.input.crop)
    layers = []
    for layer in spec.layers:
        c = layer.conv
        conv: dict[str, Any] = {
            "out_channels": c.out_channels,
            "kernel_size": list(c.kernel_size),
            "stride": list(c.stride),
            "padding": c.padding if isinstance(c.padding, str) else list(c.padding),
            "padding_mode": c.padding_mode,
            "dilation": list(c.dilation),
            "groups": c.groups,
            "bias": c.bias if isinstance(c.bias, bool) else c.bias.plain(),
            "flip": c.flip,
        }
        if isinstance(c.weight, TensorRef):
            conv["tensors"] = {"weight": c.weight.name}
            if isinstance(c.bias, ParamSource) and isinstance(c.bias.value, TensorRef):
                conv["tensors"]["bias"] = conv.pop("bias")
        elif c.weight is not None:
            conv["weight"] = c.weight
        elif c.kernels is not None:
            conv["kernels"] = list(c.kernels)
        else:
            conv["init"] = c.init
            conv["seed"] = c.seed
        entry: dict[str, Any] = {"name": layer.name, "conv": conv}
        if layer.bn is not None:
            bn: dict[str, Any] = {
                "mode": layer.bn.mode,
                "eps": layer.bn.eps,
                "momentum": layer.bn.momentum,
            }
            for key in ("weight", "bias", "running_mean", "running_var"):
                source = getattr(layer.bn, key)
                if source is not None and isinstance(source.value, TensorRef):
                    bn.setdefault("tensors", {})[key] = source.plain()
                elif source is not None:
                    bn[key] = source.plain()
            entry["bn"] = bn
        entry["activation"] = layer.activation
        if layer.activation == "leaky_relu":
            entry["negative_slope"] = layer.negative_slope
        layers.append(entry)
    out: dict[str, Any] = {"layers": layers}
    if inp:
        out = {"input": inp, **out}
    if spec.weights is not None:
        out = {"weights": spec.weights.path, **out}
    return out
