"""Time the fused Conv -> BatchNorm -> ReLU of cbr against torch, the unfused ops and a copy.

Usage::

    python benchmarks/bench_ops.py [--repeat N] [--configs rgb512,deep] [--ndimage]

Every configuration runs the same float32 pipeline (batch statistics, ``training=True``,
running buffers updated) several ways, one after the other in each of ``--repeat``
rounds after a warm-up, so that load from other processes hits them alike:

* **cbr** -- ``ops.conv2d_bn_act`` (``method="auto"``, no conv bias, ReLU), the fused path;
* **torch** -- ``torch.nn.functional`` ``conv2d``, ``batch_norm``, ``relu(inplace=True)``
  with ``torch.set_num_threads`` equal to numpy's BLAS threads; skipped when torch is
  not importable;
* **unfused** -- cbr's ``conv2d`` -> ``batch_norm`` -> ``relu(inplace=True)``;
* **conv** -- cbr's ``conv2d`` alone;
* **tail** -- the fused op's last pass alone (normalise + ReLU in place over the conv
  output, ``cbr_cli.core.fused.over_blocks``), on a fresh copy of the output each round;
* **copy** -- a plain read+write copy of an output-sized array into another (both
  allocated once), in blocks on cbr's threads: two passes over the output, the memory
  traffic the BN + ReLU tail cannot go below.

The table shows medians; ``bn+relu`` is the median of the per-round ``cbr - conv`` (all
that BatchNorm and ReLU add to the convolution: the moments taken in the conv's output
pass, the merge, the tail pass), ``tail/copy`` the median ratio of the tail pass to the
copy;
``cbr/torch`` is the median of the per-round ratios with the lowest and highest round,
judged against the issue's target for that config.  ``--ndimage`` adds the naive SciPy
baseline: for every (output, input) channel pair one ``scipy.ndimage.correlate``,
summed, then cbr's BatchNorm and ReLU (a subset of the pairs timed and scaled when that
would take long, marked ``~``).
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

from cbr_cli.core import fused, ops
from cbr_cli.core.conv_cost import choose_method
from cbr_cli.core.moments import BLOCK_VALUES
from cbr_cli.core.shapes import conv2d_geometry
from cbr_cli.core.threads import run_tasks, thread_count

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
    target: float = 1.0  # issue 12's ceiling on the median cbr/torch ratio

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
    "rgb1024": Config(1, 3, 1024, 64, 3, target=0.7),
    "deep": Config(1, 64, 256, 64, 3),
    "stem": Config(1, 3, 1024, 64, 7, stride=2, padding=3),
    "bigkernel": Config(1, 1, 2048, 1, 31),  # FFT must win
    "graybank": Config(1, 1, 1024, 8, 3, target=0.7),
    "depthwise": Config(1, 64, 256, 64, 3, groups=64),  # memory-bound
    "batch16": Config(16, 3, 512, 16, 3, target=0.7),
}
# Issue 12's ceiling on the BN + ReLU tail against the read+write copy of the output.
TAIL_TARGET = 1.5


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
    tail: float
    copy: float
    tail_copy: float
    cbr: float
    unfused: float
    torch: float
    ratio_torch: float
    ratio_range: tuple[float, float]
    ndimage: float
    ndimage_estimated: bool
    max_err: float
    stats_err: float


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


def running_buffers(channels: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(channels, dtype=np.float32), np.ones(channels, dtype=np.float32)


def cbr_fused(cfg: Config, inp: Inputs, buffers: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    running_mean, running_var = buffers
    return ops.conv2d_bn_act(
        inp.x,
        inp.weight,
        None,
        cfg.stride,
        cfg.padding,
        groups=cfg.groups,
        running_mean=running_mean,
        running_var=running_var,
        bn_weight=inp.gamma,
        bn_bias=inp.beta,
        training=True,
    )


def cbr_bn_relu(inp: Inputs, y: np.ndarray) -> np.ndarray:
    running_mean, running_var = running_buffers(y.shape[1])
    y = ops.batch_norm(y, running_mean, running_var, inp.gamma, inp.beta, training=True)
    return ops.relu(y, inplace=True)


def torch_pipeline(
    cfg: Config, inp: Inputs
) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    x = torch.from_numpy(inp.x)
    weight = torch.from_numpy(inp.weight)
    gamma, beta = torch.from_numpy(inp.gamma), torch.from_numpy(inp.beta)

    def run() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        running_mean = torch.zeros(cfg.c_out)
        running_var = torch.ones(cfg.c_out)
        with torch.no_grad():
            y = F.conv2d(x, weight, None, cfg.stride, cfg.padding, 1, cfg.groups)
            y = F.batch_norm(y, running_mean, running_var, gamma, beta, training=True)
            return F.relu(y, inplace=True).numpy(), running_mean.numpy(), running_var.numpy()

    return run


def blockwise_copy(source: np.ndarray, target: np.ndarray) -> None:
    """``target[...] = source`` in cache-sized blocks on cbr's threads (as the tail runs)."""
    flat_in, flat_out = source.reshape(-1), target.reshape(-1)
    step = BLOCK_VALUES
    run_tasks(
        range(0, flat_in.size, step),
        lambda s, _: np.copyto(flat_out[s : s + step], flat_in[s : s + step]),
        lambda: None,
    )


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.abs(expected).max()), 1e-30)
    return float(np.abs(got - expected).max() / scale)


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


