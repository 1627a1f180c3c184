"""The pipeline description — YAML and command-line flags both become a :class:`PipelineSpec`.

Validation happens once, here, on :class:`cbr_cli.spec.yaml_reader.Value` trees, so every message
names its origin: ``FILE:LINE:COL: key.path: what is wrong (got ...)`` for YAML, or
``--flag: what is wrong (got ...)`` for flags.

Schema (PyTorch's names)::

    input:                       # optional
      color: rgb | gray          # default: from the image (gray sources stay gray)
      mean: [0.485, 0.456, 0.406]  # optional per-channel normalisation, after scaling to [0, 1]
      std: [0.229, 0.224, 0.225]
    layers:
      - name: stem               # default layer1, layer2, ...
        conv:
          out_channels: 16       # required for random init; else taken from weight/kernels
          kernel_size: 3         # int or [kH, kW]; default 3 (random init)
          stride: 1              # int or pair
          padding: 0             # int, pair, valid, same, full
          padding_mode: zeros    # zeros | reflect | replicate | circular
          dilation: 1
          groups: 1
          bias: true             # true/false, a list, or a .npy path
          init: kaiming_uniform  # (PyTorch's default) | kaiming_normal | xavier_uniform
          seed: 0
          weight: w.npy          # or: (out_channels, in_channels/groups, kH, kW)
          kernels: [sobel_x, sobel_y]   # or: built-in kernels, one per output channel;
                                 # inline: "3x3:-1,0,1,-2,0,2,-1,0,1" (WxH, ImageMagick) or
                                 # rows [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
          flip: false            # true: flip every kernel 180° (true convolution, as
                                 # SciPy/ImageMagick Convolve; PyTorch cross-correlates)
        bn:                      # optional; omit, null or false for none
          mode: batch            # batch (statistics of the batch) | running (given statistics)
          eps: 1e-5
          momentum: 0.1
          weight: 1.0            # scalar, list or .npy path; also bias, running_mean, running_var
        activation: relu         # relu | leaky_relu | none
        negative_slope: 0.01

Relative paths are relative to the YAML file (to the working directory for flags).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cbr_cli.core.shapes import PADDING_MODES, PADDING_STRINGS
from cbr_cli.errors import CbrError
from cbr_cli.spec.yaml_reader import Value

COLORS = ("gray", "rgb")
INITS = ("kaiming_uniform", "kaiming_normal", "xavier_uniform")
BN_MODES = ("batch", "running")
ACTIVATIONS = ("relu", "leaky_relu", "none")
LAYER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

TOP_KEYS = ("input", "layers")
INPUT_KEYS = ("color", "mean", "std")
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
    "flip",
)
BN_KEYS = ("mode", "eps", "momentum", "weight", "bias", "running_mean", "running_var")

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
    """A per-channel parameter: a scalar (broadcast), a list, or a ``.npy`` file path."""

    value: float | tuple[float, ...] | str
    where: str

    def plain(self) -> Any:
        return list(self.value) if isinstance(self.value, tuple) else self.value

    def check(self, channels: int, what: str) -> None:
        """Refuse a list or ``.npy`` (header only) without one value per channel.

        ``what`` names the parameter in the message (e.g. ``bn.weight of layer 'stem'``).
        Used by the engine and by ``cbr shape`` alike, so both say the same.
        """
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
    weight: str | None = None
    kernels: tuple[str, ...] | None = None
    flip: bool = False
    """Flip every kernel 180° first: a true convolution (SciPy's ``convolve``, ImageMagick's
    ``Convolve``) instead of PyTorch's cross-correlation."""
    where: dict[str, str] = field(default_factory=dict, compare=False)

    def check_weight_file(self, in_channels: int) -> tuple[int, int, int, int]:
        """The weight shape for ``in_channels``; a ``weight:`` .npy must have it (header only).

        Returns ``(out_channels, in_channels/groups, kH, kW)``.
        """
        shape = (self.out_channels, in_channels // self.groups, *self.kernel_size)
        if self.weight is not None:
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

    def to_plain(self) -> dict[str, Any]:
        """The resolved pipeline as config data (paths absolute): loads back to this spec."""
        return pipeline_to_plain(self)


# --------------------------------------------------------------- validation


def _mapping(value: Value, allowed: tuple[str, ...]) -> dict[str, Value]:
    if not isinstance(value.data, dict):
        raise value.error(f"expected a mapping with keys {list(allowed)} (got {_show(value)})")
    for key in value.data:
        if key not in allowed:
            where = value.key_where.get(key) or value.data[key].where
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {list(allowed)}"
            raise CbrError(f"{where}: unknown key ({hint})")
    return value.data


def _show(value: Value) -> str:
    data = value.plain()
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    return repr(data)


def _int(
    value: Value, minimum: int | None = None, what: str = "an integer", maximum: int | None = None
) -> int:
    """An integer (digits in a string too: flags arrive as text) in [minimum, maximum].

    ``what`` names what is expected, lower bound included (``"a positive integer"``);
    a value above ``maximum`` is refused with the allowed range.
    """
    data = value.data
    if isinstance(data, str) and re.fullmatch(r"[+-]?\d{1,4000}", data.strip()):
        data = int(data)  # at most 4000 digits: Python's int(str) limit is 4300
    if isinstance(data, bool) or not isinstance(data, int):
        raise value.error(f"expected {what} (got {_show(value)})")
    if minimum is not None and data < minimum:
        raise value.error(f"expected {what} (got {data})")
    if maximum is not None and data > maximum:
        bounds = f"of at most {maximum}" if minimum is None else f"from {minimum} to {maximum}"
        raise value.error(f"expected {what} {bounds} (got {_big(data)})")
    return data


def _big(number: int) -> str:
    """``number`` as digits, shortened when it is very long."""
    text = str(number)
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"


def _float(value: Value, what: str = "a number") -> float:
    """A finite number; strings such as ``1e-5`` (YAML 1.1 reads them as text) are accepted."""
    data = value.data
    if isinstance(data, str):
        try:
            data = float(data.strip())
        except ValueError:
            raise value.error(f"expected {what} (got {_show(value)})") from None
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise value.error(f"expected {what} (got {_show(value)})")
    data = float(data)
    if data != data or data in (float("inf"), float("-inf")):
        raise value.error(f"expected a finite number (got {data})")
    return data


def _bool(value: Value) -> bool:
    if isinstance(value.data, bool):
        return value.data
    raise value.error(f"expected true or false (got {_show(value)})")


def _choice(value: Value, choices: tuple[str, ...]) -> str:
    if isinstance(value.data, str) and value.data in choices:
        return value.data
    if value.data in (None, False) and "none" in choices:  # `none`, `null`, YAML 1.1 `off`
        return "none"
    close = difflib.get_close_matches(str(value.data), choices, n=1) if value.data else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise value.error(f"expected one of {list(choices)} (got {_show(value)}){hint}")


def _int_pair(value: Value, minimum: int, what: str, maximum: int = MAX_SIDE) -> tuple[int, int]:
    """An int or a pair ``[h, w]`` of ints in [minimum, maximum] (default :data:`MAX_SIDE`)."""
    if isinstance(value.data, list):
        if len(value.data) != 2:
            raise value.error(f"expected {what} or a pair [h, w] (got a list of {len(value.data)})")
        return (
            _int(value.data[0], minimum, what, maximum),
            _int(value.data[1], minimum, what, maximum),
        )
    n = _int(value, minimum, what, maximum)
    return n, n


def _padding(value: Value) -> tuple[int, int] | str:
    if isinstance(value.data, str) and not value.data.strip().lstrip("+-").isdigit():
        if value.data in PADDING_STRINGS:
            return value.data
        close = difflib.get_close_matches(value.data.strip().lower(), PADDING_STRINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise value.error(
            f"expected an int >= 0, a pair, or one of {list(PADDING_STRINGS)} "
            f"(got {_show(value)}){hint}"
        )
    return _int_pair(value, 0, "a non-negative integer")


def _path(value: Value, suffix: str = ".npy") -> str:
    if not isinstance(value.data, str) or not value.data.strip():
        raise value.error(f"expected a path to a {suffix} file (got {_show(value)})")
    path = os.path.join(value.base_dir, os.path.expanduser(value.data))
    if not path.lower().endswith(suffix):
        raise value.error(f"expected a {suffix} file (got {value.data!r})")
    from cbr_cli.io.readfile import not_regular_reason

    try:
        reason = not_regular_reason(os.stat(path).st_mode)
    except FileNotFoundError:
        reason = "file not found"
    except OSError as exc:
        reason = f"cannot read it ({exc.strerror or exc})"
    if reason is not None:
        raise value.error(f"{reason} (got {value.data!r}, looked for {path})")
    return os.path.normpath(path)


def _param(value: Value, what: str = "a number", positive: bool = False) -> ParamSource:
    """A scalar, a list of numbers, or a ``.npy`` path."""
    if isinstance(value.data, list):
        if not value.data:
            raise value.error("expected a non-empty list of numbers (got an empty list)")
        numbers = tuple(_float(item, what) for item in value.data)
        if positive and min(numbers) <= 0:
            raise value.error(f"expected positive numbers (got {list(numbers)})")
        return ParamSource(numbers, value.where)
    if isinstance(value.data, str) and value.data.strip().lower().endswith(".npy"):
        return ParamSource(_path(value), value.where)
    number = _float(value, f"{what}, a list of numbers, or a .npy path")
    if positive and number <= 0:
        raise value.error(f"expected a positive number (got {number})")
    return ParamSource(number, value.where)


# ------------------------------------------------------------------- parse


def parse_pipeline(root: Value, source: str) -> PipelineSpec:
    """Validate a whole pipeline document (``input:`` + ``layers:``)."""
    top = _mapping(root, TOP_KEYS)
    if "layers" not in top:
        raise root.error("missing required key 'layers' (a list of conv layers)")
    input_spec = parse_input(top["input"]) if "input" in top else InputSpec()
    layers_value = top["layers"]
    if not isinstance(layers_value.data, list) or not layers_value.data:
        got = "an empty list" if layers_value.data == [] else _show(layers_value)
        raise layers_value.error(f"expected a non-empty list of layers (got {got})")
    layers = []
    names: dict[str, str] = {}
    for index, item in enumerate(layers_value.data):
        layer = parse_layer(item, index)
        if layer.name in names:
            raise item.error(
                f"duplicate layer name {layer.name!r} (also used by {names[layer.name]})"
            )
        names[layer.name] = f"layers[{index}]"
        layers.append(layer)
    return PipelineSpec(input_spec, tuple(layers), source)


def parse_input(value: Value) -> InputSpec:
    if value.data is None:
        return InputSpec()
    keys = _mapping(value, INPUT_KEYS)
    color = _choice(keys["color"], COLORS) if "color" in keys else None
    mean = _param(keys["mean"]) if "mean" in keys else None
    std = _param(keys["std"], positive=True) if "std" in keys else None
    return InputSpec(color, mean, std)


def parse_layer(value: Value, index: int) -> LayerSpec:
    keys = _mapping(value, LAYER_KEYS)
    name = f"layer{index + 1}"
    if "name" in keys:
        name_value = keys["name"]
        if not isinstance(name_value.data, str) or not LAYER_NAME.match(name_value.data):
            raise name_value.error(
                "expected a name of letters, digits, '_', '-' or '.' (used in file names) "
                f"(got {_show(name_value)})"
            )
        name = name_value.data
    if "conv" not in keys:
        raise value.error("missing required key 'conv'")
    conv = parse_conv(keys["conv"], default_seed=index)
    bn = None  # no `bn:` key: no BatchNorm (PyTorch's Conv2d alone)
    if "bn" in keys and not _bn_off(keys["bn"]):
        bn = parse_bn(keys["bn"])
    activation = _choice(keys["activation"], ACTIVATIONS) if "activation" in keys else "relu"
    slope = 0.01
    if "negative_slope" in keys:
        slope = _float(keys["negative_slope"])
        if activation != "leaky_relu":
            raise keys["negative_slope"].error(
                f"only used with activation leaky_relu (activation is {activation!r})"
            )
    return LayerSpec(name, conv, bn, activation, slope)


def parse_conv(value: Value, default_seed: int = 0) -> ConvSpec:
    keys = _mapping(value, CONV_KEYS)
    where = {key: v.where for key, v in keys.items()}
    where.setdefault("conv", value.where)
    sources = [k for k in ("weight", "kernels") if k in keys]
    if len(sources) > 1:
        raise keys["kernels"].error("give either 'weight' or 'kernels', not both")
    if sources and ("init" in keys or "seed" in keys):
        extra = keys["init"] if "init" in keys else keys["seed"]
        raise extra.error(f"'init'/'seed' apply to random weights; this conv uses {sources[0]!r}")

    groups = 1
    if "groups" in keys:
        groups = _int(keys["groups"], 1, "a positive integer", MAX_CHANNELS)
    out_channels = kernel_size = None
    weight = kernels = None
    if "weight" in keys:
        from cbr_cli.io import (
            npyfiles,  # numpy: only when a .npy is given (keeps `cbr shape` light)
        )

        weight = _path(keys["weight"])
        shape = npyfiles.npy_shape(weight, keys["weight"].where)
        _check_weight_shape(keys["weight"], shape)
        out_channels, kernel_size = shape[0], (shape[2], shape[3])
    elif "kernels" in keys:
        kernels, out_channels, kernel_size = _kernels(keys["kernels"])
        if out_channels > MAX_CHANNELS:
            raise keys["kernels"].error(
                f"{out_channels} kernels is more than the {MAX_CHANNELS} output channels "
                "a conv may have"
            )

    if "out_channels" in keys:
        given = _int(keys["out_channels"], 1, "a positive integer", MAX_CHANNELS)
        _check_matches(keys["out_channels"], given, out_channels, sources, "{} output channels")
        out_channels = given
    if out_channels is None:
        raise value.error("missing 'out_channels' (or give 'weight' or 'kernels')")
    if "kernel_size" in keys:
        given_ks = _int_pair(keys["kernel_size"], 1, "a positive integer")
        _check_matches(keys["kernel_size"], given_ks, kernel_size, sources, "kernel {}")
        kernel_size = given_ks
    if kernel_size is None:
        kernel_size = (3, 3)
    if out_channels % groups:
        raise keys.get("groups", value).error(
            f"groups must divide out_channels ({out_channels}) (got groups={groups})"
        )

    bias: bool | ParamSource = not sources  # PyTorch's default bias is random; given weights: none
    if "bias" in keys:
        b = keys["bias"]
        bias = _bool(b) if isinstance(b.data, bool) else _param(b)
        if bias is True and sources:
            raise b.error(
                f"true draws a random bias, but this conv's weights come from "
                f"{sources[0]!r}; give the bias values (a list or a .npy path) or false"
            )
        count = len(bias.value) if isinstance(bias, ParamSource) else out_channels
        if (
            isinstance(bias, ParamSource)
            and isinstance(bias.value, tuple)
            and count != out_channels
        ):
            raise b.error(f"expected {out_channels} values, one per output channel (got {count})")
    return ConvSpec(
        out_channels=out_channels,
        kernel_size=kernel_size,
        stride=_int_pair(keys["stride"], 1, "a positive integer") if "stride" in keys else (1, 1),
        padding=_padding(keys["padding"]) if "padding" in keys else (0, 0),
        padding_mode=_choice(keys["padding_mode"], PADDING_MODES)
        if "padding_mode" in keys
        else "zeros",
        dilation=_int_pair(keys["dilation"], 1, "a positive integer")
        if "dilation" in keys
        else (1, 1),
        groups=groups,
        bias=bias,
        init=_choice(keys["init"], INITS) if "init" in keys else "kaiming_uniform",
        seed=_int(keys["seed"], 0, "a non-negative integer", MAX_SEED)
        if "seed" in keys
        else default_seed,
        weight=weight,
        kernels=kernels,
        flip=_bool(keys["flip"]) if "flip" in keys else False,
        where=where,
    )


def _check_weight_shape(value: Value, shape: tuple[int, ...]) -> None:
    """A ``weight:`` .npy header: 4-D, no zero size, within the channel and side bounds."""
    if len(shape) != 4:
        raise value.error(
            f"expected an array of shape (out_channels, in_channels/groups, kH, kW) "
            f"(got shape {shape})"
        )
    if min(shape) < 1:
        raise value.error(
            f"every size of (out_channels, in_channels/groups, kH, kW) must be at least 1 "
            f"(got shape {shape})"
        )
    if shape[0] > MAX_CHANNELS or max(shape[2:]) > MAX_SIDE:
        raise value.error(
            f"at most {MAX_CHANNELS} output channels and kernel sides of at most {MAX_SIDE} "
            f"(got shape {shape})"
        )


def _check_matches(
    value: Value, given: object, derived: object, sources: list[str], what: str
) -> None:
    """A key given alongside ``weight``/``kernels`` must agree with what they imply.

    ``what`` describes the implied value, ``{}`` standing for it (``"kernel {}"``).
    """
    if derived is not None and given != derived:
        shown = list(given) if isinstance(given, tuple) else given
        raise value.error(
            f"does not match the {sources[0]} given ({what.format(derived)}) (got {shown})"
        )


def _kernels(value: Value) -> tuple[tuple[str, ...], int, tuple[int, int]]:
    from cbr_cli.core import kernels as bank

    items = value.data if isinstance(value.data, list) else [value]
    if not items:
        raise value.error("expected a non-empty list of kernel names (got an empty list)")
    names = []
    for item in items:
        if isinstance(item.data, list):  # typed as rows of numbers: [[-1, 0, 1], ...]
            names.append(_inline_kernel(item))
            continue
        if not isinstance(item.data, str):
            raise item.error(
                f"expected a kernel name, 'WxH:v,v,...' or a list of rows (got {_show(item)})"
            )
        try:
            names.extend(bank.expand_names([item.data]))
        except CbrError as exc:
            raise item.error(str(exc)) from None
    try:
        count, kh, kw = bank.stack_shape(names)  # sizes only: no numpy at start-up
    except CbrError as exc:
        raise value.error(str(exc)) from None
    return tuple(names), count, (kh, kw)


def _inline_kernel(item: Value) -> str:
    """A kernel given in YAML as rows of numbers, as its canonical ``WxH:...`` spec."""
    from cbr_cli.core import kernels as bank

    rows = item.data
    if not all(isinstance(row.data, list) for row in rows):
        raise item.error(
            "a kernel given as numbers is a list of rows, e.g. [[-1, 0, 1], [-2, 0, 2], "
            f"[-1, 0, 1]] (got {_show(item)}); one kernel alone in `kernels:` needs its "
            "own brackets: kernels: [[[-1, 0, 1], ...]]"
        )
    try:
        return bank.inline_spec([[v.data for v in row.data] for row in rows])
    except CbrError as exc:
        raise item.error(exc.message) from None


BN_OFF = (None, False, "off", "none")  # False: YAML 1.1 reads an unquoted `off` as a boolean


def _bn_off(value: Value) -> bool:
    """``bn: off`` / ``false`` / ``null`` / ``none``, or ``bn: {mode: off}``."""
    if value.data in BN_OFF:
        return True
    if isinstance(value.data, dict) and "mode" in value.data and value.data["mode"].data in BN_OFF:
        others = [key for key in value.data if key != "mode"]
        if others:
            raise value.data[others[0]].error("BatchNorm is off (mode: off); remove this key")
        return True
    return False


def parse_bn(value: Value) -> BNSpec:
    if isinstance(value.data, str):  # shorthand: `bn: batch` / `bn: running`
        return BNSpec(mode=_choice(value, BN_MODES), where={"mode": value.where})
    if value.data is True:
        return BNSpec(where={"mode": value.where})
    keys = _mapping(value, BN_KEYS)
    where = {key: v.where for key, v in keys.items()}
    mode = _choice(keys["mode"], BN_MODES) if "mode" in keys else "batch"
    eps = _float(keys["eps"]) if "eps" in keys else 1e-5
    if eps <= 0:
        raise keys["eps"].error(f"expected a positive number (got {eps})")
    momentum = _float(keys["momentum"]) if "momentum" in keys else 0.1
    if not 0.0 <= momentum <= 1.0:
        raise keys["momentum"].error(f"expected a number in [0, 1] (got {momentum})")
    running = {k: _param(keys[k]) for k in ("running_mean", "running_var") if k in keys}
    if mode == "batch" and running:
        first = next(iter(running))
        raise keys[first].error(
            "running statistics are only used with mode: running (mode is batch)"
        )
    if "running_var" in running:
        var = running["running_var"].plain()
        if isinstance(var, (float, list)) and min(var if isinstance(var, list) else [var]) < 0:
            raise keys["running_var"].error(f"variance must be non-negative (got {var})")
    return BNSpec(
        mode=mode,
        eps=eps,
        momentum=momentum,
        weight=_param(keys["weight"]) if "weight" in keys else None,
        bias=_param(keys["bias"]) if "bias" in keys else None,
        running_mean=running.get("running_mean"),
        running_var=running.get("running_var"),
        where=where,
    )


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
        if c.weight is not None:
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
                if source is not None:
                    bn[key] = source.plain()
            entry["bn"] = bn
        entry["activation"] = layer.activation
        if layer.activation == "leaky_relu":
            entry["negative_slope"] = layer.negative_slope
        layers.append(entry)
    out: dict[str, Any] = {"layers": layers}
    if inp:
        out = {"input": inp, **out}
    return out
