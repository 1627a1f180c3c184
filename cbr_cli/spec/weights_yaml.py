"""``cbr weights FILE --yaml``: a ready-to-edit pipeline YAML for a weight file.

* An ONNX or Keras model: its leading chain (:meth:`ModelChain.blocks`), geometry from the
  graph, tensors by name; where and why the chain stopped, as comments.
* A state_dict: its Conv -> BN blocks (:func:`cbr_cli.io.weights.detect_blocks`) while they
  chain (each conv reads the channels the one before makes).  A state_dict holds no
  geometry, so stride, padding, dilation, BN eps and the activation are placeholders
  (PyTorch's defaults, padding ``kernel_size // 2``), each marked ``PLACEHOLDER`` in a
  comment; ``groups`` follows from the shapes (1, or depthwise).

The text is YAML that :func:`cbr_cli.spec.yaml_reader.load_yaml` reads back as it is; the
weight file is named by its absolute path (the YAML may be saved anywhere).
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cbr_cli.io.weights import DetectedBlock, ModelChain

PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "~"}
PRESET_HINT = (
    "  # preset: imagenet  # the model's preprocessing: imagenet, imagenet-eval or minus1to1"
)
COMMENT_AT = 34  # column of the trailing comments


def scalar(value: Any) -> str:
    """``value`` as a YAML flow scalar/list that reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    text = str(value)
    if PLAIN.match(text) and text.lower() not in YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _line(indent: int, key: str, value: Any, comment: str = "") -> str:
    text = f"{' ' * indent}{key}: {scalar(value)}"
    if comment:
        text = f"{text.ljust(COMMENT_AT - 1)} # {comment}"
    return text


def _mapping(indent: int, data: dict[str, Any], comments: dict[str, str]) -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{' ' * indent}{key}:")
            lines += _mapping(indent + 2, value, {})
        else:
            lines.append(_line(indent, key, value, comments.get(key, "")))
    return lines


def _header(display: str, what: str) -> list[str]:
    return [f"# cbr pipeline for {display} ({what}), written by `cbr weights --yaml`."]


def model_yaml(chain: ModelChain, display: str) -> str:
    """The pipeline of a model's leading chain (geometry from the graph)."""
    blocks = chain.blocks()
    lines = _header(display, f"{chain.format} model")
    if chain.stopped_at is None:
        lines.append(f"# The whole graph: {chain.stop_reason}.")
    else:
        lines.append(f"# The chain stops before {chain.stopped_at!r}: {chain.stop_reason}.")
    lines += [f"# note: {note}" for note in chain.notes]
    lines.append(f"weights: {scalar(os.path.abspath(display))}")
    color = _color(blocks[0].conv.in_channels) if blocks else None
    lines.append("input:")
    if color:
        lines.append(_line(2, "color", color, f"its first conv takes {blocks[0].conv.in_channels}"))
    lines.append(PRESET_HINT)
    lines.append("layers:" if blocks else "layers: []  # no Conv at the start of the graph")
    for block in blocks:
        plain = block.to_plain()
        lines.append(f"  - name: {scalar(plain.pop('name'))}")
        for key, value in plain.items():
            if isinstance(value, dict):
                lines.append(f"    {key}:")
                lines += _mapping(6, value, {})
            else:
                lines.append(_line(4, key, value))
    return "\n".join(lines) + "\n"


def _color(channels: int) -> str | None:
    return {1: "gray", 3: "rgb"}.get(channels)


def state_dict_yaml(
    blocks: list[DetectedBlock], shapes: dict[str, tuple[int, ...]], display: str, fmt: str
) -> str:
    """The pipeline of a state_dict's detected blocks, geometry as marked placeholders."""
    lines = _header(display, f"a {fmt} state_dict")
    lines += [
        "# The file holds tensors, not the model's geometry: every value marked PLACEHOLDER",
        "# is a guess (PyTorch's defaults; padding kernel_size // 2) -- set it to the model's.",
        f"weights: {scalar(os.path.abspath(display))}",
    ]
    chained, stop = _chain(blocks)
    first = chained[0].in_channels_per_group if chained else 0
    lines.append("input:")
    if _color(first):
        lines.append(_line(2, "color", _color(first), f"the first conv takes {first}"))
    lines.append(PRESET_HINT)
    if not chained:
        lines.append("layers: []  # no conv weight (4-D '.weight') in the file")
        return "\n".join(lines) + "\n"
    lines.append("layers:")
    previous = None
    for block in chained:
        weight = shapes[f"{block.conv}.weight"]
        bias = "with bias" if block.has_bias else "no bias"
        kh, kw = block.kernel_size
        groups, why = 1, "from the shapes"
        if previous is not None and block.in_channels_per_group != previous:
            groups, why = previous, "from the shapes: depthwise"
        lines.append(f"  - name: {scalar(re.sub(r'[^A-Za-z0-9_.-]', '_', block.conv))}")
        lines.append("    conv:")
        lines.append(_line(6, "from", block.conv, f"{block.conv}.weight {weight}, {bias}"))
        lines.append(_line(6, "stride", 1, "PLACEHOLDER"))
        padding = kh // 2 if kh == kw else [kh // 2, kw // 2]
        lines.append(_line(6, "padding", padding, "PLACEHOLDER (kernel_size // 2)"))
        lines.append(_line(6, "dilation", 1, "PLACEHOLDER"))
        lines.append(_line(6, "groups", groups, why))
        if block.bn is not None:
            lines.append("    bn:")
            lines.append(_line(6, "from", block.bn, f"{block.bn}.running_mean etc."))
            lines.append(_line(6, "mode", "running", "the model's eval mode"))
            lines.append(_line(6, "eps", 1e-05, "PLACEHOLDER (PyTorch's default)"))
        else:
            lines.append("    # no BN found after this conv")
        lines.append(_line(4, "activation", "relu", "PLACEHOLDER (relu, leaky_relu or none)"))
        previous = block.out_channels
    if stop:
        lines.append(f"# {stop}")
    return "\n".join(lines) + "\n"


def _chain(blocks: list[DetectedBlock]) -> tuple[list[DetectedBlock], str]:
    """The blocks while each reads what the one before makes (same channels, or depthwise)."""
    chained: list[DetectedBlock] = []
    for block in blocks:
        if chained:
            before = chained[-1].out_channels
            if block.in_channels_per_group not in (before, 1):
                rest = len(blocks) - len(chained)
                return chained, (
                    f"stopped before {block.conv} ({rest} more conv(s)): it reads "
                    f"{block.in_channels_per_group} channels per group, the layer before "
                    f"makes {before} (a branch or a residual; see `cbr weights`)"
                )
        chained.append(block)
    return chained, ""
