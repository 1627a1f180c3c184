"""Start-up time of ``cbr`` commands against ``python -c "import typer, rich.console"``.

Usage::

    python benchmarks/bench_startup.py [--repeat 15]

Every command runs in a fresh interpreter (the one running this script, so the same
virtual environment); the commands are interleaved round-robin after one warm-up run
each, so machine noise hits all of them alike.  Reported: median and minimum wall time
and the ratio of medians to the baseline.  Targets: ``cbr --help`` <= 1.4x and
``cbr shape`` <= 1.6x (the issue's budget); ``shape -k sobel`` needs numpy to size the
built-in kernels and ``shape -c`` needs PyYAML, so they are reported against the same
1.6x for information.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = """\
layers:
  - name: stem
    conv: {out_channels: 64, kernel_size: 7, stride: 2, padding: 3, bias: false}
    bn: batch
  - name: down
    conv: {out_channels: 128, kernel_size: 3, stride: 2, padding: 1}
"""


def commands(config: str) -> list[tuple[str, list[str], float | None]]:
    """``(label, argv after the interpreter, target ratio or None)``; the first is the baseline."""
    cbr = ["-m", "cbr_cli"]
    shape = [*cbr, "shape", "--input", "3x224x224"]
    return [
        ("import typer, rich.console", ["-c", "import typer, rich.console"], None),
        ("cbr --help", [*cbr, "--help"], 1.4),
        ("cbr shape --help", [*cbr, "shape", "--help"], 1.6),
        (
            "cbr shape --input 3x224x224 --out-channels 64 --kernel-size 7",
            [*shape, "--out-channels", "64", "--kernel-size", "7", "--stride", "2"],
            1.6,
        ),
        ("cbr shape --input 3x224x224 -k sobel", [*shape, "-k", "sobel"], 1.6),
        (
            "cbr shape -c stem.yaml --input 224x224",
            [*cbr, "shape", "-c", config, "--input", "224x224"],
            1.6,
        ),
    ]


# An installed package has its bytecode compiled (pip does it at install time); an
# editable checkout gets it on first import, unless PYTHONDONTWRITEBYTECODE forbids it,
# in which case every run recompiles cbr's modules (~30 ms) but not typer's or rich's.
# Allow bytecode so the warm-up run writes it and cbr is measured as users run it.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "stem.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        cases = commands(str(config))
        times: list[list[float]] = [[] for _ in cases]
        for _, argv, _ in cases:
            run_once(argv)  # warm-up: page cache, .pyc files
        for _ in range(args.repeat):
            for index, (_, argv, _) in enumerate(cases):
                times[index].append(run_once(argv))

    baseline = statistics.median(times[0])
    print(f"python {sys.version.split()[0]}, {args.repeat} runs each, interleaved")
    print(f"{'command':<62} {'median':>8} {'min':>8} {'ratio':>6}  target")
    failed = False
    for (label, _, target), samples in zip(cases, times, strict=True):
        median = statistics.median(samples)
        ratio = median / baseline
        verdict = ""
        if target is not None:
            ok = ratio <= target
            failed |= not ok
            verdict = f"<= {target:.1f}x {'ok' if ok else 'OVER'}"
        print(
            f"{label:<62} {median * 1000:7.1f}ms {min(samples) * 1000:7.1f}ms "
            f"{ratio:5.2f}x  {verdict}"
        )
    if failed:
        print("some commands are over their start-up budget")


if __name__ == "__main__":
    main()
