"""Conv2d, BatchNorm and (Leaky)ReLU on numpy arrays, with ``torch.nn.functional`` semantics.

Importable on its own: numpy (and, lazily, ``scipy.fft``) only — no typer, rich or Pillow.

Dtype policy (:func:`as_float`): float32 in → float32 out, float64 stays float64,
everything else (integers, bool, float16) is computed in float32.

Every invalid argument raises :class:`cbr_cli.errors.CbrError` naming the parameter
and the bad value.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cbr_cli.core.conv_cost import choose_method
from cbr_cli.core.conv_direct import conv2d_direct
from cbr_cli.core.conv_fft import conv2d_fft
from cbr_cli.core.fused import ACTIVATIONS, Stages, conv_bn_act
from cbr_cli.core.moments import BLOCK_VALUES, channel_mean_var
from cbr_cli.core.shapes import ConvGeometry, IntOrPair, Padding, conv2d_geometry, crop_zero_taps
from cbr_cli.core.threads import run_tasks
from cbr_cli.errors import CbrError

__all__ = [
    "ACTIVATIONS",
    "Stages",
    "as_float",
    "batch_norm",
    "batch_stats",
    "channel_mean_var",
    "conv2d",
    "conv2d_bn_act",
    "conv_bn_act_stages",
    "leaky_relu",
    "relu",
    "update_running_stats",
]

METHODS = ("auto", "direct", "fft")


def as_float(array: object, name: str = "input") -> np.ndarray:
    """Apply cbr's dtype policy: float32/float64 kept, anything else real → float32.

    Raises
    ------
    CbrError
        For complex or non-numeric data.
    """
    a = np.asarray(array)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype.kind in "biuf":
        return a.astype(np.float32)
    raise CbrError(f"{name} must be a real numeric array, but got dtype {a.dtype}")


def _is_real(value: object) -> bool:
    """Python or numpy real scalar (``np.float32(0.1)`` counts, as torch accepts it)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        raise CbrError(f"{name} contains NaN or inf values")


@dataclass(frozen=True)
class _ConvArguments:
    """conv2d's arguments, validated: ``x`` (N, C_in, H, W) C-contiguous, ``weight`` and
    ``bias`` in its dtype, the geometry and the engine (``"direct"`` or ``"fft"``)."""

    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    geo: ConvGeometry
    method: str
    unbatched: bool


def _conv_arguments(
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: IntOrPair,
    padding: Padding,
    dilation: IntOrPair,
    groups: int,
    padding_mode: str,
    method: str,
) -> _ConvArguments:
    """Validate conv2d's arguments (every message names the parameter and its value)."""
    x = as_float(input, "input")
    if x.ndim not in (3, 4):
        raise CbrError(
            f"input must have shape (N, C_in, H, W) or (C_in, H, W), but got shape {x.shape}"
        )
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    w = np.asarray(weight)
    if w.ndim != 4:
        raise CbrError(
            f"weight must have shape (C_out, C_in/groups, kH, kW), but got shape {w.shape}"
        )
    w = as_float(w, "weight").astype(x.dtype, copy=False)
    _check_finite(w, "weight")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise CbrError(f"groups must be a positive int, but got groups={groups!r}")
    n_batch, c_in, height, width = x.shape
    c_out = w.shape[0]
    if c_in % groups:
        raise CbrError(
            f"groups must divide the input channels, but got groups={groups} for {c_in} channels"
        )
    if c_out % groups:
        raise CbrError(
            f"groups must divide out_channels, but got groups={groups} for {c_out} out channels"
        )
    if w.shape[1] * groups != c_in:
        raise CbrError(
            f"weight of shape {w.shape} expects {w.shape[1] * groups} input channels "
            f"(weight.shape[1]={w.shape[1]} x groups={groups}), but input has {c_in} channels"
        )
    b = None
    if bias is not None:
        b = as_float(bias, "bias").astype(x.dtype, copy=False)
        if b.shape != (c_out,):
            raise CbrError(f"bias must have shape ({c_out},), but got shape {b.shape}")
        _check_finite(b, "bias")
    if method not in METHODS:
        raise CbrError(f"method must be one of {list(METHODS)}, but got method={method!r}")

    geo = conv2d_geometry((height, width), w.shape[2:], stride, padding, dilation, padding_mode)
    if padding_mode == "zeros":  # taps that read only zero padding add nothing: drop them
        crop = crop_zero_taps(geo)
        if crop.geometry != geo:
            (t0, t1), (l0, l1) = crop.taps_h, crop.taps_w
            w = w[:, :, t0:t1, l0:l1]
            x = x[:, :, crop.rows[0] : crop.rows[1], crop.columns[0] : crop.columns[1]]
            geo = crop.geometry
    w = np.ascontiguousarray(w)
    if method == "auto":
        method = choose_method(n_batch, c_in, c_out, groups, w.shape[2:], geo, x.dtype.itemsize)
    return _ConvArguments(np.ascontiguousarray(x), w, b, geo, method, unbatched)


