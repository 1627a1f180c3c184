"""Keras models: ``.keras`` (Keras 3: a zip of ``config.json`` + ``model.weights.h5``) and
``.h5`` (Keras 2 / legacy: ``model_config`` attribute + ``model_weights`` group), via h5py.

Conversions to PyTorch's conventions:

* ``Conv2D`` kernels are HWIO ``(kH, kW, C_in/groups, C_out)`` -> OIHW by
  ``transpose(3, 2, 0, 1)``; ``DepthwiseConv2D`` kernels ``(kH, kW, C, m)`` ->
  ``(C*m, 1, kH, kW)`` with ``groups = C`` (output channel ``c*m + j``, as torch's).
* ``padding: same`` is TensorFlow's SAME -- cbr's ``"same"``; ``valid`` is no padding; a
  ``ZeroPadding2D`` right before a ``valid`` conv becomes that conv's explicit padding
  (Keras' ResNet stems are written that way).
* ``BatchNormalization``: ``epsilon`` defaults to 1e-3 (torch: 1e-5); Keras' ``momentum``
  (default 0.99) weighs the old running value, torch's momentum is ``1 - momentum``;
  ``center``/``scale`` false mean beta 0 / gamma 1.
* ``LeakyReLU``'s default slope is 0.3 (torch: 0.01); ``Activation('leaky_relu')``'s is 0.2.
"""

from __future__ import annotations

import io
import json
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
    open_weights,
    select,
    tensor_error,
    to_float,
)
from cbr_cli.io.weights.zipread import open_zip, read_member

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CONFIG_LIMIT = 64 << 20
SUPPORTED = (
    "Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, LeakyReLU, Activation, ZeroPadding2D"
)
FOLDED_BY = "a converted or fused model"


def _h5py(path: str):
    try:
        import h5py
    except ImportError:
        raise CbrError(
            f"{path}: reading Keras files needs the 'h5py' package (pip install 'cbr-cli[keras]')"
        ) from None
    return h5py


class KerasFile:
    """The config (a dict) and the weights (``layer name -> [(tensor name, dataset)]``)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.budget = Budget(path, max_bytes)
        h5py = _h5py(path)
        handle, _ = open_weights(path)
        self._handle = handle
        magic = handle.read(8)
        handle.seek(0)
        try:
            if magic.startswith(b"PK"):
                with open_zip(path, handle) as archive:
                    names = archive.namelist()
                    if "config.json" not in names or "model.weights.h5" not in names:
                        raise CbrError(
                            f"{path}: a zip but not a Keras 3 model (needs config.json and "
                            "model.weights.h5)"
                        )
                    config = read_member(path, archive, "config.json", CONFIG_LIMIT)
                    weights = read_member(path, archive, "model.weights.h5", max_bytes)
                self.h5 = h5py.File(io.BytesIO(weights), "r")
                self.config = _json(path, config)
                self.weights = self._keras3_weights()
            elif magic == HDF5_MAGIC:
                self.h5 = h5py.File(handle, "r")
                raw = self.h5.attrs.get("model_config")
                if raw is None:
                    raise CbrError(
                        f"{path}: an HDF5 file without a 'model_config' attribute (weights "
                        "only, as save_weights writes): no layer geometry to read"
                    )
                self.config = _json(path, raw)
                self.weights = self._keras2_weights()
            else:
                raise CbrError(f"{path}: not a Keras file (neither a .keras zip nor HDF5)")
        except OSError as exc:  # h5py reports corrupt/truncated HDF5 as OSError
            handle.close()
            raise CbrError(
                f"{path}: not a readable HDF5 file ({' '.join(str(exc).split())})"
            ) from None
        except CbrError:
            handle.close()
            raise

    def close(self) -> None:
        h5 = getattr(self, "h5", None)
        if h5 is not None:
            h5.close()
        self._handle.close()

    def __enter__(self) -> KerasFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keras3_weights(self) -> dict[str, list]:
        out: dict[str, list] = {}
        layers = self.h5.get("layers")
        if layers is None:
            return out
        for group_name, group in layers.items():
            variables = group.get("vars")
            if variables is None:
                continue
            name = _text(variables.attrs.get("name", group_name))
            keys = sorted(variables.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            out[name] = [(f"{name}/vars/{k}", variables[k]) for k in keys]
        return out

    def _keras2_weights(self) -> dict[str, list]:
        out: dict[str, list] = {}
        root = self.h5.get("model_weights", self.h5)
        for name, group in root.items():
            listed = group.attrs.get("weight_names")
            if listed is None:
                continue
            entries = []
            for weight_name in listed:
                weight_name = _text(weight_name)
                if weight_name not in group:
                    raise CbrError(
                        f"{self.path}: {name}: weight {weight_name!r} is listed but missing"
                    )
                entries.append((f"{name}/{_leaf(weight_name)}", group[weight_name]))
            out[name] = entries
        return out

    def info(self, dataset, name: str) -> TensorInfo:
        return TensorInfo(name, tuple(int(d) for d in dataset.shape), str(dataset.dtype))

    def array(self, dataset, name: str, notes: list[str]) -> np.ndarray:
        """A dataset's data, its declared size checked against what the file stores."""
        if dataset.dtype.kind not in "biuf":
            raise tensor_error(self.path, name, f"unsupported dtype {dataset.dtype}")
        nbytes = numel(dataset.shape) * dataset.dtype.itemsize
        self.budget.charge(nbytes, name)
        stored = dataset.id.get_storage_size()
        if dataset.compression is None and stored < nbytes:
            raise tensor_error(
                self.path, name, f"declares {nbytes} bytes of data, the file stores {stored}"
            )
        try:
            data = dataset[()]
        except OSError as exc:
            raise tensor_error(
                self.path, name, f"cannot read ({' '.join(str(exc).split())})"
            ) from None
        return to_float(np.asarray(data), name, str(dataset.dtype), notes, self.budget)


