"""The memory check's estimate against the peak RSS of real ``cbr apply`` runs.

Each run is ``python -m cbr_cli apply`` in a fresh interpreter that reports its own peak
RSS (``VmHWM``: ``getrusage``'s ``ru_maxrss`` would carry pytest's own peak over the
fork and exec) and its RSS when the check runs (``run.memory.check_memory``, wrapped).
What the run adds after the check is what the estimate must cover: the decoded images
and the imported modules are already there, and the check compares the estimate with
the memory available at that moment.  Sizes are chosen so that the feature maps
dominate (100-600 MB), not the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbr_cli.run.allocator import USER_SETTINGS
from cbr_cli.run.memory import apply_peak, geometry
from cbr_cli.spec.flags import LayerFlags, build_spec

WRAPPER = r"""
import atexit, re, runpy, sys

import cbr_cli.run.apply as apply

checked = []
original = apply.check_memory


def status(field):
    with open("/proc/self/status") as lines:
        return int(re.search(field + r":\s+(\d+)", lines.read()).group(1)) * 1024


def check_memory(*args, **kwargs):
    checked.append(status("VmRSS"))
    return original(*args, **kwargs)


def report():  # at exit: cbr ends its process itself (cli.process_exit), after atexit
    sys.stderr.write(f"rss-at-check {checked[0]} peak-rss {status('VmHWM')}\n")


apply.check_memory = check_memory
atexit.register(report)
sys.argv = ["cbr", *sys.argv[1:]]
runpy.run_module("cbr_cli", run_name="__main__")
"""

TWO_LAYERS = """\
layers:
  - conv: {out_channels: 32, kernel_size: 3, padding: same}
  - conv: {out_channels: 48, kernel_size: 3, stride: 2}
    bn: running
    activation: leaky_relu
"""

# (height, width, image channels, images, apply arguments)
CASES = [
    (256, 256, 3, 1, ["--out-channels", "64"]),
    (512, 512, 1, 1, ["--out-channels", "64"]),
    (768, 512, 3, 1, ["--out-channels", "48"]),
    (384, 384, 3, 3, ["--out-channels", "32"]),  # one batch: bn batch couples the images
    (512, 512, 3, 1, ["-c", "two.yaml"]),
    (1024, 1024, 3, 1, ["--out-channels", "24", "--no-channel-pngs", "--save-npy"]),
]


def measured_peak(tmp_path: Path, case) -> tuple[int, int]:
    """(estimate, measured) bytes for one case."""
    height, width, channels, images, args = case
    (tmp_path / "two.yaml").write_text(TWO_LAYERS)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        pixels = (rng.random((height, width, channels)) * 255).astype(np.uint8)
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(paths[-1])
    args = [str(tmp_path / a) if a.endswith(".yaml") else a for a in args]
    command = [sys.executable, "-c", WRAPPER, "apply", *map(str, paths), "-o", "out", *args]
    # cbr's own malloc settings (run.allocator), not those a Dask cluster started by an
    # earlier test left in this process's environment (MALLOC_TRIM_THRESHOLD_).
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report = done.stderr.strip().splitlines()[-1].split()
    at_check, peak = int(report[1]), int(report[3])

    if "-c" in args:
        spec = build_spec(Path(args[args.index("-c") + 1]), LayerFlags())
    else:
        spec = build_spec(None, LayerFlags(out_channels=int(args[1])))
    stack = geometry(spec, (channels, height, width))
    estimate = apply_peak(
        stack,
        images,
        channel_pngs="--no-channel-pngs" not in args,
        report="--no-report" not in args,
    ).total
    return estimate, peak - at_check


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS (Linux)")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-n{c[3]}-{c[4][-1]}")
def test_estimate_bounds_the_measured_peak_within_30_percent(tmp_path: Path, case) -> None:
    estimate, measured = measured_peak(tmp_path, case)
    assert measured > 80 * 2**20, measured  # the maps dominate, not the interpreter
    assert estimate >= measured, (estimate / 2**20, measured / 2**20)
    assert estimate <= 1.3 * measured, (estimate / 2**20, measured / 2**20)


if __name__ == "__main__":  # the table: python -m tests.run.test_memory_peak [HxWxC ...]
    import tempfile

    extra = [
        (*map(int, size.split("x")[:2]), 3, 1, ["--out-channels", size.split("x")[2]])
        for size in sys.argv[1:]
    ]
    print(f"{'case':52} {'estimate':>10} {'measured':>10} {'ratio':>6}")
    for case in CASES + extra:
        with tempfile.TemporaryDirectory() as tmp:
            estimate, measured = measured_peak(Path(tmp), case)
        name = f"{case[0]}x{case[1]}x{case[2]} n={case[3]} {' '.join(case[4])}"
        sizes = f"{estimate / 2**20:8.1f}Mi {measured / 2**20:8.1f}Mi"
        print(f"{name:52} {sizes} {estimate / measured:6.2f}")
