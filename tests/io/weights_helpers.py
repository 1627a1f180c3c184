"""Shared by the weight-file tests: fixture paths, torch's stage outputs, running stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbr_cli import ops

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "weights"
STATE_FILES = ("model.safetensors", "model.npz", "model.pth")

# The fixture network (tests/fixtures/make_weights.py), stage by stage, for state_dicts:
# geometry cannot come from the file, so it is stated here as the YAML would state it.
STAGES = [
    ("conv1", "conv", {"stride": 2, "padding": 3}),
    ("bn1", "bn", {}),
    ("relu1", "relu", {}),
    ("conv2", "conv", {"padding": 1}),
    ("bn2", "bn", {}),
    ("relu2", "relu", {}),
    ("features.0", "conv", {"padding": 1, "groups": 8}),
    ("features.1", "bn", {}),
    ("features.2", "leaky_relu", {"negative_slope": 0.1}),
    ("features.3", "conv", {}),
    ("features.4", "bn", {}),
    ("features.5", "leaky_relu", {"negative_slope": 0.1}),
]


def outputs() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "outputs.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def reference_state() -> dict[str, np.ndarray]:
    """The state_dict as torch wrote it (``np.savez`` of ``.numpy()``), read by numpy itself."""
    with np.load(FIXTURES / "model.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def conv_magnitude(x: np.ndarray, weight: np.ndarray, bias, **geometry) -> float:
    """``max(|b| + conv(|x|, |w|))`` in float64: the scale of a conv's rounding errors."""
    mag = ops.conv2d(np.abs(x).astype(np.float64), np.abs(weight).astype(np.float64), **geometry)
    if bias is not None:
        mag = mag + np.abs(bias).astype(np.float64).reshape(1, -1, 1, 1)
    return float(mag.max())


def check_conv(x, expected, weight, bias, **geometry) -> float:
    """Run ops.conv2d and compare at test_golden's tolerance; returns max |error|."""
    got = ops.conv2d(x, weight, bias, **geometry)
    atol = 1e-6 * conv_magnitude(x, weight, bias, **geometry)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=atol)
    return float(np.abs(got - expected).max())


def check_bn(x, expected, weight, bias, mean, var, eps) -> float:
    got = ops.batch_norm(x, mean, var, weight, bias, training=False, eps=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    return float(np.abs(got - expected).max())


def check_activation(x, expected, activation: str, negative_slope: float = 0.01) -> float:
    """ReLU and LeakyReLU are one rounding (or none) per element: equal to torch's bit for bit."""
    got = ops.relu(x) if activation == "relu" else ops.leaky_relu(x, negative_slope)
    np.testing.assert_array_equal(got, expected)
    return float(np.abs(got - expected).max())