def _json(path: str, raw: bytes | str) -> dict:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CbrError(f"{path}: the model config is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CbrError(f"{path}: the model config is not a JSON object")
    return config


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _leaf(weight_name: str) -> str:
    """``sequential/conv1/kernel:0`` -> ``kernel``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


# ------------------------------------------------------------------ tensors


def read_tensors(path: str, names: Iterable[str] | None, max_bytes: int) -> TensorFile:
    """Every weight of the model, named ``<layer>/<kernel|bias|...>`` (Keras layout, HWIO)."""
    with KerasFile(path, max_bytes) as keras:
        datasets = {n: d for entries in keras.weights.values() for n, d in entries}
        info = {n: keras.info(d, n) for n, d in datasets.items()}
        chosen = select(path, info, names)
        notes: list[str] = []
        tensors = {n: keras.array(datasets[n], n, notes) for n in chosen}
    return TensorFile(path, "keras", info, tensors, tuple(notes))


# -------------------------------------------------------------------- chain


def read_model(path: str, until: str | None, pools: bool, max_bytes: int) -> ModelChain:
    with KerasFile(path, max_bytes) as keras:
        return _chain(keras, until, pools)


def _layers(path: str, config: dict) -> tuple[str, list[dict]]:
    kind = config.get("class_name")
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(layers, list):
        raise CbrError(f"{path}: model class {kind!r}: expected a Sequential or Functional model")
    return kind, [layer for layer in layers if isinstance(layer, dict)]


def _inbound(layer: dict) -> list[str]:
    """Names of the layers feeding ``layer`` (Keras 2 and Keras 3 spellings)."""
    found: list[str] = []

    def walk(item: object) -> None:
        if isinstance(item, dict):
            history = (
                item.get("config", {}).get("keras_history")
                if isinstance(item.get("config"), dict)
                else None
            )
            if isinstance(history, list) and history:
                found.append(str(history[0]))
                return
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                found.append(item[0])
                return
            for value in item:
                walk(value)

    walk(layer.get("inbound_nodes", []))
    return found


def _order(path: str, kind: str, layers: list[dict]) -> tuple[list[dict], str | None, str]:
    """The layers from the input along a single path; and where/why that path ends."""
    if kind == "Sequential":
        return layers, None, "reached the model's last layer"
    by_name = {layer.get("config", {}).get("name", layer.get("name")): layer for layer in layers}
    consumers: dict[str, list[str]] = {}
    for name, layer in by_name.items():
        for source in _inbound(layer):
            consumers.setdefault(source, []).append(name)
    inputs = [n for n, layer in by_name.items() if layer.get("class_name") == "InputLayer"]
    if not inputs:
        raise CbrError(f"{path}: the functional model has no InputLayer")
    chain = [by_name[inputs[0]]]
    current = inputs[0]
    while True:
        users = consumers.get(current, [])
        if not users:
            return chain, None, "reached the model's output"
        if len(users) > 1 or len(_inbound(by_name[users[0]])) > 1:
            names = ", ".join(repr(u) for u in users[:4])
            return (
                chain,
                users[0],
                f"layer {current!r} branches or merges (into {names}); cbr follows one chain",
            )
        current = users[0]
        chain.append(by_name[current])


def _chain(keras: KerasFile, until: str | None, pools: bool) -> ModelChain:
    path = keras.path
    kind, layers = _layers(path, keras.config)
    ordered, end_at, end_reason = _order(path, kind, layers)
    builder = ChainBuilder(path)
    notes: list[str] = []
    input_shape = None
    pending_pad: tuple[int, int, int, int] | None = None  # a ZeroPadding2D before a conv
    stopped_at, reason = end_at, end_reason
    seen: list[str] = []
    for index, layer in enumerate(ordered):
        cls = layer.get("class_name")
        cfg = layer.get("config", {})
        name = str(cfg.get("name", f"layer{index}"))
        if input_shape is None and ("batch_input_shape" in cfg or "batch_shape" in cfg):
            input_shape = _nchw(cfg.get("batch_shape") or cfg.get("batch_input_shape"), cfg)
        if cls == "InputLayer" or (cls == "Activation" and cfg.get("activation") == "linear"):
            continue
        if cls in ("Dropout", "SpatialDropout2D"):
            continue
        if pending_pad is not None and cls not in ("Conv2D", "DepthwiseConv2D"):
            stopped_at, reason = (
                name,
                f"{cls} layer {name!r}: a ZeroPadding2D not followed by a conv",
            )
            break
        new, why = _convert(keras, cls, cfg, name, pending_pad, notes, pools)
        pending_pad = None
        if why == "zero-padding":
            pending_pad = new  # type: ignore[assignment]
            seen.append(name)
            continue
        for item in new or []:
            why = why or builder.refuse(item)
            if why is None:
                builder.add(item)
        if why is not None:
            stopped_at, reason = name, f"{cls} layer {name!r}: {why}"
            break
        seen.append(name)
        if until is not None and until == name:
            following = ordered[index + 1] if index + 1 < len(ordered) else None
            stopped_at = following.get("config", {}).get("name") if following else None
            reason = f"stopped after {until!r} as asked (until)"
            break
    if until is not None and "as asked (until)" not in reason:
        raise CbrError(
            f"{path}: until {until!r}: not a layer of the leading chain "
            f"(it has {', '.join(repr(s) for s in seen) or 'no layers'}; it stopped at: {reason})"
        )
    notes = builder.folded_notes(FOLDED_BY) + notes
    return ModelChain(
        path,
        "keras",
        ordered[0].get("config", {}).get("name", "input"),
        input_shape,
        tuple(builder.layers),
        stopped_at,
        reason,
        tuple(notes),
    )


def _nchw(shape: object, cfg: dict) -> tuple[int | None, ...] | None:
    if not isinstance(shape, list) or len(shape) != 4:
        return None
    if cfg.get("data_format", "channels_last") == "channels_first":
        return tuple(shape)
    n, h, w, c = shape
    return (n, c, h, w)


def _pair(value: object, default: int) -> tuple[int, int]:
    if value is None:
        return default, default
    if isinstance(value, int):
        return value, value
    items = [int(v) for v in value]
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])


def _weights(keras: KerasFile, name: str, roles: list[str], notes: list[str]) -> dict[str, tuple]:
    entries = keras.weights.get(name, [])
    if len(entries) != len(roles):
        raise CbrError(
            f"{keras.path}: {name}: expected {len(roles)} weight(s) ({', '.join(roles)}), "
            f"the file has {len(entries)}"
        )
    return {
        role: (tensor_name, keras.array(dataset, tensor_name, notes))
        for role, (tensor_name, dataset) in zip(roles, entries, strict=True)
    }


def _activation(cfg_act: object, name: str) -> tuple[ActLayer | None, str | None]:
    if cfg_act in (None, "linear"):
        return None, None
    if cfg_act == "relu":
        return ActLayer(f"{name}.relu", "relu"), None
    if cfg_act == "leaky_relu":
        return ActLayer(f"{name}.leaky_relu", "leaky_relu", 0.2), None
    return None, f"activation {cfg_act!r} is not supported (relu, leaky_relu)"


def _convert(keras, cls, cfg, name, pending_pad, notes, pools):
    """``(layers, None)``, ``(pads, "zero-padding")``, or ``(None, reason)``."""
    path = keras.path
    if cls == "ZeroPadding2D":
        pad = cfg.get("padding", 1)
        if isinstance(pad, int):
            return (pad, pad, pad, pad), "zero-padding"
        (top, bottom), (left, right) = (_pair(p, 0) for p in pad)
        return (top, left, bottom, right), "zero-padding"
    if cls in ("Conv2D", "DepthwiseConv2D"):
        if cfg.get("data_format", "channels_last") not in ("channels_last", "channels_first"):
            return None, f"data_format {cfg.get('data_format')!r}"
        use_bias = bool(cfg.get("use_bias", True))
        leaf = "kernel" if cls == "Conv2D" else "depthwise_kernel"
        found = _weights(keras, name, [leaf] + (["bias"] if use_bias else []), notes)
        kernel_name, kernel = found[leaf]
        if kernel.ndim != 4:
            raise tensor_error(
                path, kernel_name, f"expected a 4-D kernel, got shape {kernel.shape}"
            )
        if cls == "Conv2D":
            weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
            groups = int(cfg.get("groups", 1))
        else:
            kh, kw, channels, multiplier = kernel.shape
            weight = np.ascontiguousarray(
                kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
            )
            groups = channels
        weight.flags.writeable = False
        bias_name, bias = found.get("bias", (None, None))
        padding_cfg = str(cfg.get("padding", "valid")).lower()
        if padding_cfg not in ("same", "valid"):
            return None, f"padding {padding_cfg!r} (expected same or valid)"
        if pending_pad is not None:
            if padding_cfg != "valid":
                return None, "a ZeroPadding2D before a conv with padding 'same'"
            top, left, bottom, right = pending_pad
            if top != bottom or left != right:
                return (
                    None,
                    f"asymmetric ZeroPadding2D {list(pending_pad)}: cbr pads both sides equally",
                )
            padding, pads = (top, left), pending_pad
        elif padding_cfg == "same":
            padding, pads = "same", None
        else:
            padding, pads = (0, 0), (0, 0, 0, 0)
        conv = ConvLayer(
            name,
            weight,
            bias,
            _pair(cfg.get("strides"), 1),
            padding,
            _pair(cfg.get("dilation_rate"), 1),
            groups,
            pads,
            kernel_name,
            bias_name,
        )
        act, why = _activation(cfg.get("activation"), name)
        if why:
            return None, why
        return [conv] + ([act] if act else []), None
    if cls == "BatchNormalization":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if axis not in (-1, 3, 1):
            return None, f"axis {axis!r} is not the channel axis"
        scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
        roles = (["gamma"] if scale else []) + (["beta"] if center else [])
        found = _weights(keras, name, [*roles, "moving_mean", "moving_variance"], notes)
        mean_name, mean = found["moving_mean"]
        var_name, var = found["moving_variance"]
        gamma = found["gamma"][1] if scale else np.ones_like(mean)
        beta = found["beta"][1] if center else np.zeros_like(mean)
        names = {"running_mean": mean_name, "running_var": var_name}
        if scale:
            names["weight"] = found["gamma"][0]
        if center:
            names["bias"] = found["beta"][0]
        momentum = float(cfg.get("momentum", 0.99))
        layer = BNLayer(
            name,
            gamma,
            beta,
            mean,
            var,
            eps=float(cfg.get("epsilon", 1e-3)),
            momentum=float(f"{1.0 - momentum:.12g}"),
            tensor_names=names,
        )
        return [layer], None
    if cls == "ReLU":
        if cfg.get("max_value") is not None:
            return (
                None,
                f"max_value {cfg['max_value']} (a clipped ReLU such as ReLU6 is out of scope)",
            )
        if float(cfg.get("threshold", 0.0) or 0.0) != 0.0:
            return None, "a ReLU with a threshold"
        slope = float(cfg.get("negative_slope", 0.0) or 0.0)
        act = ActLayer(name, "leaky_relu", slope) if slope else ActLayer(name, "relu")
        return [act], None
    if cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return [ActLayer(name, "leaky_relu", float(slope))], None
    if cls == "Activation":
        act, why = _activation(cfg.get("activation"), name)
        return ([ActLayer(name, act.activation, act.negative_slope)] if act else None), why
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        if not pools:
            return None, "pooling is not run by cbr yet (first unsupported layer)"
        size = _pair(cfg.get("pool_size"), 2)
        strides = _pair(cfg.get("strides"), 0) if cfg.get("strides") is not None else size
        padding = "same" if str(cfg.get("padding", "valid")).lower() == "same" else (0, 0)
        pool = PoolLayer(
            name,
            "max" if cls == "MaxPooling2D" else "avg",
            size,
            strides,
            padding,
            count_include_pad=False,
        )
        return [pool], None
    return None, f"unsupported layer (first one after the chain; cbr runs {SUPPORTED})"
