"""The pipeline description — YAML and command-line flags both become a :class:`PipelineSpec`.

Validation happens once, here, on :class:`cbr_cli.spec.yaml_reader.Value` trees, so every message
names its origin: ``FILE:LINE:COL: key.path: what is wrong (got ...)`` for YAML, or
``--flag: what is wrong (got ...)`` for flags.

Schema (PyTorch's names)::

    weights: model.pth           # optional: a weight file the layers take tensors from
    input:                       # optional
      preset: imagenet           # imagenet | imagenet-eval | minus1to1 (see INPUT_PRESETS)
      color: rgb | gray          # default: from the image (gray sources stay gray)
      mean: [0.485, 0.456, 0.406]  # optional per-channel normalisation, after scaling to [0, 1]
      std: [0.229, 0.224, 0.225]
      resize: 256                # shorter side to 256, bilinear (torchvision's Resize(256))
      crop: 224                  # centre crop, int or [h, w] (torchvision's CenterCrop)
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
          from: conv1            # or: conv1.weight (+ conv1.bias) of the weight file
          tensors: {weight: w, bias: b}  # or: tensors of the weight file by name
        bn:                      # optional; omit, null or false for none
          mode: batch            # batch (statistics of the batch) | running (given statistics)
          eps: 1e-5
          momentum: 0.1
          weight: 1.0            # scalar, list or .npy path; also bias, running_mean, running_var
          from: bn1              # or: bn1.weight/.bias/.running_mean/.running_var (mode
                                 #   running by default), or tensors: {weight: ..., ...}
        activation: relu         # relu | leaky_relu | none
        negative_slope: 0.01

Relative paths are relative to the YAML file (to the working directory for flags).
Tensors of a weight file: :mod:`cbr_cli.spec.weights_source`.
"""

from __future__ import annotations

from cbr_cli.core.shapes import PADDING_MODES
from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_types import (
    ACTIVATIONS,
    BN_KEYS,
    BN_MODES,
    COLORS,
    CONV_KEYS,
    INITS,
    INPUT_KEYS,
    INPUT_PRESETS,
    LAYER_KEYS,
    LAYER_NAME,
    MAX_CHANNELS,
    MAX_SEED,
    MAX_SIDE,
    TENSOR_KEYS,
    TOP_KEYS,
    BNSpec,
    ConvSpec,
    InputSpec,
    LayerSpec,
    ParamSource,
    PipelineSpec,
)
from cbr_cli.spec.scalars import (
    _bool,
    _choice,
    _float,
    _int,
    _int_pair,
    _mapping,
    _padding,
    _param,
    _path,
    _show,
)
from cbr_cli.spec.weights_source import TensorRef, WeightsFile
from cbr_cli.spec.yaml_reader import Value


def parse_pipeline(
    root: Value,
    source: str,
    weights: WeightsFile | None = None,
    notes: tuple[str, ...] = (),
) -> PipelineSpec:
    """Validate a whole pipeline document (``weights:`` + ``input:`` + ``layers:``).

    ``weights`` is a weight file already open (``--model``); a ``weights:`` key replaces it.
    ``notes`` are kept on the spec (see :attr:`PipelineSpec.notes`).
    """
    top = _mapping(root, TOP_KEYS)
    if "layers" not in top:
        raise root.error("missing required key 'layers' (a list of conv layers)")
    if "weights" in top:
        from cbr_cli.spec.weights_source import open_weights

        weights = open_weights(top["weights"])
    input_spec = parse_input(top["input"]) if "input" in top else InputSpec()
    layers_value = top["layers"]
    if not isinstance(layers_value.data, list) or not layers_value.data:
        got = "an empty list" if layers_value.data == [] else _show(layers_value)
        raise layers_value.error(f"expected a non-empty list of layers (got {got})")
    layers = []
    names: dict[str, str] = {}
    for index, item in enumerate(layers_value.data):
        layer = parse_layer(item, index, weights)
        if layer.name in names:
            raise item.error(
                f"duplicate layer name {layer.name!r} (also used by {names[layer.name]})"
            )
        names[layer.name] = f"layers[{index}]"
        layers.append(layer)
    return PipelineSpec(input_spec, tuple(layers), source, weights, notes)


def parse_input(value: Value) -> InputSpec:
    if value.data is None:
        return InputSpec()
    keys = _mapping(value, INPUT_KEYS)
    preset = _choice(keys["preset"], tuple(INPUT_PRESETS)) if "preset" in keys else None
    base = INPUT_PRESETS.get(preset or "", {})
    where = keys["preset"].where if preset else value.where

    def preset_param(key: str) -> ParamSource | None:
        return ParamSource(base[key], where) if key in base else None

    color = _choice(keys["color"], COLORS) if "color" in keys else base.get("color")
    mean = _param(keys["mean"]) if "mean" in keys else preset_param("mean")
    std = _param(keys["std"], positive=True) if "std" in keys else preset_param("std")
    resize = base.get("resize")
    if "resize" in keys:
        resize = _int(keys["resize"], 1, "a positive integer (the shorter side)", MAX_SIDE)
    crop = (base["crop"], base["crop"]) if "crop" in base else None
    if "crop" in keys:
        crop = _int_pair(keys["crop"], 1, "a positive integer")
    return InputSpec(color, mean, std, resize, crop, preset)


