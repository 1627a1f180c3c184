"""Where does a full `cbr apply` spend its time?

A 1024x1024 RGB photo (samples/astronaut.png upscaled) through one 16-channel block
(k3, same, batch BN, ReLU), all outputs written (per-channel PNGs, grids, npy).
Prints the phase breakdown that `run_apply` records, median over --repeat runs, then
the end-to-end time of the command (`python -m cbr_cli apply ...` in a fresh interpreter,
start-up and imports included) with and without `--save-npy`, interleaved with a bare
`import cbr_cli.cli` start-up, against issue 12's target (<= 0.5 s end to end).

With ``--against DIR`` (a checkout of an earlier cbr, e.g. ``git worktree add /tmp/base
REV``), it instead times the whole command, ``python -m cbr_cli apply`` in a fresh process
(imports included), alternating that checkout and this one round by round on the same
inputs: the 1024x1024 photo through the 16-channel block, and samples/astronaut.png
through the demo pipeline. Prints each side's median and the ratio (this / earlier).
Extra flags for this side only go after ``--``, e.g. ``-- --no-report``.

    python benchmarks/bench_apply.py [--repeat 3] [--no-npy] [--no-e2e]
    python benchmarks/bench_apply.py --against /tmp/base --repeat 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bytecode_cache import cache_bytecode  # benchmarks/, the script's folder
from PIL import Image

from cbr_cli.run.apply import process_image, run_apply
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.flags import LayerFlags, build_spec

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.5  # issue 12: `cbr apply` on a 1024^2 RGB image, one 16-channel block


def end_to_end(photo: Path, tmp: str, repeat: int) -> list[str]:
    """Wall time of the whole command, fresh interpreter each run, interleaved."""
    cli = [sys.executable, "-m", "cbr_cli", "apply", str(photo), "--out-channels", "16"]
    cli += ["--padding", "same", "--bn", "batch"]
    cases = {
        "cbr apply --help (start-up)": [sys.executable, "-m", "cbr_cli", "apply", "--help"],
        "cbr apply (PNGs)": cli,
        "cbr apply --no-report": [*cli, "--no-report"],
        "cbr apply --save-npy": [*cli, "--save-npy"],
    }
    times: dict[str, list[float]] = {label: [] for label in cases}
    for i in range(repeat + 1):  # the first round warms the page cache and .pyc files
        for label, argv in cases.items():
            out = [] if "--help" in argv else ["-o", f"{tmp}/e2e{i}{len(times[label])}"]
            start = time.perf_counter()
            subprocess.run([*argv, *out], cwd=ROOT, check=True, capture_output=True)
            if i:
                times[label].append(time.perf_counter() - start)
    lines = [f"end to end (fresh interpreter), median of {repeat}, interleaved:"]
    for label, samples in times.items():
        median = statistics.median(samples)
        line = f"  {label:<32} {median:6.3f} s  ({min(samples):.3f}-{max(samples):.3f})"
        if "--help" not in label:
            line += f"  target <= {TARGET_SECONDS} s {'ok' if median <= TARGET_SECONDS else 'MISS'}"
        lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-npy", action="store_true")
    parser.add_argument("--against", type=Path, help="an earlier checkout to compare with")
    parser.add_argument("extra", nargs="*", help="flags for this checkout's runs only")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end commands")
    args = parser.parse_args()
    if args.against is not None:
        return compare(args.against, args.repeat, args.extra)

    with tempfile.TemporaryDirectory() as tmp:
        cache_bytecode(tmp)  # as a user's install runs: bytecode/.pyc cached
        photo = Path(tmp) / "astronaut1024.png"
        Image.open(ROOT / "samples" / "astronaut.png").resize((1024, 1024)).save(photo)
        spec = build_spec(None, LayerFlags(out_channels=16, padding="same", bn="batch"))
        runs: list[dict[str, float]] = []
        for i in range(args.repeat):
            options = ApplyOptions(out_dir=f"{tmp}/out{i}", save_npy=not args.no_npy)
            start = time.perf_counter()
            result = run_apply([str(photo)], spec, options)
            total = time.perf_counter() - start
            runs.append({**result.timings, "total": total})
        serial: list[dict[str, float]] = []
        for i in range(args.repeat):  # one thread, phases one after another: clean shares
            timings: dict[str, float] = {}
            options = ApplyOptions(out_dir=f"{tmp}/serial{i}", save_npy=not args.no_npy)
            start = time.perf_counter()
            process_image(str(photo), "a", f"{tmp}/serial{i}/a", spec, options, timings=timings)
            # Writes run inline here, inside the render phase's clock: take them out.
            timings["render"] -= timings.get("encode", 0.0)
            serial.append({**timings, "total": time.perf_counter() - start})
        e2e = [] if args.no_e2e else end_to_end(photo, tmp, args.repeat)
    phases = list(runs[0])
    medians = {p: statistics.median(r[p] for r in runs) for p in phases}
    total = medians["total"]
    print(f"cbr apply, 3x1024x1024 -> 16 (k3 same, BN batch, ReLU), median of {args.repeat}")
    for phase in phases:
        share = 100 * medians[phase] / total
        print(f"  {phase:<8} {medians[phase]:7.3f} s  {share:5.1f}%")
    print("  load/compute/stats/render/write: wall time of the main thread's phases (stats")
    print("  and render run while encoder threads compress earlier PNGs on the same 2 cores,")
    print("  so they are inflated); encode: summed time inside the PNG/npy writer threads.")
    medians = {p: statistics.median(r.get(p, 0.0) for r in serial) for p in serial[0]}
    print(f"serial (one thread, no overlap), median of {args.repeat}:")
    for phase in ("load", "compute", "stats", "render", "encode", "total"):
        share = 100 * medians.get(phase, 0.0) / medians["total"]
        print(f"  {phase:<8} {medians.get(phase, 0.0):7.3f} s  {share:5.1f}%")
    print("  (compute = conv + BN + ReLU; render = colouring + grid montage; encode = PNG/npy)")
    print("\n".join(e2e))
    return 0


def compare(base: Path, repeat: int, extra: list[str]) -> int:
    """Whole-command times of ``base`` against this checkout, interleaved round by round."""
    import os
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        cache_bytecode(tmp)  # as a user's install runs: bytecode/.pyc cached
        photo = Path(tmp) / "astronaut1024.png"
        Image.open(ROOT / "samples" / "astronaut.png").resize((1024, 1024)).save(photo)
        cases = {
            "1024² rgb, 16-ch block": [str(photo), "--out-channels", "16", "--padding", "same"],
            "astronaut 512², demo": [str(ROOT / "samples" / "astronaut.png")],
        }
        sides = {"earlier": (base.resolve(), []), "this": (ROOT, extra)}
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(repeat + 1):  # round 0 warms the disk cache and .pyc files
            for case, argv in cases.items():
                for side, (tree, flags) in sides.items():
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    command = [sys.executable, "-m", "cbr_cli", "apply", *argv]
                    command += ["--out", f"{tmp}/{side}{r}", *flags]
                    start = time.perf_counter()
                    subprocess.run(command, env=env, check=True, capture_output=True, cwd=tree)
                    if r:
                        times.setdefault((case, side), []).append(time.perf_counter() - start)
    print(f"cbr apply end to end (fresh process), median of {repeat} interleaved rounds")
    print(f"  this checkout's extra flags: {' '.join(extra) or '(none)'}")
    print(f"  {'input':<24} {'earlier s':>9} {'this s':>8} {'this/earlier':>12}  range")
    for case in cases:
        old, new = times[(case, "earlier")], times[(case, "this")]
        ratios = sorted(n / o for n, o in zip(new, old, strict=True))
        ratio = statistics.median(new) / statistics.median(old)
        print(
            f"  {case:<24} {statistics.median(old):9.3f} {statistics.median(new):8.3f} "
            f"{ratio:12.2f}  {ratios[0]:.2f}-{ratios[-1]:.2f}"
        )
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