def measure(cfg: Config, repeat: int, with_ndimage: bool) -> Row:
    inp = make_inputs(cfg)
    geo = conv2d_geometry((cfg.size, cfg.size), cfg.kernel, cfg.stride, cfg.padding)
    kernel = (cfg.kernel, cfg.kernel)
    method = choose_method(cfg.batch, cfg.c_in, cfg.c_out, cfg.groups, kernel, geo)
    nan = float("nan")

    def cbr() -> np.ndarray:
        return cbr_fused(cfg, inp, running_buffers(cfg.c_out))

    def unfused() -> np.ndarray:
        return cbr_bn_relu(inp, cbr_conv(cfg, inp))

    source = cbr_conv(cfg, inp)
    target = np.empty_like(source)
    mean, var = ops.batch_stats(source)
    scale = inp.gamma / np.sqrt(var + 1e-5)
    normalize = fused.Normalize(
        mean.astype(np.float32), scale.astype(np.float32), inp.beta, "relu", np.float32(0.01)
    )

    def tail() -> None:
        fused.over_blocks(target, fused.ChunkPass(np.dtype(np.float32), normalize=normalize))

    run_torch = torch_pipeline(cfg, inp) if torch is not None else None
    err = stats_err = nan
    buffers = running_buffers(cfg.c_out)
    got = cbr_fused(cfg, inp, buffers)  # also the warm-up
    if run_torch is not None:
        expected, expected_mean, expected_var = run_torch()
        err = relative_error(got, expected)
        stats_err = max(
            relative_error(buffers[0], expected_mean), relative_error(buffers[1], expected_var)
        )
        del expected
    del got
    unfused()
    cbr_conv(cfg, inp)
    blockwise_copy(source, target)

    times: dict[str, list[float]] = {
        "cbr": [],
        "torch": [],
        "unfused": [],
        "conv": [],
        "copy": [],
        "tail": [],
    }
    for _ in range(repeat):
        times["cbr"].append(timed(cbr))
        if run_torch is not None:
            times["torch"].append(timed(run_torch))
        times["unfused"].append(timed(unfused))
        times["conv"].append(timed(lambda: cbr_conv(cfg, inp)))
        times["copy"].append(timed(lambda: blockwise_copy(source, target)))
        times["tail"].append(timed(tail))  # on the copy just made
    bn_relu = [a - b for a, b in zip(times["cbr"], times["conv"], strict=True)]
    ratios = [a / b for a, b in zip(times["cbr"], times["torch"], strict=False)]  # no torch: []
    median = statistics.median

    t_ndi, estimated = nan, False
    if with_ndimage:
        t_ndi, estimated = ndimage_conv_seconds(cfg, inp, repeat)
        t_ndi += median(times["unfused"]) - median(times["conv"])
    return Row(
        method=method,
        conv=median(times["conv"]),
        bn_relu=median(bn_relu),
        tail=median(times["tail"]),
        copy=median(times["copy"]),
        tail_copy=median(t / c for t, c in zip(times["tail"], times["copy"], strict=True)),
        cbr=median(times["cbr"]),
        unfused=median(times["unfused"]),
        torch=median(times["torch"]) if ratios else nan,
        ratio_torch=median(ratios) if ratios else nan,
        ratio_range=(min(ratios), max(ratios)) if ratios else (nan, nan),
        ndimage=t_ndi,
        ndimage_estimated=estimated,
        max_err=err,
        stats_err=stats_err,
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
    parser.add_argument(
        "--ndimage", action="store_true", help="also time the naive scipy.ndimage baseline"
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
        f"{'tail':>6} {'copy':>6} {'tail/copy':>12} {'cbr':>7} {'unfused':>7} {'torch':>7} "
        f"{'cbr/torch':>9} {'range':>11} {'target':>12} {'max err':>8} {'stats':>8}"
    )
    if args.ndimage:
        header += f" {'ndimage':>9} {'cbr/ndi':>7}"
    print(header)
    print("-" * len(header))
    estimated = False
    for name in names:
        cfg = CONFIGS[name]
        row = measure(cfg, args.repeat, args.ndimage)
        estimated |= row.ndimage_estimated
        low, high = row.ratio_range
        range_text = f"{low:.2f}-{high:.2f}" if torch is not None else ""
        verdict = "ok" if row.ratio_torch <= cfg.target else "MISS"
        target_text = f"<= {cfg.target:.1f} {verdict}" if torch is not None else ""
        tail_verdict = "ok" if row.tail_copy <= TAIL_TARGET else "MISS"
        line = (
            f"{name:<10} {cfg.describe():<34} {row.method:<6} {row.conv * 1e3:7.1f} "
            f"{row.bn_relu * 1e3:7.1f} {row.tail * 1e3:6.1f} {row.copy * 1e3:6.1f} "
            f"{f'{row.tail_copy:.2f} {tail_verdict}':>12} {row.cbr * 1e3:7.1f} "
            f"{row.unfused * 1e3:7.1f} {row.torch * 1e3:7.1f} {row.ratio_torch:9.2f} "
            f"{range_text:>11} {target_text:>12} {row.max_err:8.1e} {row.stats_err:8.1e}"
        )
        if args.ndimage:
            ndi_text = f"{'~' if row.ndimage_estimated else ''}{row.ndimage * 1e3:.0f}"
            line += f" {ndi_text:>9} {row.cbr / row.ndimage:7.3f}"
        print(line, flush=True)
    print(
        "\nbn+relu: median over rounds of (cbr - conv), all that BN + ReLU add; tail: the"
        " fused op's normalise + ReLU pass alone; copy: a read+write copy of the output;"
        f" tail/copy: median ratio, target <= {TAIL_TARGET}."
        "\ncbr/torch: median over rounds of cbr time / torch time, run back to back;"
        " range: lowest and highest round; target: the median against issue 12's ceiling."
        "\nmax err: max |cbr - torch| / max |torch| over the output; stats: the same over"
        " the updated running mean and variance (the larger)."
    )
    if estimated:
        print(
            "~ ndimage estimated: a subset of the (output, input) channel pairs was timed and"
            " scaled to all pairs; cbr's unfused BatchNorm + ReLU time added."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
