"""The public numerical API: Conv2d, BatchNorm and (Leaky)ReLU on numpy arrays, torch-like.

A stable import path for users' code (``from cbr_cli.ops import conv2d``); the
implementation lives in :mod:`cbr_cli.core.ops`.
"""

from cbr_cli.core.ops import (
    METHODS,
    as_float,
    batch_norm,
    batch_stats,
    channel_mean_var,
    conv2d,
    conv2d_bn_act,
    leaky_relu,
    relu,
    update_running_stats,
)

__all__ = [
    "METHODS",
    "as_float",
    "batch_norm",
    "batch_stats",
    "channel_mean_var",
    "conv2d",
    "conv2d_bn_act",
    "leaky_relu",
    "relu",
    "update_running_stats",
]
