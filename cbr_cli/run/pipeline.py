"""Run a :class:`~cbr_cli.spec.pipeline_spec.PipelineSpec` on a batch: per-stage arrays.

No printing.

Weights are materialised here, once the input channel count is known:

* ``weight: file.npy`` — loaded and checked against ``(out_channels, in_channels/groups, kH, kW)``.
* ``from:``/``tensors:`` — the weight file's tensors (checked against the same shape from
  its header; float64 ones are rounded to float32, the engine's dtype).
* ``kernels: [...]`` — output channel ``o`` applies kernel ``o`` to the **mean** of the input
  channels of its group (``weight[o, c] = kernel_o / (in_channels/groups)``), so a kernel's
  response on an RGB image equals its response on the image's channel average.
* random — PyTorch's default ``Conv2d`` initialisation (``kaiming_uniform_(a=sqrt(5))``,
  i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weight and bias) drawn from
  ``numpy.random.default_rng(seed)``: the same distribution as PyTorch, not the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cbr_cli.core import ops
from cbr_cli.errors import CbrError
from cbr_cli.io.npyfiles import load_npy
from cbr_cli.spec.pipeline_types import ConvSpec, InputSpec, LayerSpec, ParamSource, PipelineSpec
from cbr_cli.spec.weights_source import TensorRef

STAGES = ("conv", "bn", "act")


def resolve_param(source: ParamSource, channels: int, name: str) -> np.ndarray:
    """A per-channel float32 vector of length ``channels`` from a scalar, list or .npy."""
    source.check(channels, name)
    if isinstance(source.value, TensorRef):
        values = source.value.file.array(source.value.name).astype(np.float32)
    elif isinstance(source.value, str):
        values = load_npy(source.value, source.where, shape=(channels,)).astype(np.float32)
    elif isinstance(source.value, tuple):
        values = np.asarray(source.value, dtype=np.float32)
    else:
        values = np.full(channels, source.value, dtype=np.float32)
    return values


@dataclass
class BuiltLayer:
    """A layer with its arrays: ``weight`` (O, I/groups, kH, kW), ``bias`` (O,), BN params (O,)."""

    spec: LayerSpec
    in_channels: int
    weight: np.ndarray
    bias: np.ndarray | None
    bn_weight: np.ndarray | None = None
    bn_bias: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None


def conv_weight(conv: ConvSpec, in_channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Materialise a conv's ``(weight, bias)`` for ``in_channels`` input channels."""
    conv.check_groups(in_channels)
    per_group = in_channels // conv.groups
    shape = conv.check_weight_file(in_channels)
    fan_in = per_group * conv.kernel_size[0] * conv.kernel_size[1]
    rng = None
    if isinstance(conv.weight, TensorRef):  # shape checked against the file's header
        weight = conv.weight.file.array(conv.weight.name).astype(np.float32)
    elif conv.weight is not None:
        weight = load_npy(conv.weight, conv.where["weight"], shape=shape).astype(np.float32)
    elif conv.kernels is not None:
        from cbr_cli.core.kernels import stack_kernels

        bank = stack_kernels(list(conv.kernels))
        weight = np.repeat(bank[:, None] / per_group, per_group, axis=1).astype(np.float32)
    else:
        _check_weight_memory(conv, shape)
        rng = np.random.default_rng(conv.seed)
        weight = _random_weight(rng, conv.init, shape, fan_in)
    if conv.flip:  # true convolution: PyTorch cross-correlates with the kernel as given
        weight = np.ascontiguousarray(weight[..., ::-1, ::-1])
    bias = None
    if isinstance(conv.bias, ParamSource):
        bias = resolve_param(conv.bias, conv.out_channels, "bias")
    elif conv.bias:
        rng = rng or np.random.default_rng(conv.seed)
        bound = 1.0 / math.sqrt(fan_in)
        bias = rng.uniform(-bound, bound, conv.out_channels).astype(np.float32)
    return weight, bias


