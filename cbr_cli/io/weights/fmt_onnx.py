"""``.onnx`` graphs: the leading Conv / BatchNormalization / Relu / LeakyRelu chain.

Read with the ``onnx`` package (``onnx.load_model_from_string`` on bytes read through a
bounded regular-file check, external data refused, every initializer's declared size
checked before ``onnx.numpy_helper.to_array``).  Geometry comes from the node attributes
(ONNX defaults in brackets): Conv ``strides`` [1], ``pads`` [0] as (top, left, bottom,
right), ``dilations`` [1], ``group`` [1], ``auto_pad`` [NOTSET]; BatchNormalization
``epsilon`` [1e-5], ``momentum`` [0.9, weighing the old value: torch's is 1 - it];
LeakyRelu ``alpha`` [0.01]; MaxPool/AveragePool ``kernel_shape``, ``strides``, ``pads``,
``ceil_mode`` [0], ``count_include_pad`` [0].
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.io.weights.chain import (
    ActLayer,
    BNLayer,
    ChainBuilder,
    ConvLayer,
    ModelChain,
    PoolLayer,
)
from cbr_cli.io.weights.tensorfile import (
    Budget,
    TensorFile,
    TensorInfo,
    numel,
    read_weights,
    select,
    tensor_error,
    to_float,
)

MAX_MODEL = (2 << 30) - 1  # protobuf's own limit for one message
SUPPORTED = "Conv, BatchNormalization, Relu, LeakyRelu (and MaxPool/AveragePool)"
FOLDED_BY = "torch.onnx.export folds it in eval mode"


def _onnx(path: str):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CbrError(
            f"{path}: reading .onnx needs the 'onnx' package (pip install 'cbr-cli[onnx]')"
        ) from None
    return onnx, numpy_helper


def load(path: str):
    """The parsed ``ModelProto``; a file that is not one is a one-line error."""
    onnx, _ = _onnx(path)
    from google.protobuf.message import DecodeError

    data = read_weights(path, MAX_MODEL, "ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CbrError(f"{path}: not a valid ONNX model ({reason})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise CbrError(f"{path}: not a valid ONNX model (no graph nodes)")
    return model


class Constants:
    """Initializers and Constant-node outputs of a graph, converted on demand."""

    def __init__(self, path: str, model, budget: Budget) -> None:
        _, self.numpy_helper = _onnx(path)
        self.path = path
        self.budget = budget
        self.protos = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        self.protos[node.output[0]] = attr.t
        self.notes: list[str] = []

    def info(self, name: str) -> TensorInfo:
        proto = self.protos[name]
        return TensorInfo(name, tuple(int(d) for d in proto.dims), _dtype_name(proto))

    def array(self, name: str, display: str | None = None) -> np.ndarray:
        proto = self.protos[name]
        display = display or name
        from onnx import TensorProto

        if proto.data_location == TensorProto.EXTERNAL:
            raise tensor_error(
                self.path, display, "stored as external data, which cbr does not read"
            )
        dims = tuple(int(d) for d in proto.dims)
        if min(dims, default=0) < 0:
            raise tensor_error(self.path, display, f"negative dimension in {dims}")
        helper = self.numpy_helper
        try:
            dtype = helper.helper.tensor_dtype_to_np_dtype(proto.data_type)
        except (KeyError, ValueError, TypeError):
            raise tensor_error(
                self.path, display, f"unsupported ONNX data type {proto.data_type}"
            ) from None
        if dtype.kind not in "biuf" and _dtype_name(proto) != "bfloat16":
            raise tensor_error(self.path, display, f"unsupported dtype {dtype}")
        count = numel(dims)
        itemsize = 2 if _dtype_name(proto) == "bfloat16" else dtype.itemsize
        if proto.HasField("raw_data"):
            stored = len(proto.raw_data) // max(itemsize, 1)
        else:
            stored = max(
                len(proto.float_data),
                len(proto.int32_data),
                len(proto.int64_data),
                len(proto.double_data),
                len(proto.uint64_data),
            )
        if stored != count:
            raise tensor_error(
                self.path,
                display,
                f"dims {dims} declare {count} values, the initializer holds {stored}",
            )
        self.budget.charge(count * max(itemsize, 4), display)
        try:
            array = helper.to_array(proto)
        except (ValueError, TypeError) as exc:
            raise tensor_error(self.path, display, f"cannot decode ({exc})") from None
        if array.dtype.kind not in "biuf":  # ml_dtypes' bfloat16 and friends
            array = array.astype(np.float32)
        return to_float(np.array(array), display, _dtype_name(proto), self.notes, self.budget)


def _dtype_name(proto) -> str:
    from onnx import TensorProto

    names = {
        TensorProto.FLOAT: "float32",
        TensorProto.DOUBLE: "float64",
        TensorProto.FLOAT16: "float16",
        TensorProto.BFLOAT16: "bfloat16",
        TensorProto.INT64: "int64",
        TensorProto.INT32: "int32",
        TensorProto.INT8: "int8",
        TensorProto.UINT8: "uint8",
        TensorProto.BOOL: "bool",
    }
    return names.get(proto.data_type, TensorProto.DataType.Name(proto.data_type).lower())


# ------------------------------------------------------------------ tensors


def read_tensors(path: str, names: Iterable[str] | None, max_bytes: int) -> TensorFile:
    """Every initializer of the graph (Constant-node outputs too), as a state_dict."""
    model = load(path)
    consts = Constants(path, model, Budget(path, max_bytes))
    info = {name: consts.info(name) for name in consts.protos}
    chosen = select(path, info, names)
    tensors = {name: consts.array(name) for name in chosen}
    return TensorFile(path, "onnx", info, tensors, tuple(consts.notes))


# -------------------------------------------------------------------- chain


def read_model(path: str, until: str | None, pools: bool, max_bytes: int) -> ModelChain:
    model = load(path)
    graph = model.graph
    consts = Constants(path, model, Budget(path, max_bytes))
    inputs = [i for i in graph.input if i.name not in consts.protos]
    if not inputs:
        raise CbrError(f"{path}: the graph has no input that is not an initializer")
    start = inputs[0]
    notes = []
    if len(inputs) > 1:
        notes.append(f"the graph has {len(inputs)} inputs; following the first, {start.name!r}")
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    builder = ChainBuilder(path)
    current = start.name
    stopped_at, reason = None, ""
    seen = []
    while True:
        users = [n for n in consumers.get(current, []) if n.op_type != "Constant"]
        if not users:
            where = "the graph output" if current in outputs else "a tensor no node reads"
            reason = f"reached {where} {current!r}"
            break
        if len(users) > 1 or current in outputs:
            stopped_at = _node_name(users[0])
            names = ", ".join(repr(_node_name(u)) for u in users[:4])
            reason = f"tensor {current!r} branches (read by {names}); cbr follows one chain"
            break
        node = users[0]
        if node.op_type in ("Identity", "Dropout") and len(node.output) == 1:
            current = node.output[0]
            continue
        layer, why = _convert(path, node, consts, pools)
        if layer is not None and why is None:
            why = builder.refuse(layer)
        if why is not None:
            stopped_at = _node_name(node)
            reason = f"{node.op_type} node {stopped_at!r}: {why}"
            break
        builder.add(layer)
        seen.append(_node_name(node))
        current = node.output[0]
        if until is not None and until in (node.name, node.output[0]):
            following = [n for n in consumers.get(current, []) if n.op_type != "Constant"]
            stopped_at = _node_name(following[0]) if following else None
            reason = f"stopped after {until!r} as asked (until)"
            break
    if until is not None and until not in reason:
        raise CbrError(
            f"{path}: until {until!r}: not a node of the leading chain "
            f"(it has {', '.join(repr(s) for s in seen) or 'no nodes'}; it stopped at: {reason})"
        )
    notes += builder.folded_notes(FOLDED_BY) + consts.notes
    return ModelChain(
        path,
        "onnx",
        start.name,
        _input_shape(start),
        tuple(builder.layers),
        stopped_at,
        reason,
        tuple(notes),
    )


def _node_name(node) -> str:
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


def _input_shape(value_info) -> tuple[int | None, ...] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def _f32(value: float) -> float:
    """An ONNX float attribute (stored as float32) as the shortest decimal: 1e-05, not 9.99e-06.

    torch casts ``eps`` to the input's float32 too, so nothing changes numerically.
    """
    return float(str(np.float32(value)))


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _convert(path: str, node, consts: Constants, pools: bool):
    """``(layer, None)`` for a node cbr can run, ``(None, reason)`` otherwise."""
    name = _node_name(node)
    op = node.op_type
    attrs = _attrs(node)
    if op == "Conv":
        return _conv(path, node, name, attrs, consts)
    if op == "BatchNormalization":
        if attrs.get("training_mode", 0):
            return None, "training_mode=1 (cbr runs BatchNormalization in eval mode here)"
        if len([o for o in node.output if o]) > 1:
            return None, "outputs running statistics (a training graph)"
        params = node.input[1:5]
        if len(params) != 4 or any(p not in consts.protos for p in params):
            return None, "scale, B, mean and var must be stored tensors"
        keys = ("weight", "bias", "running_mean", "running_var")
        arrays = {
            k: consts.array(p, f"{name}.{k} ({p})") for k, p in zip(keys, params, strict=True)
        }
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise CbrError(
                f"{path}: {name}: BatchNormalization parameters must be 1-D of one length "
                f"(got shapes {sorted(shapes)})"
            )
        momentum = _f32(attrs.get("momentum", 0.9))
        layer = BNLayer(
            name,
            arrays["weight"],
            arrays["bias"],
            arrays["running_mean"],
            arrays["running_var"],
            eps=_f32(attrs.get("epsilon", 1e-5)),
            momentum=float(f"{1.0 - momentum:.12g}"),
            tensor_names=dict(zip(keys, params, strict=True)),
        )
        return layer, None
    if op == "Relu":
        return ActLayer(name, "relu"), None
    if op == "LeakyRelu":
        return ActLayer(name, "leaky_relu", _f32(attrs.get("alpha", 0.01))), None
    if op in ("MaxPool", "AveragePool"):
        if not pools:
            return None, "pooling is not run by cbr yet (first unsupported op)"
        return _pool(node, name, attrs)
    return None, f"unsupported op (first one after the chain; cbr runs {SUPPORTED})"


def _conv(path: str, node, name: str, attrs: dict, consts: Constants):
    if len(node.input) < 2 or node.input[1] not in consts.protos:
        return None, "its weight is computed in the graph, not stored"
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias_name is not None and bias_name not in consts.protos:
        return None, "its bias is computed in the graph, not stored"
    info = consts.info(node.input[1])
    if len(info.shape) != 4:
        return None, f"a {len(info.shape) - 2}-D convolution (cbr runs 2-D ones)"
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    group = int(attrs.get("group", 1))
    kernel = tuple(attrs.get("kernel_shape", info.shape[2:]))
    if kernel != info.shape[2:]:
        raise CbrError(
            f"{path}: {name}: kernel_shape {list(kernel)} disagrees with the weight's {info.shape}"
        )
    if info.shape[0] % group:
        raise CbrError(
            f"{path}: {name}: group={group} does not divide {info.shape[0]} output channels"
        )
    padding, pads, why = _padding(attrs, kernel, strides, dilations)
    if why:
        return None, why
    weight = consts.array(node.input[1], f"{name}.weight ({node.input[1]})")
    bias = consts.array(bias_name, f"{name}.bias ({bias_name})") if bias_name else None
    if bias is not None and bias.shape != (info.shape[0],):
        raise tensor_error(path, bias_name, f"expected shape ({info.shape[0]},), got {bias.shape}")
    layer = ConvLayer(
        name,
        weight,
        bias,
        (int(strides[0]), int(strides[1])),
        padding,
        (int(dilations[0]), int(dilations[1])),
        group,
        pads,
        node.input[1],
        bias_name,
    )
    return layer, None


def _padding(attrs: dict, kernel, strides, dilations):
    """``(padding, pads, refusal)`` from ``auto_pad``/``pads``."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto == "VALID":
        return (0, 0), (0, 0, 0, 0), None
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True)]
        evenly = all(s == 1 and e % 2 == 1 for s, e in zip(strides, effective, strict=True))
        if auto == "SAME_LOWER" and not evenly:
            return (
                None,
                None,
                "auto_pad SAME_LOWER puts the odd padding first; cbr's 'same' puts it last",
            )
        return "same", None, None
    if auto != "NOTSET":
        return None, None, f"unknown auto_pad {auto!r}"
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4:
        return None, None, f"pads {list(pads)} are not 2-D"
    top, left, bottom, right = pads
    if top != bottom or left != right:
        return None, pads, f"asymmetric pads {list(pads)}: cbr pads both sides of an axis equally"
    return (top, left), pads, None


def _pool(node, name: str, attrs: dict):
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", ()))
    if len(kernel) != 2:
        return None, f"a {len(kernel)}-D pooling (cbr pools 2-D)"
    if len([o for o in node.output if o]) > 1:
        return None, "MaxPool with an Indices output"
    strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
    padding, _, why = _padding(attrs, kernel, strides, dilations)
    if why:
        return None, why
    layer = PoolLayer(
        name,
        "max" if node.op_type == "MaxPool" else "avg",
        kernel,
        strides,
        padding,
        dilations,
        bool(attrs.get("ceil_mode", 0)),
        bool(attrs.get("count_include_pad", 0)),
    )
    return layer, None
