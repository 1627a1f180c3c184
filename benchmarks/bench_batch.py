"""``cbr batch`` against the script a user would otherwise write (issue 12), end to end.

Usage::

    python benchmarks/bench_batch.py [--rounds 3] [--images 48] [--size 288] [--jobs 2]

Writes a folder of real-image crops (``--images`` RGB crops of ``--size``² cut from
samples/, grey samples repeated to RGB) and the parameters of one 16-channel block (k3,
padding 1, conv bias, eval-mode BatchNorm with non-trivial running statistics and affine
parameters) as ``.npy`` files, then runs, interleaved round by round (each command a fresh
process, into a fresh output folder, so start-up and imports count):

* **reference** -- ``benchmarks/batch_reference.py``: torch + Pillow in a 2-process pool,
  per stage ``np.save``, a grid PNG and one PNG per channel (8-bit, per-stage min-max,
  Pillow's default compression);
* **cbr** -- ``cbr batch IN -o OUT -c block.yaml -j 2 --save-npy --no-report`` (the same
  block as YAML, ``bn: {mode: running, ...}``): the same arrays, grids and per-channel
  PNGs (plus cbr's input.png, statistics and folder reports);
* **reference npy** -- the reference with ``--no-pngs`` (arrays only);
* **cbr npy** -- ``cbr batch ... --no-pngs --save-npy``, when ``cbr batch --help`` lists
  ``--no-pngs`` (else the row reads ``n/a``);
* **files alone** -- ``benchmarks/io_floor.py``: cbr's output tree of that kind (from one
  untimed run) written again from memory by 2 processes, temporary file and rename per file,
  nothing computed: what any program writing these files pays on this machine's disk.
  Its images/s over the reference's (*ceiling*) is the most any cbr could reach.

Reported: images/s per config, median over rounds with the lowest and highest round; the
ratio cbr/reference is the median of the per-round ratios of images/s (each pair runs back
to back, so noise hits both alike), judged against issue 12's targets: >= 8x with PNGs,
>= 2x arrays only. Before timing, one image's arrays from both runs are compared (they
must agree to float32 rounding), so the two compute the same thing. Needs torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bytecode_cache import cache_bytecode  # benchmarks/, the script's folder
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "benchmarks" / "batch_reference.py"
FLOOR = ROOT / "benchmarks" / "io_floor.py"
CHANNELS = 16
TARGETS = {"pngs": 8.0, "npy": 2.0}  # issue 12: cbr images/s over the reference's

BLOCK_YAML = """\
input: {color: rgb}
layers:
  - name: block
    conv: {weight: weight.npy, bias: bias.npy, padding: 1}
    bn: {mode: running, running_mean: running_mean.npy, running_var: running_var.npy,
         weight: bn_weight.npy, bias: bn_bias.npy, eps: 1e-5}
    activation: relu