def parse_layer(value: Value, index: int, weights: WeightsFile | None = None) -> LayerSpec:
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
    conv = parse_conv(keys["conv"], default_seed=index, weights=weights)
    bn = None  # no `bn:` key: no BatchNorm (PyTorch's Conv2d alone)
    if "bn" in keys and not _bn_off(keys["bn"]):
        bn = parse_bn(keys["bn"], weights)
        for key in ("weight", "bias", "running_mean", "running_var"):
            source = getattr(bn, key)
            if source is not None and isinstance(source.value, TensorRef):
                source.check(conv.out_channels, f"bn.{key}: one per output channel of the conv")
    activation = _choice(keys["activation"], ACTIVATIONS) if "activation" in keys else "relu"
    slope = 0.01
    if "negative_slope" in keys:
        slope = _float(keys["negative_slope"])
        if activation != "leaky_relu":
            raise keys["negative_slope"].error(
                f"only used with activation leaky_relu (activation is {activation!r})"
            )
    return LayerSpec(name, conv, bn, activation, slope)


def parse_conv(value: Value, default_seed: int = 0, weights: WeightsFile | None = None) -> ConvSpec:
    keys = _mapping(value, CONV_KEYS)
    where = {key: v.where for key, v in keys.items()}
    where.setdefault("conv", value.where)
    sources = [k for k in ("weight", "kernels", *TENSOR_KEYS) if k in keys]
    if len(sources) > 1:
        raise keys[sources[1]].error(f"give either {sources[0]!r} or {sources[1]!r}, not both")
    if sources and ("init" in keys or "seed" in keys):
        extra = keys["init"] if "init" in keys else keys["seed"]
        raise extra.error(f"'init'/'seed' apply to random weights; this conv uses {sources[0]!r}")

    groups = 1
    if "groups" in keys:
        groups = _int(keys["groups"], 1, "a positive integer", MAX_CHANNELS)
    out_channels = kernel_size = None
    weight: str | TensorRef | None = None
    kernels = tensor_bias = None
    if sources and sources[0] in TENSOR_KEYS:
        from cbr_cli.spec.weights_source import conv_weight_ref

        refs = conv_weight_ref(keys, weights)
        weight, tensor_bias = refs["weight"], refs.get("bias")
        _check_weight_shape(keys[sources[0]], weight.shape)
        out_channels, kernel_size = weight.shape[0], (weight.shape[2], weight.shape[3])
    elif "weight" in keys:
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
        _check_matches(
            keys["out_channels"], given, out_channels, sources, "{} output channels", weight
        )
        out_channels = given
    if out_channels is None:
        raise value.error("missing 'out_channels' (or give 'weight' or 'kernels')")
    if "kernel_size" in keys:
        given_ks = _int_pair(keys["kernel_size"], 1, "a positive integer")
        _check_matches(keys["kernel_size"], given_ks, kernel_size, sources, "kernel {}", weight)
        kernel_size = given_ks
    if kernel_size is None:
        kernel_size = (3, 3)
    if out_channels % groups:
        raise keys.get("groups", value).error(
            f"groups must divide out_channels ({out_channels}) (got groups={groups})"
        )

    bias: bool | ParamSource = not sources  # PyTorch's default bias is random; given weights: none
    if tensor_bias is not None:
        bias = ParamSource(tensor_bias, tensor_bias.where)
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
    value: Value,
    given: object,
    derived: object,
    sources: list[str],
    what: str,
    weight: str | TensorRef | None = None,
) -> None:
    """A key given alongside ``weight``/``kernels``/``from`` must agree with what they imply.

    ``what`` describes the implied value, ``{}`` standing for it (``"kernel {}"``); a
    disagreement with a weight file's tensor names the file and the tensor.
    """
    if isinstance(weight, TensorRef):
        from cbr_cli.spec.weights_source import check_stated

        check_stated(value, given, derived, weight, what)
    elif derived is not None and given != derived:
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


def parse_bn(value: Value, weights: WeightsFile | None = None) -> BNSpec:
    if isinstance(value.data, str):  # shorthand: `bn: batch` / `bn: running`
        return BNSpec(mode=_choice(value, BN_MODES), where={"mode": value.where})
    if value.data is True:
        return BNSpec(where={"mode": value.where})
    keys = _mapping(value, BN_KEYS)
    where = {key: v.where for key, v in keys.items()}
    tensor_keys = [k for k in TENSOR_KEYS if k in keys]
    if len(tensor_keys) > 1:
        raise keys["tensors"].error("give either 'from' or 'tensors', not both")
    # A trained BN's statistics are the model's eval mode: running, unless asked otherwise.
    default_mode = "running" if tensor_keys else "batch"
    mode = _choice(keys["mode"], BN_MODES) if "mode" in keys else default_mode
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
    params = {k: _param(keys[k]) for k in ("weight", "bias") if k in keys} | running
    if tensor_keys:  # the file's tensors, for what is not given explicitly
        from cbr_cli.spec.weights_source import BN_TENSORS, tensor_refs

        stats = {"running_mean", "running_var"}
        required = stats - set(running) if mode == "running" else set()
        for part, ref in tensor_refs(keys, weights, BN_TENSORS, required).items():
            if part not in params and (mode == "running" or part not in stats):
                params[part] = ParamSource(ref, ref.where)
    return BNSpec(
        mode=mode,
        eps=eps,
        momentum=momentum,
        weight=params.get("weight"),
        bias=params.get("bias"),
        running_mean=params.get("running_mean"),
        running_var=params.get("running_var"),
        where=where,
    )