def conv2d(
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    method: str = "auto",
) -> np.ndarray:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (plus ``padding_mode``).

    Parameters
    ----------
    input : ndarray of shape (N, C_in, H, W) or (C_in, H, W)
    weight : ndarray of shape (C_out, C_in / groups, kH, kW)
        OIHW, as PyTorch stores it; applied without flipping (cross-correlation).
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), ``"valid"``, ``"same"`` or ``"full"``
        See :mod:`cbr_cli.core.shapes`; ``"same"`` with stride > 1 follows TensorFlow.
    groups : int
        Must divide both C_in and C_out.
    padding_mode : ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``
        As ``torch.nn.Conv2d``: ``reflect`` mirrors without repeating the edge.
    method : ``"auto"``, ``"direct"`` or ``"fft"``
        ``auto`` picks by a cost model; the others force an engine (tests, benchmarks).

    Returns
    -------
    ndarray of shape (N, C_out, H_out, W_out), or (C_out, H_out, W_out) for 3-D input
        ``H_out = floor((H + top + bottom - dilation[0]*(kH-1) - 1) / stride[0] + 1)``,
        likewise ``W_out``; dtype per :func:`as_float`.
    """
    conv = _conv_arguments(
        input, weight, bias, stride, padding, dilation, groups, padding_mode, method
    )
    out = np.empty((conv.x.shape[0], conv.weight.shape[0], *conv.geo.out_hw), conv.x.dtype)
    engine = conv2d_fft if conv.method == "fft" else conv2d_direct
    engine(conv.x, conv.weight, conv.geo, groups, out, padding_mode)
    if conv.bias is not None:
        out += conv.bias.reshape(1, -1, 1, 1)
    return out[0] if conv.unbatched else out


def _channel_param(value: object, name: str, channels: int, dtype: np.dtype) -> np.ndarray | None:
    if value is None:
        return None
    a = as_float(value, name)
    if a.shape != (channels,):
        raise CbrError(f"{name} must have shape ({channels},), but got shape {a.shape}")
    _check_finite(a, name)
    return a.astype(dtype, copy=False)


def _bn_arguments(
    channels: int,
    dtype: np.dtype,
    running_mean: object,
    running_var: object,
    weight: object,
    bias: object,
    momentum: object,
    eps: object,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate batch_norm's parameters; (running_mean, running_var, weight, bias) as
    ``dtype`` arrays of shape (channels,) or None."""
    if not (_is_real(eps) and eps > 0 and np.isfinite(eps)):
        raise CbrError(f"eps must be a positive number, but got eps={eps!r}")
    if not (_is_real(momentum) and 0.0 <= momentum <= 1.0):
        raise CbrError(f"momentum must be a number in [0, 1], but got momentum={momentum!r}")
    if (running_mean is None) != (running_var is None):
        raise CbrError("running_mean and running_var must be given together (or both None)")
    rm = _channel_param(running_mean, "running_mean", channels, dtype)
    rv = _channel_param(running_var, "running_var", channels, dtype)
    if rv is not None and (rv < 0).any():
        raise CbrError(f"running_var must be non-negative, but got min {float(rv.min())}")
    gamma = _channel_param(weight, "weight", channels, dtype)
    beta = _channel_param(bias, "bias", channels, dtype)
    return rm, rv, gamma, beta


