"""BatchNorm on numpy arrays, as ``torch.nn.functional.batch_norm``, and its running statistics.

Training mode normalises with the batch's per-channel mean and biased variance
(:func:`cbr_cli.core.moments.channel_mean_var`) and updates the running buffers in
place with PyTorch's momentum rule; eval mode normalises with the given buffers.
"""

from __future__ import annotations

import numpy as np

from cbr_cli.core.dtypes import _check_finite, _is_real, as_float
from cbr_cli.core.moments import BLOCK_VALUES, channel_mean_var
from cbr_cli.core.threads import run_tasks
from cbr_cli.errors import CbrError


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
