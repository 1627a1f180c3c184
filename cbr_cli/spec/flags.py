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
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_spec import PipelineSpec, parse_pipeline
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

    def given(self) -> list[str]:
        """Flag names (``--stride``) of the layer flags that were given."""
        return [
            "--" + name.replace("_", "-")
            for name, value in vars(self).items()
            if value is not None and name != "color"
        ]


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
    if config is None:
        layer = _layer_values(flags, defaults_for_new=True)
        top = {"layers": Value([Value(layer, "flags", "layers[0]", os.getcwd())], "flags")}
        if flags.color is not None:
            top["input"] = Value({"color": from_flag(flags.color, "--color")}, "--color")
        return parse_pipeline(Value(top, "flags", "", os.getcwd()), "flags")

    root = load_yaml(config)
    given = flags.given()
    if given or flags.color is not None:
        _override(root, flags, given, os.fspath(config))
    return parse_pipeline(root, os.fspath(config))


def _override(root: Value, flags: LayerFlags, given: list[str], name: str) -> None:
    if not isinstance(root.data, dict):
        return  # parse_pipeline reports the shape error
    if flags.color is not None:
        inp = root.data.get("input")
        if inp is None or not isinstance(inp.data, dict):
            inp = Value({}, "--color", "input", os.getcwd())
            root.data["input"] = inp
        inp.data["color"] = from_flag(flags.color, "--color")
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
