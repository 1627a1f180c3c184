"""Time Conv -> BatchNorm -> ReLU in cbr against torch and a scipy.ndimage loop.

Usage::

    python benchmarks/bench_ops.py [--repeat N] [--configs rgb512,deep]

Every configuration runs the same float32 pipeline three ways:

* **cbr** — ``ops.conv2d`` (``method="auto"``, no bias, as before a BatchNorm) ->
  ``ops.batch_norm`` (batch statistics, ``training=True``, running buffers updated) ->
  ``ops.relu(inplace=True)``;
* **torch** — the same through ``torch.nn.functional`` (``conv2d``, ``batch_norm``,
  ``relu(inplace=True)``) with ``torch.set_num_threads`` equal to numpy's BLAS
  threads; skipped when torch is not importable;
* **ndimage** — the naive SciPy baseline: for every (output, input) channel pair one
  ``scipy.ndimage.correlate`` at full resolution (subsampled afterwards for stride > 1),
  summed over the input channels, then cbr's BatchNorm and ReLU.  When that loop would
  take long, a subset of the pairs is timed and scaled to all pairs (marked ``~``).

cbr and torch run alternately, one after the other in each of ``--repeat`` rounds
after a warm-up, so that load from other processes hits both alike; the table shows
median times and the median of the per-round ratios (with the lowest and highest
round, and the issue's target for that ratio).  ``conv`` and ``bn+relu`` are the two
halves of cbr's pipeline timed on their own (medians, same repeats).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from threadpoolctl import threadpool_info

from cbr_cli.core import ops
from cbr_cli.core.conv_cost import choose_method
from cbr_cli.core.shapes import conv2d_geometry
from cbr_cli.core.threads import thread_count

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None

# Longest one repeat of the ndimage baseline may run before it is timed on a subset.
NDIMAGE_BUDGET_SECONDS = 2.0


@dataclass(frozen=True)
class Config:
    """One case: ``batch`` x ``c_in`` x ``size`` x ``size`` -> ``c_out`` channels."""

    batch: int
    c_in: int
    size: int
    c_out: int
    kernel: int
    stride: int = 1
    padding: int | str = "same"
    groups: int = 1
    target: float = 1.5  # the ceiling on the cbr/torch ratio

    def describe(self) -> str:
        batch = f"{self.batch} x " if self.batch > 1 else ""
        pad = self.padding if isinstance(self.padding, str) else f"p{self.padding}"
        groups = f", g{self.groups}" if self.groups > 1 else ""
        return (
            f"{batch}{self.c_in}x{self.size}x{self.size} -> {self.c_out}, "
            f"k{self.kernel} s{self.stride} {pad}{groups}"
        )


CONFIGS = {
    "rgb512": Config(1, 3, 512, 16, 3),
    "rgb1024": Config(1, 3, 1024, 64, 3),
    "deep": Config(1, 64, 256, 64, 3),
    "stem": Config(1, 3, 1024, 64, 7, stride=2, padding=3),
    "bigkernel": Config(1, 1, 2048, 1, 31, target=1.0),  # FFT must win
    "graybank": Config(1, 1, 1024, 8, 3),
    "depthwise": Config(1, 64, 256, 64, 3, groups=64, target=2.5),  # memory-bound
    "batch16": Config(16, 3, 512, 16, 3),
}


@dataclass
class Inputs:
    x: np.ndarray
    weight: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray


@dataclass
class Row:
    method: str
    conv: float
    bn_relu: float
    cbr: float
    torch: float
    ratio_torch: float
    ratio_range: tuple[float, float]
    ndimage: float
    ndimage_estimated: bool
    max_err: float


def make_inputs(cfg: Config, seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    x = rng.random((cfg.batch, cfg.c_in, cfg.size, cfg.size), dtype=np.float32)
    fan_in = cfg.c_in // cfg.groups * cfg.kernel**2
    shape = (cfg.c_out, cfg.c_in // cfg.groups, cfg.kernel, cfg.kernel)
    weight = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, cfg.c_out).astype(np.float32)
    beta = rng.uniform(-0.1, 0.1, cfg.c_out).astype(np.float32)
    return Inputs(x, weight, gamma, beta)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: FFT plans, page faults, BLAS buffers
    return statistics.median(timed(fn) for _ in range(repeat))


def cbr_conv(cfg: Config, inp: Inputs) -> np.ndarray:
    return ops.conv2d(inp.x, inp.weight, None, cfg.stride, cfg.padding, groups=cfg.groups)


def cbr_bn_relu(inp: Inputs, y: np.ndarray) -> np.ndarray:
    running_mean = np.zeros(y.shape[1], dtype=np.float32)
    running_var = np.ones(y.shape[1], dtype=np.float32)
    y = ops.batch_norm(y, running_mean, running_var, inp.gamma, inp.beta, training=True)
    return ops.relu(y, inplace=True)


def torch_pipeline(cfg: Config, inp: Inputs) -> Callable[[], np.ndarray]:
    x = torch.from_numpy(inp.x)
    weight = torch.from_numpy(inp.weight)
    gamma, beta = torch.from_numpy(inp.gamma), torch.from_numpy(inp.beta)

    def run() -> np.ndarray:
        running_mean = torch.zeros(cfg.c_out)
        running_var = torch.ones(cfg.c_out)
        with torch.no_grad():
            y = F.conv2d(x, weight, None, cfg.stride, cfg.padding, 1, cfg.groups)
            y = F.batch_norm(y, running_mean, running_var, gamma, beta, training=True)
            return F.relu(y, inplace=True).numpy()

    return run


def bn_relu_seconds(inp: Inputs, conv_out: np.ndarray, repeat: int) -> float:
    """cbr's BatchNorm + ReLU on a fresh copy of ``conv_out`` each time, minus the copy."""
    with_copy = median_time(lambda: cbr_bn_relu(inp, conv_out.copy()), repeat)
    return with_copy - median_time(conv_out.copy, repeat)