def batch_norm(
    input: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch normalisation, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, where

    * ``training=True`` (or no running stats given): ``mean``/``var`` are the batch's
      mean and **biased** variance over (N, H, W), computed in two passes; if running
      stats are given they are updated **in place**:
      ``running = (1 - momentum) * running + momentum * batch_stat`` using the
      **unbiased** variance ``var * n / (n - 1)``.
    * ``training=False``: ``mean``/``var`` are ``running_mean``/``running_var``.

    Parameters
    ----------
    input : ndarray of shape (N, C, ...) — usually (N, C, H, W)
    running_mean, running_var : ndarray of shape (C,) or None
        Updated in place when ``training``; must then be float arrays.
    weight, bias : ndarray of shape (C,), optional
        Affine parameters (gamma, beta); default 1 and 0.
    training : bool
    momentum : float in [0, 1]
    eps : float > 0

    Returns
    -------
    ndarray of the shape of ``input``, dtype per :func:`as_float`.
    """
    x = as_float(input, "input")
    if x.ndim < 2:
        raise CbrError(f"input must have shape (N, C, ...), but got shape {x.shape}")
    channels = x.shape[1]
    rm, rv, gamma, beta = _bn_arguments(
        channels, x.dtype, running_mean, running_var, weight, bias, momentum, eps
    )

    if x.size == 0:
        raise CbrError(f"input must not be empty, but got shape {x.shape}")
    if training:
        mean, var = batch_stats(x)
        if rm is not None:
            count = x.size // channels
            update_running_stats(running_mean, running_var, mean, var, count, momentum)
    elif rm is None:  # no running statistics: normalise with the batch's own
        mean, var = channel_mean_var(x)
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)

    scale = 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    return _normalize(x, mean, scale, beta)


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    count: int,
    momentum: float,
) -> None:
    """PyTorch's running-statistics update, in place (what ``batch_norm(training=True)`` does).

    ``running = (1 - momentum) * running + momentum * batch_stat``, where the variance
    used is the unbiased ``var * count / (count - 1)`` of a batch whose biased variance
    is ``var`` over ``count`` values per channel.

    Parameters
    ----------
    running_mean, running_var : ndarray of shape (C,), writeable float
    mean, var : ndarray of shape (C,)
        The batch's mean and biased variance.
    count : int
        Values per channel in the batch (N * H * W).
    momentum : float
    """
    _check_updatable(running_mean, running_var)
    unbiased = var * (count / (count - 1)) if count > 1 else var
    running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased


def _check_updatable(running_mean: object, running_var: object) -> None:
    """Refuse running statistics that cannot be updated in place."""
    if not (isinstance(running_mean, np.ndarray) and isinstance(running_var, np.ndarray)):
        raise CbrError("running_mean and running_var must be numpy arrays to be updated in place")
    for name, buf in (("running_mean", running_mean), ("running_var", running_var)):
        if buf.dtype.kind != "f" or not buf.flags.writeable:
            raise CbrError(f"{name} must be a writeable float array to be updated in place")


def batch_stats(input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistics ``batch_norm(training=True)`` normalises with.

    Per-channel mean and **biased** variance over every axis but 1, float64 (see
    :func:`channel_mean_var`). Like PyTorch, refuses a batch with only one value per
    channel (its variance would be 0 and the output all zeros).

    Parameters
    ----------
    input : ndarray of shape (N, C, ...)

    Returns
    -------
    mean, var : ndarray of shape (C,), float64
    """
    x = as_float(input, "input")
    if x.ndim < 2:
        raise CbrError(f"input must have shape (N, C, ...), but got shape {x.shape}")
    if x.size // max(x.shape[1], 1) <= 1:
        raise CbrError(
            f"batch_norm in training mode needs more than 1 value per channel, "
            f"but got input shape {x.shape}"
        )
    return channel_mean_var(x)


def _normalize(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, beta: np.ndarray | None
) -> np.ndarray:
    """``(x - mean[c]) * scale[c] (+ beta[c])`` per channel of (N, C, ...), in blocks.

    Subtracting first (rather than PyTorch's ``x * scale + shift``) keeps a constant
    channel exactly 0 and avoids cancellation near the mean; both agree within float32
    rounding of the output's scale.
    """
    out = np.empty_like(x)
    planes = x.reshape(x.shape[0], x.shape[1], -1)
    target = out.reshape(planes.shape)
    size = planes.shape[2]
    step = max(1, min(size, BLOCK_VALUES))
    mean, scale = mean.astype(x.dtype), scale.astype(x.dtype)
    shift = None if beta is None else beta.astype(x.dtype)
    blocks = [
        (n, c, s)
        for n in range(planes.shape[0])
        for c in range(planes.shape[1])
        for s in range(0, size, step)
    ]

    def run(block: tuple[int, int, int], _: None) -> None:
        n, c, s = block
        o = target[n, c, s : s + step]
        np.subtract(planes[n, c, s : s + step], mean[c], out=o)
        o *= scale[c]
        if shift is not None:
            o += shift[c]

    run_tasks(blocks, run, lambda: None)
    return out


def _blockwise(
    x: np.ndarray,
    out: np.ndarray,
    apply: Callable[[np.ndarray, np.ndarray, np.ndarray | None], None],
    scratch: bool = False,
) -> None:
    """``apply(x_block, out_block, buffer)`` over cache-sized stretches of C-ordered
    arrays, on all cores; ``buffer`` is a block-sized array of the thread's own if
    ``scratch``, else None.

    Elementwise passes are memory-bound; one thread cannot saturate the memory bus.
    """
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    step = max(1, min(flat_in.size, BLOCK_VALUES))
    run_tasks(
        range(0, flat_in.size, step),
        lambda s, buffer: apply(flat_in[s : s + step], flat_out[s : s + step], buffer),
        (lambda: np.empty(step, x.dtype)) if scratch else (lambda: None),
    )


def relu(input: np.ndarray, inplace: bool = False) -> np.ndarray:
    """``max(x, 0)`` elementwise, as ``torch.nn.functional.relu`` (NaN propagates)."""
    x = as_float(input, "input")
    if not x.flags.c_contiguous:  # a strided view: one numpy pass (in place if asked)
        return np.maximum(x, 0, out=x if inplace else None)
    out = x if inplace else np.empty_like(x)
    # Against a block of zeros rather than the scalar 0: numpy 2.4's maximum with a
    # scalar operand ran 1.8x slower (3.7 vs 2.05 ms on 16 MiB, one thread).
    zeros = np.zeros(min(x.size, BLOCK_VALUES), x.dtype)
    _blockwise(x, out, lambda a, b, _: np.maximum(a, zeros[: a.size], out=b))
    return out


def leaky_relu(
    input: np.ndarray, negative_slope: float = 0.01, inplace: bool = False
) -> np.ndarray:
    """``x if x > 0 else negative_slope * x``, as ``torch.nn.functional.leaky_relu``."""
    x = as_float(input, "input")
    if not _is_real(negative_slope) or not np.isfinite(negative_slope):
        raise CbrError(f"negative_slope must be a finite number, but got {negative_slope!r}")
    slope = x.dtype.type(negative_slope)
    out = x if inplace else np.empty_like(x)
    fast = bool(0 < slope <= 1)  # then max(x, slope * x) is the same, without a mask

    def apply(a: np.ndarray, b: np.ndarray, scratch: np.ndarray | None) -> None:
        if scratch is not None:
            scaled = scratch[: a.size].reshape(a.shape)
            np.multiply(a, slope, out=scaled)
            np.maximum(a, scaled, out=b)
            return
        negative = a < 0
        if b is not a:
            np.copyto(b, a)
        np.multiply(a, slope, out=b, where=negative)

    if x.flags.c_contiguous:
        _blockwise(x, out, apply, scratch=fast)
    else:  # a strided view: numpy passes over the whole array
        apply(x, out, np.empty(x.size, x.dtype) if fast else None)
    return out


def conv2d_bn_act(
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    bn_weight: np.ndarray | None = None,
    bn_bias: np.ndarray | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    activation: str = "relu",
    negative_slope: float = 0.01,
    keep_stages: bool = False,
    method: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conv2d -> BatchNorm -> activation in one call, fused: the same numbers as
    ``conv2d``, ``batch_norm`` and ``relu``/``leaky_relu`` one after the other, in fewer
    passes over memory.

    With batch statistics (``training=True``, or no running statistics) the per-channel
    moments are taken while each chunk of the convolution's output is in cache, and one
    more pass normalises and activates, in place (or into the kept stages); with running
    statistics (``training=False``) the normalisation and activation happen in the
    convolution's own output pass.  See :mod:`cbr_cli.core.fused`.

    Parameters
    ----------
    input : ndarray of shape (N, C_in, H, W) or (C_in, H, W)
    weight : ndarray of shape (C_out, C_in / groups, kH, kW)
    bias : ndarray of shape (C_out,), optional
        The convolution's bias (cancelled by batch statistics, kept in the conv stage).
    stride, padding, dilation, groups, padding_mode
        As :func:`conv2d`.
    running_mean, running_var : ndarray of shape (C_out,), optional
        As :func:`batch_norm`: used to normalise when ``training=False``; updated in place
        when ``training=True`` (``(1 - momentum) * running + momentum * batch``, unbiased
        variance).
    bn_weight, bn_bias : ndarray of shape (C_out,), optional
        BatchNorm's affine parameters (gamma, beta); default 1 and 0.
    training : bool
        Normalise with the batch's statistics (over N, H_out, W_out).
    momentum : float in [0, 1]
    eps : float > 0
    activation : ``"relu"``, ``"leaky_relu"`` or ``"none"``
    negative_slope : float
        For ``"leaky_relu"``: ``x if x > 0 else negative_slope * x``.
    keep_stages : bool
        Return all three stages instead of the activation only.
    method : ``"auto"``, ``"direct"`` or ``"fft"``
        The convolution engine, as :func:`conv2d`.

    Returns
    -------
    ndarray of shape (N, C_out, H_out, W_out), or (C_out, H_out, W_out) for 3-D input
        The activation's output (shapes as :func:`conv2d`), dtype per :func:`as_float`;
        with ``keep_stages=True`` the tuple ``(conv, bn, act)`` of three such arrays,
        ``act`` being ``bn`` itself for ``activation="none"``.
    """
    stages = conv_bn_act_stages(
        input,
        weight,
        bias,
        stride,
        padding,
        dilation,
        groups,
        padding_mode,
        running_mean=running_mean,
        running_var=running_var,
        bn_weight=bn_weight,
        bn_bias=bn_bias,
        training=training,
        momentum=momentum,
        eps=eps,
        activation=activation,
        negative_slope=negative_slope,
        keep_stages=keep_stages,
        method=method,
    )
    if keep_stages:
        return stages.conv, stages.bn, stages.act
    return stages.act


def conv_bn_act_stages(
    input: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    *,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    bn_weight: np.ndarray | None = None,
    bn_bias: np.ndarray | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    activation: str = "relu",
    negative_slope: float = 0.01,
    keep_stages: bool = False,
    method: str = "auto",
) -> Stages:
    """:func:`conv2d_bn_act`, returning a :class:`~cbr_cli.core.fused.Stages`: the arrays
    (``conv`` and ``bn`` meaningful only with ``keep_stages``) and the float64 mean and
    biased variance BN normalised with, as the pipeline reports them."""
    conv = _conv_arguments(
        input, weight, bias, stride, padding, dilation, groups, padding_mode, method
    )
    dtype = conv.x.dtype
    c_out = conv.weight.shape[0]
    rm, rv, gamma, beta = _bn_arguments(
        c_out, dtype, running_mean, running_var, bn_weight, bn_bias, momentum, eps
    )
    if activation not in ACTIVATIONS:
        raise CbrError(
            f"activation must be one of {list(ACTIVATIONS)}, but got activation={activation!r}"
        )
    if not _is_real(negative_slope) or not np.isfinite(negative_slope):
        raise CbrError(f"negative_slope must be a finite number, but got {negative_slope!r}")
    out_shape = (conv.x.shape[0], c_out, *conv.geo.out_hw)
    count = conv.x.shape[0] * conv.geo.out_hw[0] * conv.geo.out_hw[1]
    if count == 0:
        raise CbrError(f"input must not be empty, but got shape {conv.x.shape}")
    if training:
        if count <= 1:
            raise CbrError(
                f"batch_norm in training mode needs more than 1 value per channel, "
                f"but got input shape {out_shape}"
            )
        if rm is not None:
            _check_updatable(running_mean, running_var)
    stats = None
    if not training and rm is not None:
        stats = rm.astype(np.float64), rv.astype(np.float64)
    stages = conv_bn_act(
        conv.x,
        conv.weight,
        conv.bias,
        conv.geo,
        groups,
        padding_mode,
        conv.method,
        stats=stats,
        gamma=gamma,
        beta=beta,
        eps=float(eps),
        activation=activation,
        slope=float(negative_slope),
        keep_stages=keep_stages,
    )
    if training and rm is not None:
        update_running_stats(running_mean, running_var, stages.mean, stages.var, count, momentum)
    if conv.unbatched:  # drop the batch axis, keeping which stages are one array
        conv0 = stages.conv[0]
        bn0 = conv0 if stages.bn is stages.conv else stages.bn[0]
        act0 = bn0 if stages.act is stages.bn else stages.act[0]
        stages = Stages(conv0, bn0, act0, stages.mean, stages.var, count)
    return stages
