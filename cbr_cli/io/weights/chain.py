"""The leading layers of a model, as plain descriptions that map 1:1 onto cbr's pipeline.

A :class:`ModelChain` is what :func:`cbr_cli.io.weights.read_model` finds in an ONNX or
Keras file: the layers from the graph's input up to the first one cbr cannot run, with
PyTorch's conventions throughout (OIHW weights, torch's BatchNorm momentum, symmetric
``(pad_h, pad_w)`` padding or ``"same"`` with TensorFlow's split).  :meth:`ModelChain.blocks`
groups them into cbr layers (Conv -> optional BN -> optional activation) and
:meth:`Block.to_plain` gives the ``layers:`` entry of a pipeline YAML for one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ConvLayer:
    """A ``Conv2d``; ``weight`` of shape (C_out, C_in/groups, kH, kW), float32/float64.

    ``padding`` is what cbr's ``conv.padding`` accepts: ``(pad_h, pad_w)`` (both sides) or
    ``"same"`` (TensorFlow's split: the odd extra row/column after).  ``pads`` is the
    resolved ``(top, left, bottom, right)`` of an explicit padding, ``None`` for ``same``.
    ``weight_name``/``bias_name`` are the tensors' names in the file.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    pads: tuple[int, int, int, int] | None = (0, 0, 0, 0)
    weight_name: str = ""
    bias_name: str | None = None

    kind = "conv"

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])


@dataclass(frozen=True)
class BNLayer:
    """A ``BatchNorm2d`` in eval mode; ``momentum`` in PyTorch's meaning.

    (ONNX's and Keras' momentum ``m`` weighs the old running value: torch's is ``1 - m``.)
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float = 1e-5
    momentum: float = 0.1
    tensor_names: dict[str, str] = field(default_factory=dict)

    kind = "bn"

    @property
    def num_features(self) -> int:
        return int(self.running_mean.shape[0])


@dataclass(frozen=True)
class ActLayer:
    """``relu`` or ``leaky_relu`` (with ``negative_slope``), cbr's ``activation`` names."""

    name: str
    activation: str
    negative_slope: float = 0.01

    kind = "activation"


@dataclass(frozen=True)
class PoolLayer:
    """``MaxPool2d`` (``pool="max"``) or ``AvgPool2d`` (``"avg"``); not runnable by cbr yet."""

    name: str
    pool: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True

    kind = "pool"


Layer = ConvLayer | BNLayer | ActLayer | PoolLayer


@dataclass(frozen=True)
class Block:
    """One cbr layer: a conv, the BN right after it (if any), then an activation (if any)."""

    conv: ConvLayer
    bn: BNLayer | None = None
    act: ActLayer | None = None

    @property
    def name(self) -> str:
        return self.conv.name

    def to_plain(self) -> dict[str, Any]:
        """The ``layers:`` entry of a pipeline (geometry only; tensors come ``from:`` names).

        ``from`` is given when the tensors are named ``<prefix>.weight``/``<prefix>.bias``
        (PyTorch's naming); otherwise the tensor names are listed under ``tensors``.
        """
        c = self.conv
        conv: dict[str, Any] = {
            "out_channels": c.out_channels,
            "kernel_size": list(c.kernel_size),
            "stride": list(c.stride),
            "padding": c.padding if isinstance(c.padding, str) else list(c.padding),
            "dilation": list(c.dilation),
            "groups": c.groups,
        }
        prefix = _prefix(c.weight_name, "weight")
        if prefix is not None and c.bias_name in (None, f"{prefix}.bias"):
            conv = {"from": prefix, **conv}
        else:
            conv["tensors"] = {"weight": c.weight_name, "bias": c.bias_name}
        entry: dict[str, Any] = {"name": _safe_name(c.name), "conv": conv}
        if self.bn is not None:
            bn: dict[str, Any] = {"mode": "running", "eps": self.bn.eps}
            names = self.bn.tensor_names
            prefixes = {_prefix(names.get(k, ""), k) for k in names}
            if len(prefixes) == 1 and None not in prefixes and names:
                bn = {"from": prefixes.pop(), **bn}
            elif names:
                bn["tensors"] = dict(names)
            entry["bn"] = bn
        if self.act is None:
            entry["activation"] = "none"
        else:
            entry["activation"] = self.act.activation
            if self.act.activation == "leaky_relu":
                entry["negative_slope"] = self.act.negative_slope
        return entry


