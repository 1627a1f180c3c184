"""Shared by the weight-file CLI tests: the fixture image, running cbr, reading its arrays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from tests.helpers import one_line_error  # noqa: F401  (re-exported to the weights tests)
from tests.io.weights_helpers import FIXTURES, outputs

runner = CliRunner()

# torch's stage names (tests/fixtures/make_weights.py), block by block: conv, bn, act.
TORCH_BLOCKS = [
    ("conv1", "bn1", "relu1"),
    ("conv2", "bn2", "relu2"),
    ("features.0", "features.1", "features.2"),
    ("features.3", "features.4", "features.5"),
]

STATE_YAML = """\
weights: {weights}
layers:
  - name: conv1
    conv: {{from: conv1, stride: 2, padding: 3}}
    bn: {{from: bn1}}
  - name: conv2
    conv: {{from: conv2, padding: 1}}
    bn: {{from: bn2}}
  - name: dw
    conv: {{from: features.0, padding: 1, groups: 8}}
    bn: {{from: features.1}}
    activation: leaky_relu
    negative_slope: 0.1
  - name: pw
    conv: {{from: features.3}}
    bn: {{from: features.4}}
    activation: leaky_relu
    negative_slope: 0.1
"""


def fixture_image(folder: Path) -> Path:
    """outputs.npz's input (a 32x32 crop of the astronaut, k/255 values) as an 8-bit PNG.

    cbr reads it back as ``k / 255`` in float32: the exact array torch was given.
    """
    pixels = outputs()["input"][0]
    levels = np.rint(pixels * 255).astype(np.uint8)
    assert np.array_equal(levels.astype(np.float32) / np.float32(255), pixels)
    path = folder / "crop.png"
    Image.fromarray(np.moveaxis(levels, 0, -1)).save(path)
    return path


def copy_fixture(name: str, folder: Path) -> Path:
    return Path(shutil.copy(FIXTURES / name, folder / name))


def invoke(args: list[str], env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def apply_json(args: list[str]) -> dict:
    """``cbr apply ... --save-npy --json`` must succeed; returns the printed JSON."""
    result = invoke(["apply", *args, "--save-npy", "--no-channel-pngs", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "error" not in result.stderr
    return json.loads(result.stdout)


def stage_arrays(data: dict) -> dict[tuple[str, str], np.ndarray]:
    """``(layer, stage) -> (C, H, W)`` from the .npy files the JSON lists (one image)."""
    (image,) = data["images"]
    return {(s["layer"], s["stage"]): np.load(s["files"]["npy"]) for s in image["stages"]}


def max_error_vs_torch(data: dict, layer_names: list[str], blocks=TORCH_BLOCKS) -> float:
    """Compare every stage with torch's eval-mode output; returns the max |error|.

    Tolerance: ``rtol=1e-5``, ``atol=1e-5 * max|torch|`` per stage. cbr and torch both
    compute in float32, accumulating the convolutions' (at most 147) products in different
    orders; four convolutions deep the rounding stays within a few float32 ulps (1.2e-7)
    of the stage's largest magnitude, well inside 1e-5 of it (measured: < 4e-7 of it).
    """
    ref = outputs()
    got = stage_arrays(data)
    worst = 0.0
    for name, torch_names in zip(layer_names, blocks, strict=True):
        for stage, torch_name in zip(("conv", "bn", "act"), torch_names, strict=True):
            expected = ref[torch_name][0]
            array = got[(name, stage)]
            np.testing.assert_allclose(
                array, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max())
            )
            worst = max(worst, float(np.abs(array - expected).max()))
    assert len(got) == 3 * len(layer_names)
    return worst
