"""Parameters taken from a weight file: the top-level ``weights:`` and ``from:``/``tensors:``.

A pipeline names one weight file (``weights: model.pth``, relative to the YAML; ``--weights``
or ``--model`` on the command line) and its layers name tensors in it::

    conv: {from: conv1, stride: 2, padding: 3}   # conv1.weight, and conv1.bias if present
    bn: {from: bn1}                              # bn1.weight/.bias/.running_mean/.running_var
    conv: {tensors: {weight: "onnx::Conv_39", bias: "onnx::Conv_40"}}   # any names

The file is read twice at most, each time once for the whole pipeline: its header when the
pipeline is parsed (names, shapes and dtypes: every shape check, ``cbr shape``), and the
data of the tensors the pipeline uses when it first runs (:meth:`WeightsFile.array`).
An ONNX or Keras model file gives the tensors of its leading chain in cbr's layout
(OIHW convs), read with :func:`cbr_cli.io.weights.read_model`.

Every message is one line, ``WHERE: FILE: TENSOR: what``, e.g.
``net.yaml:4:11: layers[0].conv.from: model.pth: conv1.weight: no such tensor (...)``.
No numpy at import (``cbr shape`` without weights stays light).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cbr_cli.errors import CbrError
from cbr_cli.spec.yaml_reader import Value

if TYPE_CHECKING:
    import numpy as np

    from cbr_cli.io.weights import ModelChain

CONV_TENSORS = ("weight", "bias")
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
MODEL_FORMATS = ("onnx", "keras")


class WeightsFile:
    """One weight file: its tensors' shapes now, their data on first use.

    Attributes
    ----------
    path : str
        The file (absolute, or as given on the command line).
    display : str
        The file as the user wrote it; every tensor message starts with it.
    format : str
        ``safetensors``, ``npz``, ``torch``, ``onnx`` or ``keras``.
    shapes : dict of str to tuple of int
        Every tensor the pipeline may name.
    notes : list of str
        Conversions made while reading (``bn1.weight: float16 converted to float32``).
    """

    def __init__(
        self,
        path: str,
        display: str,
        format: str,
        shapes: dict[str, tuple[int, ...]],
        tensors: dict[str, np.ndarray] | None = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.display = display
        self.format = format
        self.shapes = shapes
        self.notes = list(notes)
        self.needed: set[str] = set()
        self._tensors = tensors
        self.input_shape: tuple[int, int, int] | None = None
        """A model's declared input (C, H, W), when every size is known."""

    def __repr__(self) -> str:
        return f"WeightsFile({self.display!r}, {self.format}, {len(self.shapes)} tensors)"

    def ref(self, name: str, where: str) -> TensorRef:
        """A reference to tensor ``name``; an unknown one is an error at ``where``."""
        if name not in self.shapes:
            from cbr_cli.io.weights import missing_tensor

            raise CbrError(f"{where}: {missing_tensor(self.display, name, self.shapes).message}")
        self.needed.add(name)
        return TensorRef(self, name, where)

    def error(self, where: str, name: str, message: str) -> CbrError:
        """``WHERE: FILE: TENSOR: message``."""
        return CbrError(f"{where}: {self.display}: {name}: {message}")

    def array(self, name: str) -> np.ndarray:
        """Tensor ``name`` (float32/float64, read-only); the first call reads every needed one."""
        if self._tensors is None:
            from cbr_cli.io.weights import read_tensors

            read = read_tensors(self.path, sorted(self.needed))
            self._tensors = dict(read.tensors)
            self.notes.extend(read.notes)
        return self._tensors[name]