def _check_weight_memory(conv: ConvSpec, shape: tuple[int, int, int, int]) -> None:
    """Refuse random weights whose draw would not fit in memory, before drawing them.

    The draw holds float64 numbers and their float32 copy: 12 bytes per weight. (Linux
    would not raise MemoryError but kill the process; ``cbr apply`` has checked the whole
    run already, this guards every other caller, e.g. a batch of mixed image sizes.)
    """
    from cbr_cli.run.memory import available_memory

    needed = 12 * math.prod(shape)
    available = available_memory()
    if available is not None and needed > available:
        raise CbrError(
            f"{conv.where.get('kernel_size', conv.where.get('conv', 'conv'))}: random weights "
            f"of shape {shape} need about {needed / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB available",
            exit_code=1,
        )


def _random_weight(
    rng: np.random.Generator, init: str, shape: tuple[int, ...], fan_in: int
) -> np.ndarray:
    if init == "kaiming_uniform":  # PyTorch's Conv2d default: kaiming_uniform_(a=sqrt(5))
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    if init == "kaiming_normal":  # kaiming_normal_(nonlinearity="relu", mode="fan_in")
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
    fan_out = shape[0] * shape[2] * shape[3]  # xavier_uniform_
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def build_layers(spec: PipelineSpec, in_channels: int) -> list[BuiltLayer]:
    """Materialise every layer's arrays, chaining channel counts from ``in_channels``."""
    built = []
    channels = in_channels
    for layer in spec.layers:
        try:
            weight, bias = conv_weight(layer.conv, channels)
        except MemoryError as exc:
            raise _out_of_memory(layer.name, "weights", exc) from None
        item = BuiltLayer(layer, channels, weight, bias)
        out = layer.conv.out_channels
        bn = layer.bn
        if bn is not None:
            if bn.weight is not None:
                item.bn_weight = resolve_param(bn.weight, out, "bn.weight")
            if bn.bias is not None:
                item.bn_bias = resolve_param(bn.bias, out, "bn.bias")
            if bn.mode == "running":
                mean = bn.running_mean or ParamSource(0.0, bn.where.get("mode", "bn"))
                var = bn.running_var or ParamSource(1.0, bn.where.get("mode", "bn"))
                item.running_mean = resolve_param(mean, out, "running_mean")
                item.running_var = resolve_param(var, out, "running_var")
                if (item.running_var < 0).any():
                    raise CbrError(
                        f"{var.where}: running_var must be non-negative "
                        f"(got min {float(item.running_var.min())})"
                    )
        built.append(item)
        channels = out
    return built


