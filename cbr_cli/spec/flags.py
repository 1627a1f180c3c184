"""Command-line flags → :class:`~cbr_cli.spec.pipeline_spec.PipelineSpec`.

Through the same validator as YAML.

Rules (documented in ``cbr apply --help`` and the README):

* No ``-c``: the flags describe one layer. Flags not given take PyTorch's defaults
  (stride 1, padding 0, dilation 1, groups 1, zeros padding, BN eps 1e-5 / momentum 0.1,
  LeakyReLU slope 0.01). The weights come from ``--kernel`` (bank names or one ``.npy``);
  with ``--out-channels``/``--kernel-size``/``--init``/``--seed`` and no ``--kernel`` they are
  random (PyTorch's init, 8 channels and 3x3 unless given); with none of these, the
  ``demo`` kernel set — so ``cbr apply IMAGE`` with no flags runs the demonstration
  pipeline: demo kernels → batch-stat BN → ReLU.
* With ``-c``: flags **override** the config's layer when it has exactly one layer
  (``--color`` overrides ``input.color`` for any config); with several layers a layer flag
  is an error naming the flag. Overriding keeps the rest of the layer: ``--eps`` or
  ``--momentum`` change the config's BN without changing its mode (a layer without BN
  needs ``--bn`` too); ``--kernel`` replaces the weight source together with the
  ``out_channels``/``kernel_size`` that came from it; an ``--activation`` other than
  leaky_relu drops the config's ``negative_slope``.
* ``--bn off`` with ``--eps`` or ``--momentum`` is an error (they would do nothing).
* ``--weights FILE --layers conv1+bn1,layer1.0.conv1+layer1.0.bn1``: one layer per
  comma-separated block, its conv's tensors ``from`` the name before ``+`` and its BN's
  (running statistics unless ``--bn batch``) from the one after (no ``+``: no BN); the
  layer flags (``--stride``, ``--padding``, ``--activation``, ...) apply to every block.
  With ``-c``, ``--weights`` replaces the config's ``weights:``.
* ``--model FILE`` (ONNX/Keras): the model's leading chain is the pipeline
  (:func:`model_spec`); ``--until NODE`` stops it after a node. Only ``--color`` and
  ``--preset`` may be given with it.
* ``--preset NAME`` sets ``input.preset`` (``imagenet``, ...) for any pipeline.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_spec import parse_pipeline
from cbr_cli.spec.pipeline_types import PipelineSpec
from cbr_cli.spec.yaml_reader import Value, from_flag, load_yaml

DEMO_KERNELS = "demo"
BN_FLAG_CHOICES = ("batch", "running", "off")


@dataclass
class LayerFlags:
    """Values of the layer flags; ``None`` means "not given"."""

    out_channels: int | None = None
    kernel: list[str] | None = None
    kernel_size: str | None = None
    stride: str | None = None
    padding: str | None = None
    padding_mode: str | None = None
    dilation: str | None = None
    groups: int | None = None
    bias: bool | None = None
    flip: bool | None = None
    init: str | None = None
    seed: int | None = None
    bn: str | None = None
    eps: str | None = None
    momentum: str | None = None
    activation: str | None = None
    negative_slope: str | None = None
    color: str | None = None
    preset: str | None = None
    weights: str | None = None
    layers: str | None = None
    model: str | None = None
    until: str | None = None

    def given(self) -> list[str]:
        """Flag names (``--stride``) of the layer flags that were given."""
        return [
            "--" + name.replace("_", "-")
            for name, value in vars(self).items()
            if value is not None and name not in NOT_LAYER_FLAGS
        ]


NOT_LAYER_FLAGS = ("color", "preset", "weights", "layers", "model", "until")
"""Fields of :class:`LayerFlags` that describe the input or the weights, not one layer."""


def _pair_text(text: str, flag: str) -> Value:
    """``3`` → 3, ``3x5`` / ``3,5`` → [3, 5], ``same`` → 'same' (validated later)."""
    cleaned = text.strip().lower()
    for sep in ("x", ","):
        if sep in cleaned:
            parts = [p.strip() for p in cleaned.split(sep)]
            if len(parts) != 2 or not all(_INT_TEXT.fullmatch(p) for p in parts):
                shown = (
                    repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text)} characters)"
                )
                raise CbrError(f"{flag}: expected N or HxW with integers (got {shown})")
            return from_flag([int(p) for p in parts], flag)
    return from_flag(_number(cleaned), flag)


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,4000}")
"""An integer as text: ASCII digits (``str.isdigit`` accepts '²', which ``int`` refuses),
fewer than the 4300 that ``int(str)`` converts; the spec checks its range."""


def _number(text: str) -> Any:
    return int(text) if _INT_TEXT.fullmatch(text) else text


def _conv_values(flags: LayerFlags) -> dict[str, Value]:
    conv: dict[str, Value] = {}
    if flags.kernel:
        npy = [k for k in flags.kernel if k.lower().endswith(".npy")]
        if npy and len(flags.kernel) > 1:
            raise CbrError(
                f"--kernel: give either one .npy weight file or kernel names, not both "
                f"(got {', '.join(flags.kernel)})"
            )
        if npy:
            conv["weight"] = from_flag(npy[0], "--kernel")
        else:
            conv["kernels"] = from_flag(list(flags.kernel), "--kernel")
    for name in ("kernel_size", "stride", "padding", "dilation"):
        text = getattr(flags, name)
        if text is not None:
            conv[name] = _pair_text(text, "--" + name.replace("_", "-"))
    for name in ("out_channels", "padding_mode", "groups", "bias", "flip", "init", "seed"):
        value = getattr(flags, name)
        if value is not None:
            conv[name] = from_flag(value, "--" + name.replace("_", "-"))
    return conv


def _bn_value(flags: LayerFlags) -> Value | None:
    """The BN the flags describe: None if no BN flag was given.

    A mapping holds only what was given (``mode`` only with ``--bn``), so that it can be
    merged into a config's BN; ``--bn off`` is a null value.
    """
    if flags.bn is not None and flags.bn not in BN_FLAG_CHOICES:
        close = difflib.get_close_matches(flags.bn, BN_FLAG_CHOICES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CbrError(f"--bn: expected one of {list(BN_FLAG_CHOICES)} (got {flags.bn!r}){hint}")
    given = (("--eps", flags.eps), ("--momentum", flags.momentum))
    tuning = [(flag, value) for flag, value in given if value is not None]
    if flags.bn == "off":
        if tuning:
            raise CbrError(f"{tuning[0][0]}: has no effect with --bn off")
        return from_flag(None, "--bn")
    if flags.bn is None and not tuning:
        return None
    bn = {} if flags.bn is None else {"mode": from_flag(flags.bn, "--bn")}
    for flag, value in tuning:
        bn[flag.lstrip("-")] = from_flag(value, flag)
    return Value(bn, "--bn", "bn", os.getcwd())


def _layer_values(flags: LayerFlags, defaults_for_new: bool) -> dict[str, Value]:
    conv = _conv_values(flags)
    random_requested = any(k in conv for k in ("out_channels", "kernel_size", "init", "seed"))
    if defaults_for_new and "weight" not in conv and "kernels" not in conv:
        if random_requested:
            conv.setdefault("out_channels", from_flag(8, "--out-channels"))
        else:
            conv["kernels"] = from_flag([DEMO_KERNELS], "--kernel")
    layer: dict[str, Value] = {"conv": Value(conv, "flags", "conv", os.getcwd())}
    bn = _bn_value(flags)
    if bn is not None:
        layer["bn"] = bn
    elif defaults_for_new:
        layer["bn"] = Value({"mode": from_flag("batch", "--bn")}, "--bn", "bn", os.getcwd())
    if flags.activation is not None:
        layer["activation"] = from_flag(flags.activation, "--activation")
    if flags.negative_slope is not None:
        layer["negative_slope"] = from_flag(flags.negative_slope, "--negative-slope")
    return layer


def build_spec(config: str | os.PathLike[str] | None, flags: LayerFlags) -> PipelineSpec:
    """The pipeline from ``-c FILE`` and/or layer flags (see the module docstring)."""
    if flags.model is not None:
        return _model_spec(config, flags)
    if flags.until is not None:
        raise CbrError("--until: only with --model (it stops a model's chain after a node)")
    if flags.layers is not None:
        if config is not None:
            raise CbrError(f"--layers: not with -c (the layers are those of {os.fspath(config)})")
        if flags.weights is None:
            raise CbrError("--layers: give --weights FILE too (the file the tensors are in)")
        return _weights_spec(flags)
    if config is None:
        if flags.weights is not None:
            raise CbrError(
                "--weights: say which tensors to run with --layers conv1+bn1,... "
                f"(`cbr weights {flags.weights}` lists the blocks it finds)"
            )
        layer = _layer_values(flags, defaults_for_new=True)
        top = {"layers": Value([Value(layer, "flags", "layers[0]", os.getcwd())], "flags")}
        root = Value(top, "flags", "", os.getcwd())
        input_flags(root, flags)
        return parse_pipeline(root, "flags")

    root = load_yaml(config)
    if flags.weights is not None and isinstance(root.data, dict):
        root.data["weights"] = from_flag(flags.weights, "--weights")
    given = flags.given()
    input_flags(root, flags)
    if given:
        _override(root, flags, given, os.fspath(config))
    return parse_pipeline(root, os.fspath(config))


def input_flags(root: Value, flags: LayerFlags) -> None:
    """``--color`` and ``--preset`` into the ``input:`` of ``root`` (a pipeline mapping)."""
    if not isinstance(root.data, dict):
        return  # parse_pipeline reports the shape error
    for key in ("preset", "color"):
        value = getattr(flags, key)
        if value is None:
            continue
        inp = root.data.get("input")
        if inp is None or not isinstance(inp.data, dict):
            inp = Value({}, f"--{key}", "input", os.getcwd())
            root.data["input"] = inp
        inp.data[key] = from_flag(value, f"--{key}")


def _blocks(text: str) -> list[tuple[str, str | None]]:
    """``conv1+bn1,conv2`` -> ``[("conv1", "bn1"), ("conv2", None)]``."""
    blocks = []
    for item in text.split(","):
        parts = [p.strip() for p in item.split("+")]
        if not 1 <= len(parts) <= 2 or not all(parts):
            shown = repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"
            raise CbrError(
                "--layers: expected CONV+BN blocks separated by commas, e.g. "
                f"conv1+bn1,layer1.0.conv1+layer1.0.bn1 (got {shown})"
            )
        blocks.append((parts[0], parts[1] if len(parts) == 2 else None))
    return blocks


def _weights_spec(flags: LayerFlags) -> PipelineSpec:
    """``--weights FILE --layers conv1+bn1,...``: one layer per block, the layer flags for all."""
    if flags.kernel:
        raise CbrError("--kernel: not with --layers (the weights come from --weights)")
    cwd = os.getcwd()
    layers = []
    for index, (conv, bn) in enumerate(_blocks(flags.layers or "")):
        values = _layer_values(flags, defaults_for_new=False)
        values["name"] = from_flag(re.sub(r"[^A-Za-z0-9_.-]", "_", conv).lstrip(".-"), "--layers")
        values["conv"].data["from"] = from_flag(conv, "--layers")
        if bn is not None:
            bn_value = values.get("bn") or Value({}, "--layers", "bn", cwd)
            if not isinstance(bn_value.data, dict):
                raise CbrError(f"--bn off: --layers names a BN ({bn!r}); drop it or the flag")
            bn_value.data["from"] = from_flag(bn, "--layers")
            values["bn"] = bn_value
        layers.append(Value(values, "--layers", f"layers[{index}]", cwd))
    top = {
        "weights": from_flag(flags.weights, "--weights"),
        "layers": Value(layers, "--layers", "layers", cwd),
    }
    root = Value(top, "flags", "", cwd)
    input_flags(root, flags)
    return parse_pipeline(root, "flags")


def _model_spec(config: str | os.PathLike[str] | None, flags: LayerFlags) -> PipelineSpec:
    """``--model FILE`` (:mod:`cbr_cli.spec.model_spec`): only --color/--preset besides."""
    display = flags.model or ""
    hint = f"`cbr weights {display} --yaml` writes the model's pipeline as a YAML to edit"
    if config is not None:
        raise CbrError(f"--model: not with -c (the model's graph is the pipeline; {hint})")
    for flag, value in (("--weights", flags.weights), ("--layers", flags.layers)):
        if value is not None:
            raise CbrError(f"{flag}: not with --model (the model file holds the weights)")
    given = flags.given()
    if given:
        raise CbrError(f"{given[0]}: not with --model (the graph gives the layers; {hint})")
    from cbr_cli.spec.model_spec import model_tree

    root, weights, notes = model_tree(display, flags.until)
    input_flags(root, flags)
    return parse_pipeline(root, display, weights, notes)


def _override(root: Value, flags: LayerFlags, given: list[str], name: str) -> None:
    if not isinstance(root.data, dict):
        return  # parse_pipeline reports the shape error
    if not given:
        return
    layers = root.data.get("layers")
    if layers is None or not isinstance(layers.data, list) or len(layers.data) != 1:
        count = len(layers.data) if layers is not None and isinstance(layers.data, list) else 0
        raise CbrError(
            f"{given[0]}: layer flags override a config with exactly one layer, but "
            f"{name} has {count} layers; edit the file instead"
        )
    layer = layers.data[0]
    if not isinstance(layer.data, dict):
        return
    new = _layer_values(flags, defaults_for_new=False)
    conv = layer.data.get("conv")
    if conv is not None and isinstance(conv.data, dict):
        if "weight" in new["conv"].data or "kernels" in new["conv"].data:
            # A new weight source: what the config derived from its old one goes too.
            for key in ("weight", "kernels", "init", "seed", "out_channels", "kernel_size"):
                conv.data.pop(key, None)
        conv.data.update(new["conv"].data)
    if "bn" in new:
        layer.data["bn"] = _merge_bn(layer.data.get("bn"), new["bn"], flags)
    if "activation" in new:
        layer.data["activation"] = new["activation"]
        if flags.activation != "leaky_relu" and "negative_slope" not in new:
            layer.data.pop("negative_slope", None)
    if "negative_slope" in new:
        layer.data["negative_slope"] = new["negative_slope"]


def _merge_bn(existing: Value | None, new: Value, flags: LayerFlags) -> Value:
    """The config's BN (``existing``) with the BN flags (``new``) applied."""
    if not isinstance(new.data, dict):  # --bn off
        return new
    old = existing.data if existing is not None else None
    if "mode" in new.data:
        # --bn MODE: the flags decide the mode; the config's affine parameters, eps and
        # momentum stay, its running statistics only if the mode is still running.
        merged = dict(old) if isinstance(old, dict) else {}
        if new.data["mode"].data != "running":
            merged.pop("running_mean", None)
            merged.pop("running_var", None)
    elif old in (None, False, "off", "none"):
        flag = "--eps" if flags.eps is not None else "--momentum"
        raise CbrError(f"{flag}: the config's layer has no bn; give --bn batch or --bn running too")
    elif isinstance(old, dict):
        merged = dict(old)
    elif old is True:
        merged = {}
    else:  # the shorthand `bn: batch` / `bn: running` (parse_bn reports anything else)
        merged = {"mode": existing}  # type: ignore[dict-item]
    merged.update(new.data)
    key_where = existing.key_where if existing is not None else {}
    return Value(merged, new.where, "bn", new.base_dir, key_where)