@dataclass(frozen=True)
class TensorRef:
    """A tensor of a :class:`WeightsFile`, named where the pipeline names it."""

    file: WeightsFile = field(compare=False)
    name: str
    where: str = field(compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.file.shapes[self.name]

    def error(self, message: str, where: str | None = None) -> CbrError:
        return self.file.error(where or self.where, self.name, message)

    def __str__(self) -> str:
        return f"{self.file.display}: {self.name}"


# ---------------------------------------------------------------- opening


def open_weights(value: Value) -> WeightsFile:
    """The top-level ``weights:`` (or ``--weights``): a path relative to the YAML."""
    if not isinstance(value.data, str) or not value.data.strip():
        raise value.error("expected a path to a weight file (got a non-text value)")
    path = os.path.normpath(os.path.join(value.base_dir, os.path.expanduser(value.data)))
    from cbr_cli.io.weights import file_format, read_model, read_tensors

    try:
        fmt = file_format(path)
        if fmt in MODEL_FORMATS:
            return from_chain(read_model(path), value.data)
        read = read_tensors(path, ())
    except CbrError as exc:
        raise CbrError(f"{value.where}: {exc.message}", exc.exit_code) from None
    return WeightsFile(path, value.data, fmt, read.shapes(), notes=read.notes)


def from_chain(chain: ModelChain, display: str) -> WeightsFile:
    """The tensors of a model's leading chain (already read, OIHW), by their names."""
    tensors: dict[str, Any] = {}
    for block in chain.blocks():
        conv, bn = block.conv, block.bn
        tensors[conv.weight_name] = conv.weight
        if conv.bias_name is not None and conv.bias is not None:
            tensors[conv.bias_name] = conv.bias
        if bn is not None:
            for key, name in bn.tensor_names.items():
                tensors[name] = getattr(bn, key)
    shapes = {name: tuple(int(d) for d in array.shape) for name, array in tensors.items()}
    weights = WeightsFile(chain.path, display, chain.format, shapes, tensors)
    declared = chain.input_shape
    if declared is not None and len(declared) == 4 and all(declared[1:]):
        weights.input_shape = (int(declared[1]), int(declared[2]), int(declared[3]))
    return weights


def chain_notes(chain: ModelChain, display: str) -> tuple[str, ...]:
    """One line on where (and why) the chain stopped, then the reader's notes."""
    blocks = chain.blocks()
    if chain.stopped_at is None:
        where = f"{display}: ran the whole graph ({len(blocks)} block(s)): {chain.stop_reason}"
    else:
        where = (
            f"{display}: the chain stops before {chain.stopped_at!r} after {len(blocks)} "
            f"block(s): {chain.stop_reason}"
        )
    return (where, *(f"{display}: {note}" for note in chain.notes))


# ---------------------------------------------------------------- layers


def _name(value: Value, what: str) -> str:
    if not isinstance(value.data, str) or not value.data.strip():
        shown = "a mapping" if isinstance(value.data, dict) else repr(value.data)
        raise value.error(f"expected {what} (got {shown})")
    return value.data.strip()


def _needs_file(value: Value, weights: WeightsFile | None) -> WeightsFile:
    if weights is None:
        raise value.error(
            "names tensors, but the pipeline has no weight file (add a top-level "
            "'weights: FILE', or --weights FILE)"
        )
    return weights


def tensor_refs(
    keys: dict[str, Value], weights: WeightsFile | None, parts: tuple[str, ...], required: set[str]
) -> dict[str, TensorRef]:
    """The tensors a layer's ``from: PREFIX`` or ``tensors: {part: NAME}`` names.

    ``from`` takes ``PREFIX.part`` for every part the file has; the ``required`` ones must
    be there. ``tensors`` maps parts to names (null: none).
    """
    if "from" in keys:
        value = keys["from"]
        file = _needs_file(value, weights)
        prefix = _name(value, "a module name, e.g. conv1 (its tensors are conv1.weight, ...)")
        refs = {}
        for part in parts:
            name = f"{prefix}.{part}"
            if name in file.shapes or part in required:
                refs[part] = file.ref(name, value.where)
        if not refs:  # none of them: say which one was looked for first
            file.ref(f"{prefix}.{parts[0]}", value.where)
        return refs
    value = keys["tensors"]
    file = _needs_file(value, weights)
    if not isinstance(value.data, dict):
        raise value.error(f"expected a mapping of {list(parts)} to tensor names")
    refs = {}
    for part, item in value.data.items():
        if part not in parts:
            where = value.key_where.get(part, item.where)
            raise CbrError(f"{where}: unknown key (expected some of {list(parts)})")
        if item.data is not None:
            refs[part] = file.ref(_name(item, "a tensor name"), item.where)
    for part in sorted(required - set(refs)):
        raise value.error(f"missing {part!r} (the tensor name of the {part})")
    return refs


def conv_weight_ref(keys: dict[str, Value], weights: WeightsFile | None) -> dict[str, TensorRef]:
    """``{"weight": ref, "bias": ref?}`` of a conv's ``from:``/``tensors:``, weight checked 4-D."""
    refs = tensor_refs(keys, weights, CONV_TENSORS, {"weight"})
    weight = refs["weight"]
    shape = weight.shape
    if len(shape) != 4 or min(shape) < 1:
        raise weight.error(
            f"expected a conv weight of shape (out_channels, in_channels/groups, kH, kW), "
            f"got {shape}"
        )
    bias = refs.get("bias")
    if bias is not None and bias.shape != (shape[0],):
        raise bias.error(f"expected shape ({shape[0]},), got {bias.shape}")
    return refs


def check_stated(
    value: Value, given: object, derived: object, weight: TensorRef, what: str
) -> None:
    """A stated ``out_channels``/``kernel_size`` must be what the weight tensor has."""
    if given != derived:
        shown = list(given) if isinstance(given, tuple) else given
        has = what.format(list(derived) if isinstance(derived, tuple) else derived)
        raise weight.error(f"has {has} (shape {weight.shape}), got {shown}", value.where)