def normalize_input(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Apply ``input.mean``/``input.std`` to (N, C, H, W) pixels in [0, 1] (a new array)."""
    channels = pixels.shape[1]
    out = pixels.astype(np.float32, copy=True)
    if spec.mean is not None:
        out -= resolve_param(spec.mean, channels, "input.mean").reshape(1, -1, 1, 1)
    if spec.std is not None:
        out /= resolve_param(spec.std, channels, "input.std").reshape(1, -1, 1, 1)
    return out


@dataclass
class StageResult:
    """One stage's output for the whole batch.

    Attributes
    ----------
    layer, stage : str
        Layer name and ``"conv"``, ``"bn"`` or ``"act"``.
    data : ndarray of shape (N, C, H, W), float32
    bn_mean, bn_var : ndarray of shape (C,), optional
        For BN stages: the mean and (biased) variance actually used to normalise.
    """

    layer: str
    stage: str
    data: np.ndarray
    bn_mean: np.ndarray | None = None
    bn_var: np.ndarray | None = None


def run_layers(
    layers: list[BuiltLayer],
    x: np.ndarray,
    *,
    batch_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[StageResult]:
    """Run ``x`` (N, C, H, W) through built layers; every stage's output is kept.

    ``batch_stats`` maps a layer name to precomputed ``(mean, biased var)`` to use for a
    ``mode: batch`` BN instead of this batch's statistics (dataset-wide statistics).
    """
    results = []
    for item in layers:
        try:
            # Values beyond float32 (e.g. a float TIFF near 3e38) must not turn into
            # warnings and a confusing NaN error later: stop at the layer, say why.
            with np.errstate(over="raise", invalid="raise"):
                x = _run_layer(item, x, batch_stats, results)
        except MemoryError as exc:
            raise _out_of_memory(item.spec.name, "output", exc) from None
        except FloatingPointError as exc:
            raise CbrError(
                f"layer {item.spec.name!r}: the values overflow float32 ({exc}); "
                f"the largest input magnitude is {float(np.nanmax(np.abs(x))):.3g}",
                exit_code=1,
            ) from None
    return results


def _out_of_memory(layer: str, what: str, exc: MemoryError) -> CbrError:
    # numpy's message names the array: "Unable to allocate 94.6 TiB for an array with shape ..."
    return CbrError(f"layer {layer!r}: not enough memory for its {what} ({exc})", exit_code=1)


def _run_layer(
    item: BuiltLayer,
    x: np.ndarray,
    batch_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None,
    results: list[StageResult],
) -> np.ndarray:
    """Run one layer on ``x``, appending its stages to ``results``; returns its output."""
    layer = item.spec
    c = layer.conv
    if layer.bn is not None:
        return _run_fused(item, x, batch_stats, results)
    try:
        y = ops.conv2d(
            x, item.weight, item.bias, c.stride, c.padding, c.dilation, c.groups, c.padding_mode
        )
    except CbrError as exc:  # e.g. a kernel larger than this image: name the layer
        raise CbrError(f"layer {layer.name!r}: {exc.message}", exc.exit_code) from None
    results.append(StageResult(layer.name, "conv", y))
    if layer.activation == "relu":
        y = ops.relu(y)
        results.append(StageResult(layer.name, "act", y))
    elif layer.activation == "leaky_relu":
        y = ops.leaky_relu(y, layer.negative_slope)
        results.append(StageResult(layer.name, "act", y))
    return y


def _run_fused(
    item: BuiltLayer,
    x: np.ndarray,
    batch_stats: dict[str, tuple[np.ndarray, np.ndarray]] | None,
    results: list[StageResult],
) -> np.ndarray:
    """A layer with BN, through :func:`~cbr_cli.core.ops.conv2d_bn_act` (every stage kept):
    its own batch's statistics taken during the convolution, or given ones (running
    statistics, or a dataset's from ``batch_stats``) applied in its output pass."""
    layer = item.spec
    c = layer.conv
    mean = var = None
    if layer.bn.mode == "running":
        mean, var = item.running_mean, item.running_var
    elif batch_stats and layer.name in batch_stats:
        mean, var = batch_stats[layer.name]
    batch_mode = mean is None
    try:
        stages = ops.conv_bn_act_stages(
            x,
            item.weight,
            item.bias,
            c.stride,
            c.padding,
            c.dilation,
            c.groups,
            c.padding_mode,
            running_mean=mean,
            running_var=var,
            bn_weight=item.bn_weight,
            bn_bias=item.bn_bias,
            training=False,
            eps=layer.bn.eps,
            activation=layer.activation,
            negative_slope=layer.negative_slope,
            keep_stages=True,
        )
    except CbrError as exc:  # e.g. a kernel larger than this image: name the layer
        raise CbrError(f"layer {layer.name!r}: {exc.message}", exc.exit_code) from None
    if batch_mode and stages.count <= 1:  # what batch_norm(training=True) refuses
        shape = stages.conv.shape
        raise CbrError(
            f"layer {layer.name!r}: bn mode 'batch': batch_norm in training mode needs more "
            f"than 1 value per channel, but got input shape {shape} "
            f"(output {shape[2]}x{shape[3]} for {shape[0]} image(s))"
        )
    results.append(StageResult(layer.name, "conv", stages.conv))
    if not batch_mode:  # as given (float64 from a calibration), as before the fusion
        stages.mean, stages.var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    results.append(StageResult(layer.name, "bn", stages.bn, stages.mean, stages.var))
    if layer.activation in ("relu", "leaky_relu"):
        results.append(StageResult(layer.name, "act", stages.act))
    return stages.act


def needs_whole_batch(spec: PipelineSpec) -> bool:
    """True if a ``mode: batch`` BN couples the images of a batch."""
    return any(layer.bn is not None and layer.bn.mode == "batch" for layer in spec.layers)