def ndimage_conv_seconds(cfg: Config, inp: Inputs, repeat: int) -> tuple[float, bool]:
    """Seconds for the per-channel-pair ``ndimage.correlate`` loop; True if extrapolated."""
    pad = cfg.padding if isinstance(cfg.padding, int) else cfg.kernel // 2
    # ndimage centres the kernel: odd kernels with "same" or p = k // 2 line up with torch.
    if pad != cfg.kernel // 2 or cfg.kernel % 2 == 0:
        raise ValueError(f"the ndimage baseline needs centred padding, got {cfg.describe()}")
    c_in_g, c_out_g = cfg.c_in // cfg.groups, cfg.c_out // cfg.groups
    pairs = [
        (n, o, (o // c_out_g) * c_in_g + i, i)
        for n in range(cfg.batch)
        for o in range(cfg.c_out)
        for i in range(c_in_g)
    ]

    def run(subset: list[tuple[int, int, int, int]]) -> None:
        acc = np.empty((cfg.size, cfg.size), dtype=np.float32)
        tmp = np.empty_like(acc)
        for n, o, c, i in subset:
            target = acc if i == 0 else tmp
            ndi.correlate(inp.x[n, c], inp.weight[o, i], output=target, mode="constant")
            if i:
                acc += tmp
            if i == c_in_g - 1:
                np.ascontiguousarray(acc[:: cfg.stride, :: cfg.stride])

    per_pair = timed(lambda: run(pairs[:1]))
    count = min(len(pairs), max(1, int(NDIMAGE_BUDGET_SECONDS / max(per_pair, 1e-9))))
    subset = pairs[:count]
    seconds = median_time(lambda: run(subset), repeat if per_pair * count < 0.5 else 1)
    return seconds * len(pairs) / count, count < len(pairs)


def measure(cfg: Config, repeat: int) -> Row:
    inp = make_inputs(cfg)
    geo = conv2d_geometry((cfg.size, cfg.size), cfg.kernel, cfg.stride, cfg.padding)
    kernel = (cfg.kernel, cfg.kernel)
    method = choose_method(cfg.batch, cfg.c_in, cfg.c_out, cfg.groups, kernel, geo)

    def cbr() -> np.ndarray:
        return cbr_bn_relu(inp, cbr_conv(cfg, inp))

    t_cbr, t_torch, ratios, err = [], [], [], float("nan")
    run_torch = torch_pipeline(cfg, inp) if torch is not None else None
    if run_torch is not None:
        expected = run_torch()
        err = float(np.abs(cbr() - expected).max() / max(float(np.abs(expected).max()), 1e-30))
        del expected
    else:
        cbr()
    for _ in range(repeat):
        t_cbr.append(timed(cbr))
        if run_torch is not None:
            t_torch.append(timed(run_torch))
            ratios.append(t_cbr[-1] / t_torch[-1])

    t_conv = median_time(lambda: cbr_conv(cfg, inp), repeat)
    t_bn = bn_relu_seconds(inp, cbr_conv(cfg, inp), repeat)

    t_ndi, estimated = ndimage_conv_seconds(cfg, inp, repeat)
    nan = float("nan")
    return Row(
        method=method,
        conv=t_conv,
        bn_relu=t_bn,
        cbr=statistics.median(t_cbr),
        torch=statistics.median(t_torch) if t_torch else nan,
        ratio_torch=statistics.median(ratios) if ratios else nan,
        ratio_range=(min(ratios), max(ratios)) if ratios else (nan, nan),
        ndimage=t_ndi + t_bn,
        ndimage_estimated=estimated,
        max_err=err,
    )


def blas_description() -> tuple[int, str]:
    """numpy's BLAS: (threads, "name version (architecture)"), found by threadpoolctl."""
    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    # numpy's own library lives under numpy.libs (wheels) or is the only one loaded.
    mine = [info for info in blas if "numpy" in info.get("filepath", "")] or blas
    if not mine:
        return 1, "BLAS not found by threadpoolctl"
    info = mine[0]
    arch = info.get("architecture", "?")
    return info["num_threads"], f"{info['internal_api']} {info['version']} ({arch})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    threads, blas = blas_description()
    print(f"numpy BLAS: {blas}, {threads} threads; cbr engine threads: {thread_count()}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if var in os.environ:
            print(f"  note: {var}={os.environ[var]}")
    if torch is not None:
        torch.set_num_threads(threads)
        print(f"torch {torch.__version__}: {torch.get_num_threads()} threads")
    else:
        print("torch not importable: torch columns skipped")
    print(f"float32; median of {args.repeat} rounds after a warm-up; times in ms\n")

    header = (
        f"{'config':<10} {'input -> output':<34} {'auto':<6} {'conv':>7} {'bn+relu':>7} "
        f"{'cbr':>7} {'torch':>7} {'cbr/torch':>9} {'range':>11} {'target':>11} "
        f"{'ndimage':>9} {'cbr/ndi':>7} {'max err':>8}"
    )
    print(header)
    print("-" * len(header))
    estimated = False
    for name in names:
        cfg = CONFIGS[name]
        row = measure(cfg, args.repeat)
        estimated |= row.ndimage_estimated
        ndi_text = f"{'~' if row.ndimage_estimated else ''}{row.ndimage * 1e3:.0f}"
        low, high = row.ratio_range
        range_text = f"{low:.2f}-{high:.2f}" if torch is not None else ""
        verdict = "ok" if row.ratio_torch <= cfg.target else "MISS"
        target_text = f"<= {cfg.target:.1f} {verdict}" if torch is not None else ""
        print(
            f"{name:<10} {cfg.describe():<34} {row.method:<6} {row.conv * 1e3:7.1f} "
            f"{row.bn_relu * 1e3:7.1f} {row.cbr * 1e3:7.1f} {row.torch * 1e3:7.1f} "
            f"{row.ratio_torch:9.2f} {range_text:>11} {target_text:>11} {ndi_text:>9} "
            f"{row.cbr / row.ndimage:7.3f} {row.max_err:8.1e}",
            flush=True,
        )
    print(
        "\ncbr/torch: median over rounds of cbr time / torch time, run back to back;"
        " range: lowest and highest round; target: the median against the issue's ceiling."
        "\nmax err: max |cbr - torch| / max |torch| over the pipeline output."
    )
    if estimated:
        print(
            "~ ndimage estimated: a subset of the (output, input) channel pairs was timed and"
            " scaled to all pairs; cbr's BatchNorm + ReLU time added."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