"""


def write_crops(folder: Path, count: int, size: int) -> None:
    """``count`` RGB crops of ``size``² from samples/, at offsets spread over each photo."""
    folder.mkdir(parents=True)
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "samples").glob("*.png"))]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        if min(width, height) < size:  # chelsea is 451x300: enlarge before cropping
            scale = size / min(width, height)
            photo = photo.resize((round(width * scale) + 1, round(height * scale) + 1))
            width, height = photo.size
        left = int(rng.integers(0, width - size + 1))
        top = int(rng.integers(0, height - size + 1))
        photo.crop((left, top, left + size, top + size)).save(folder / f"crop{i:03d}.png")


def write_params(folder: Path) -> None:
    """One block's tensors as ``.npy`` (PyTorch's default init ranges) and its YAML."""
    rng = np.random.default_rng(1)
    bound = 1 / np.sqrt(3 * 3 * 3)
    tensors = {
        "weight": rng.uniform(-bound, bound, (CHANNELS, 3, 3, 3)),
        "bias": rng.uniform(-bound, bound, CHANNELS),
        "running_mean": rng.normal(0.0, 0.2, CHANNELS),
        "running_var": rng.uniform(0.05, 0.5, CHANNELS),
        "bn_weight": rng.uniform(0.5, 1.5, CHANNELS),
        "bn_bias": rng.normal(0.0, 0.1, CHANNELS),
    }
    for name, value in tensors.items():
        np.save(folder / f"{name}.npy", value.astype(np.float32))
    (folder / "block.yaml").write_text(BLOCK_YAML, encoding="utf-8")


def has_no_pngs() -> bool:
    """Does this checkout's ``cbr batch`` take ``--no-pngs``?"""
    result = subprocess.run(
        [sys.executable, "-m", "cbr_cli", "batch", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    )
    return "--no-pngs" in result.stdout


@dataclass
class Config:
    label: str
    kind: str  # "pngs" or "npy"
    side: str  # "reference", "cbr" or "floor"
    argv: list[str]
    rates: list[float] = field(default_factory=list)


def commands(work: Path, jobs: int, no_pngs: bool) -> list[Config]:
    crops, params, out = str(work / "crops"), str(work / "params"), str(work / "out")
    ref = [sys.executable, str(REFERENCE), crops, out, params, "-j", str(jobs)]
    cbr = [sys.executable, "-m", "cbr_cli", "batch", crops, "-o", out, "-j", str(jobs)]
    # --no-report: the reference writes no HTML pages, kernels or histogram pictures.
    cbr += ["-c", str(work / "params" / "block.yaml"), "--save-npy", "--no-report"]
    configs = [
        Config("reference (torch+Pillow, PNGs+npy)", "pngs", "reference", ref),
        Config("cbr batch --save-npy", "pngs", "cbr", cbr),
        Config("reference --no-pngs (npy only)", "npy", "reference", [*ref, "--no-pngs"]),
    ]
    if no_pngs:
        configs.append(Config("cbr batch --no-pngs --save-npy", "npy", "cbr", [*cbr, "--no-pngs"]))
    return configs


def floor_configs(configs: list[Config], work: Path, jobs: int) -> list[Config]:
    """Per kind, a "files alone" config writing the tree one untimed cbr run leaves."""
    floors = []
    for config in configs:
        if config.side != "cbr":
            continue
        tree = work / f"tree_{config.kind}"
        run_once(config, work / "out")
        shutil.rmtree(tree, ignore_errors=True)
        (work / "out").rename(tree)
        argv = [sys.executable, str(FLOOR), str(tree), str(work / "out"), "-j", str(jobs)]
        floors.append(Config("  files alone (io_floor.py)", config.kind, "floor", argv))
    return floors


def run_once(config: Config, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(config.argv, cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(config.argv)}\n{result.stderr.decode()}")
    if config.side == "floor":  # it times its writes itself (its input is read untimed)
        return float(result.stdout.split()[0])
    return elapsed


def check_same_maps(configs: list[Config], out: Path) -> float:
    """Run the reference and cbr once; the largest relative difference of crop000's arrays."""
    by_side = {c.side: c for c in configs if c.kind == "pngs"}
    run_once(by_side["reference"], out)
    reference = {s: np.load(out / "crop000" / f"{s}.npy") for s in ("conv", "bn", "act")}
    run_once(by_side["cbr"], out)
    worst = 0.0
    for stage, expected in reference.items():
        got = np.load(out / "crop000" / f"block_{stage}.npy")
        if got.shape != expected.shape:
            raise SystemExit(f"{stage}: cbr {got.shape} vs reference {expected.shape}")
        scale = float(np.abs(expected).max()) or 1.0
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    if worst > 1e-5:
        raise SystemExit(f"cbr and the reference disagree: max relative difference {worst:.2e}")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (>= 3)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    no_pngs = has_no_pngs()
    with tempfile.TemporaryDirectory() as tmp:
        cache_bytecode(tmp)  # as a user's install runs: bytecode/.pyc cached
        work = Path(tmp)
        write_crops(work / "crops", args.images, args.size)
        (work / "params").mkdir()
        write_params(work / "params")
        configs = commands(work, args.jobs, no_pngs)
        worst = check_same_maps(configs, work / "out")
        configs += floor_configs(configs, work, args.jobs)
        for _ in range(args.rounds):
            for config in configs:
                config.rates.append(args.images / run_once(config, work / "out"))

    print(
        f"{args.images} RGB crops of {args.size}² from samples/, one {CHANNELS}-channel block "
        f"(k3, pad 1, BN eval, ReLU), -j {args.jobs}; {args.rounds} rounds, interleaved; "
        f"cbr vs reference arrays: max rel. diff {worst:.1e}"
    )
    print(f"{'config':<36} {'images/s':>8} {'(min-max)':>13} {'cbr/ref':>8} {'target':>7}")
    for kind in ("pngs", "npy"):
        pair = {c.side: c for c in configs if c.kind == kind}
        for config in pair.values():
            rates = config.rates
            line = f"{config.label:<36} {statistics.median(rates):8.2f} "
            line += f"{f'({min(rates):.2f}-{max(rates):.2f})':>13}"
            if config.side != "reference":
                ratios = [a / b for a, b in zip(rates, pair["reference"].rates, strict=True)]
                ratio = statistics.median(ratios)
                if config.side == "cbr":
                    verdict = "ok" if ratio >= TARGETS[kind] else "MISS"
                    line += f" {ratio:7.2f}x  >= {TARGETS[kind]:.0f}x {verdict}"
                else:
                    line += f" {ratio:7.2f}x  ceiling"
                line += f"  (rounds {min(ratios):.2f}-{max(ratios):.2f})"
            print(line)
        if "cbr" not in pair:
            print(f"{'cbr batch --no-pngs --save-npy':<36} n/a (no --no-pngs yet)")
    print(
        "images/s: images / wall time of the whole command (interpreter start, imports, pool"
        "\nstart-up, all files); cbr/ref: median of per-round ratios (lowest-highest round)."
        "\nfiles alone: cbr's files written from memory, nothing computed (its write time):"
        "\nits ratio is the ceiling this disk puts on any program writing those files."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