@dataclass(frozen=True)
class ModelChain:
    """The leading chain of a model file.

    Attributes
    ----------
    path, format : str
        ``format`` is ``onnx`` or ``keras``.
    input_name : str
        The graph input the chain starts from.
    input_shape : tuple of (int or None), or None
        As declared, NCHW (Keras' NHWC reordered); None for unknown dimensions.
    layers : tuple of ConvLayer, BNLayer, ActLayer, PoolLayer
        In order.
    stopped_at : str or None
        The node/layer the chain stopped at (not included), None at the graph's end.
    stop_reason : str
        One line: why it stopped (first unsupported op, a branch, ``until``, the end).
    notes : tuple of str
        E.g. a Conv with no BatchNormalization after it (BN probably folded).
    """

    path: str
    format: str
    input_name: str
    input_shape: tuple[int | None, ...] | None
    layers: tuple[Layer, ...]
    stopped_at: str | None
    stop_reason: str
    notes: tuple[str, ...] = ()

    def blocks(self) -> list[Block]:
        """Group :attr:`layers` into cbr layers, up to the first pool (which cbr cannot run)."""
        blocks: list[Block] = []
        for layer in self.layers:
            if isinstance(layer, ConvLayer):
                blocks.append(Block(layer))
            elif isinstance(layer, BNLayer):
                blocks[-1] = Block(blocks[-1].conv, layer, None)
            elif isinstance(layer, ActLayer):
                last = blocks[-1]
                blocks[-1] = Block(last.conv, last.bn, layer)
            else:
                break
        return blocks


def _prefix(name: str | None, leaf: str) -> str | None:
    if name and name.endswith("." + leaf):
        return name[: -len(leaf) - 1]
    return None


def _safe_name(name: str) -> str:
    """A layer name cbr accepts (letters, digits, ``_ . -``; used in file names)."""
    out = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in name).lstrip(".-")
    return out or "layer"


ORDER = "cbr layers are Conv -> BN -> activation"


class ChainBuilder:
    """Collects layers in an order cbr can run: Conv, then optional BN, then activation.

    :meth:`refuse` says why a layer cannot come next (None if it can); :meth:`add`
    appends it, checking channel counts against the layer before (a mismatch is a broken
    file, reported naming the file and the layer).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.layers: list[Layer] = []

    def refuse(self, layer: Layer) -> str | None:
        prev = self.layers[-1] if self.layers else None
        if isinstance(layer, BNLayer) and not isinstance(prev, ConvLayer):
            return f"a BatchNormalization not right after a Conv ({ORDER})"
        if isinstance(layer, ActLayer) and not isinstance(prev, ConvLayer | BNLayer):
            return f"an activation not after a Conv or BatchNormalization ({ORDER})"
        if isinstance(layer, PoolLayer) and (prev is None or isinstance(prev, PoolLayer)):
            return "a pooling layer not after a Conv block"
        return None

    def add(self, layer: Layer) -> None:
        from cbr_cli.errors import CbrError

        channels = self.channels()
        if isinstance(layer, BNLayer) and layer.num_features != channels:
            raise CbrError(
                f"{self.path}: {layer.name}: BatchNormalization over {layer.num_features} "
                f"channels after a conv with {channels} output channels"
            )
        if isinstance(layer, ConvLayer) and channels is not None and layer.in_channels != channels:
            raise CbrError(
                f"{self.path}: {layer.name}: conv expects {layer.in_channels} input channels, "
                f"the layer before gives {channels}"
            )
        self.layers.append(layer)

    def channels(self) -> int | None:
        for layer in reversed(self.layers):
            if isinstance(layer, ConvLayer):
                return layer.out_channels
        return None

    def folded_notes(self, exporter: str) -> list[str]:
        """A note per Conv with no BN after it: BN was probably folded into it."""
        notes = []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, ConvLayer):
                continue
            after = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(after, BNLayer) or after is None:
                continue
            if layer.bias is not None:
                notes.append(
                    f"{layer.name}: conv with a bias and no BatchNormalization after it: BN is "
                    f"probably folded into its weight and bias ({exporter}), shown as it is"
                )
            else:
                notes.append(f"{layer.name}: conv with no BatchNormalization after it")
        return notes
