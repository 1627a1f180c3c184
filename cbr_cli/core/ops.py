"""Conv2d, BatchNorm and (Leaky)ReLU on numpy arrays, with ``torch.nn.functional`` semantics.

Importable on its own: numpy (and, lazily, ``scipy.fft``) only — no typer, rich or Pillow.

Dtype policy (:func:`as_float`): float32 in → float32 out, float64 stays float64,
everything else (integers, bool, float16) is computed in float32.

Every invalid argument raises :class:`cbr_cli.errors.CbrError` naming the parameter
and the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbr_cli.core.activations import leaky_relu, relu
from cbr_cli.core.batchnorm import (
    _bn_arguments,
    _check_updatable,
    batch_norm,
    batch_stats,
    update_running_stats,
)
from cbr_cli.core.conv_cost import choose_method
from cbr_cli.core.conv_direct import conv2d_direct
from cbr_cli.core.conv_fft import conv2d_fft
from cbr_cli.core.dtypes import _check_finite, _is_real, as_float
from cbr_cli.core.fused import ACTIVATIONS, Stages, conv_bn_act
from cbr_cli.core.moments import channel_mean_var
from cbr_cli.core.shapes import ConvGeometry, IntOrPair, Padding, conv2d_geometry, crop_zero_taps
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
