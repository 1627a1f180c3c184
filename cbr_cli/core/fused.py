"""Conv -> BatchNorm -> activation with the fewest passes over the output the mode allows.

The engine behind :func:`cbr_cli.core.ops.conv2d_bn_act`; validation lives there.  The
direct engine hands every chunk of output to a :class:`ChunkPass` right after its GEMMs,
while the chunk is still in cache:

* **batch statistics** (training, or no running statistics): the chunk pass adds the
  conv bias and takes the per-channel moments of the chunk (:func:`row_moments`, two
  passes over the cached chunk, merged in float64); one more pass then normalises and
  applies the activation, in place, or into the BN and activation arrays when the
  stages are kept.  Two passes over memory in all (the GEMMs' write, the tail's read and
  write) where conv -> batch_norm -> relu takes five.
* **given statistics** (eval): the chunk pass normalises and applies the activation
  straight away, in place when only the activation is returned (one pass: the GEMMs'
  write), into separate BN and activation arrays when the stages are kept (the conv
  output is never overwritten then).

The FFT engine has no chunks in cache to offer, and the direct engine's chunks can be
too small to be worth it (see ``MIN_FUSED_CHUNK_VALUES``); that output gets the same
chunk pass afterwards, block by block (one pass more).  Arithmetic is that of the unfused ops:
``(x - mean) * scale + beta`` in the input's dtype, then the activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbr_cli.core.conv_direct import chunk_values, conv2d_direct
from cbr_cli.core.conv_fft import conv2d_fft
from cbr_cli.core.moments import merge_blocks, moments_of_sums, row_sums
from cbr_cli.core.shapes import ConvGeometry
from cbr_cli.core.threads import run_tasks

ACTIVATIONS = ("relu", "leaky_relu", "none")

# Values per block of the chunk pass and of the tail (1 MiB of float32).  Every numpy call
# here is short, and with two threads each call's GIL hand-over costs more than the
# call itself: over a 64 x 1024^2 float32 output (1 and 2 threads), blocks of 64 Ki values
# took 72 / 122 ms for the moments and 49 / 44 ms for normalise + ReLU; 256 Ki values
# 83 / 91 and 52 / 33; 1 Mi values 95 / 67 and 56 / 30 (a read+write copy: 39 / 23).
PASS_VALUES = 1 << 18
# Smallest chunk of conv output (values) whose moments are taken in the conv's output
# pass; smaller chunks (depthwise: one channel per chunk) get a separate pass in
# PASS_VALUES blocks.  Interleaved, engine + moments, 2 threads: 64 depthwise 3x3 at
# 256^2 (13 Ki values per chunk) 26.8 ms in the conv pass, 22.5 after it (conv alone
# 14.3); 3 -> 16 at 512^2 (139 Ki) 7.7 vs 9.3; 1 -> 8 at 1024^2 8.0 (vs 15.0 vs 18.1);
# 3 -> 64 at 1024^2 144 vs 163; 64 -> 64 at 256^2 35 vs 43; 7x7 stride-2 stem 57 vs 63.
MIN_FUSED_CHUNK_VALUES = 1 << 15


@dataclass(frozen=True)
class Normalize:
    """``act((x - mean) * scale + shift)`` per channel, in the output's dtype.

    Attributes
    ----------
    mean, scale : ndarray of shape (C,)
    shift : ndarray of shape (C,) or None
    activation : ``"relu"``, ``"leaky_relu"`` or ``"none"``
    slope : scalar of the dtype
        ``negative_slope`` of ``leaky_relu``.
    """

    mean: np.ndarray
    scale: np.ndarray
    shift: np.ndarray | None
    activation: str
    slope: np.floating

    def apply(
        self,
        block: np.ndarray,
        bn: np.ndarray,
        act: np.ndarray,
        scratch: np.ndarray,
        channel: int,
        zeros: np.ndarray,
    ) -> None:
        """Normalise ``block`` (C, L) of channels from ``channel`` into ``bn``, activate
        ``bn`` into ``act`` (each may be ``block`` itself); ``scratch`` holds ``C * L``
        values, ``zeros`` at least ``L`` zeros."""
        rows = slice(channel, channel + block.shape[0])
        np.subtract(block, self.mean[rows, None], out=bn)
        np.multiply(bn, self.scale[rows, None], out=bn)
        if self.shift is not None:
            np.add(bn, self.shift[rows, None], out=bn)
        if self.activation == "relu":
            # Against a row of zeros: numpy 2.4's maximum with a scalar 0 ran at 19 GB/s,
            # with a zeros row at 29 (64 Ki float32 values in cache).
            np.maximum(bn, zeros[: bn.shape[1]], out=act)
        elif self.activation == "leaky_relu":
            if 0 < self.slope <= 1:  # max(x, slope * x), no mask
                scaled = scratch[: bn.size].reshape(bn.shape)
                np.multiply(bn, self.slope, out=scaled)
                np.maximum(bn, scaled, out=act)
            else:
                negative = bn < 0
                if act is not bn:
                    np.copyto(act, bn)
                np.multiply(bn, self.slope, out=act, where=negative)
        elif act is not bn:
            np.copyto(act, bn)


class ChunkPass:
    """What is done to each chunk of conv output (a :class:`ChunkEpilogue`), in order:
    add ``bias``; take moments (if ``moments``); normalise and activate (if ``normalize``)
    in place, or into ``bn`` / ``act`` (arrays of shape (N, C, H_out * W_out)).

    Chunks are cut into blocks of at most ``PASS_VALUES`` values, whole channels where
    they fit; each block's :func:`row_sums` are kept under its (sample, channel,
    position), and merged in that order by :meth:`moments`.
    """

    def __init__(
        self,
        dtype: np.dtype,
        *,
        bias: np.ndarray | None = None,
        moments: bool = False,
        normalize: Normalize | None = None,
        bn: np.ndarray | None = None,
        act: np.ndarray | None = None,
    ) -> None:
        self.dtype = dtype
        self.bias = None if bias is None else bias[:, None]
        self.normalize = normalize
        self.bn, self.act = bn, act
        self.sums: dict[tuple[int, int, int], tuple[np.ndarray, ...]] | None = (
            {} if moments else None
        )
        self._ones = np.ones(PASS_VALUES, dtype) if moments else None
        self._zeros = np.zeros(PASS_VALUES, dtype) if normalize is not None else None

    def scratch(self) -> np.ndarray:
        return np.empty(PASS_VALUES, self.dtype)

    def __call__(
        self, n: int, channel: int, position: int, block: np.ndarray, buffer: np.ndarray
    ) -> None:
        channels, size = block.shape
        if channels * size <= PASS_VALUES:
            self.block(n, channel, position, block, buffer)
        elif size >= PASS_VALUES:
            for c in range(channels):
                for p in range(0, size, PASS_VALUES):
                    piece = block[c : c + 1, p : p + PASS_VALUES]
                    self.block(n, channel + c, position + p, piece, buffer)
        else:
            step = PASS_VALUES // size
            for c in range(0, channels, step):
                self.block(n, channel + c, position, block[c : c + step], buffer)

    def block(
        self, n: int, channel: int, position: int, block: np.ndarray, buffer: np.ndarray
    ) -> None:
        """The pass over one block of at most ``PASS_VALUES`` values: (C, L) of channels
        from ``channel`` at flat positions from ``position`` of sample ``n``."""
        channels, size = block.shape
        if self.bias is not None:
            np.add(block, self.bias[channel : channel + channels], out=block)
        if self.sums is not None:
            self.sums[(n, channel, position)] = (*row_sums(block, buffer, self._ones), size)
        if self.normalize is not None:
            bn = block
            if self.bn is not None:
                bn = self.bn[n, channel : channel + channels, position : position + size]
            act = bn
            if self.act is not None:
                act = self.act[n, channel : channel + channels, position : position + size]
            self.normalize.apply(block, bn, act, buffer, channel, self._zeros)

    def moments(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, mean and ``M2`` per channel of every block seen (float64), merged in a
        fixed order whatever order the threads took."""
        keys = sorted(self.sums)
        entries = [self.sums[key] for key in keys]
        shift = np.concatenate([e[0] for e in entries])
        s1 = np.concatenate([e[1] for e in entries])
        s2 = np.concatenate([e[2] for e in entries])
        rows = np.array([e[0].size for e in entries])
        first = np.array([key[1] for key in keys])
        starts = np.cumsum(rows) - rows
        channel = np.repeat(first - starts, rows) + np.arange(shift.size)
        count = np.repeat(np.array([e[3] for e in entries]), rows)
        mean, m2 = moments_of_sums(count, shift, s1, s2)
        return merge_blocks(channels, channel, count, mean, m2)


def over_blocks(out: np.ndarray, chunk_pass: ChunkPass) -> None:
    """Run ``chunk_pass`` over ``out`` (N, C, H, W) in blocks of one (sample, channel)
    plane of at most ``PASS_VALUES`` values, on all cores."""
    planes = out.reshape(out.shape[0], out.shape[1], -1)
    size = planes.shape[2]
    step = max(1, min(size, PASS_VALUES))
    tasks = [
        (n, c, s)
        for n in range(planes.shape[0])
        for c in range(planes.shape[1])
        for s in range(0, size, step)
    ]

    def run(task: tuple[int, int, int], buffer: np.ndarray) -> None:
        n, c, s = task
        chunk_pass.block(n, c, s, planes[n, c : c + 1, s : s + step], buffer)

    run_tasks(tasks, run, chunk_pass.scratch)


@dataclass
class Stages:
    """The arrays of one fused Conv -> BN -> activation, (N, C, H_out, W_out) each.

    ``bn`` is ``conv`` and ``act`` is ``bn`` (the same array) where a stage was not kept
    or is the identity; ``mean`` and ``var`` (float64, shape (C,)) are what BN normalised
    with, ``count`` the values per channel.
    """

    conv: np.ndarray
    bn: np.ndarray
    act: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    count: int


def conv_bn_act(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geo: ConvGeometry,
    groups: int,
    padding_mode: str,
    method: str,
    *,
    stats: tuple[np.ndarray, np.ndarray] | None,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    eps: float,
    activation: str,
    slope: float,
    keep_stages: bool,
) -> Stages:
    """Validated arguments in, :class:`Stages` out.

    ``x`` (N, C_in, H, W) C-contiguous, ``weight``/``bias``/``gamma``/``beta`` of its
    dtype; ``stats`` the (mean, biased var) to normalise with, float64, or None for the
    batch's own; ``method`` ``"direct"`` or ``"fft"``.
    """
    dtype = x.dtype
    n_batch, c_out = x.shape[0], weight.shape[0]
    out = np.empty((n_batch, c_out, *geo.out_hw), dtype=dtype)
    flat = (n_batch, c_out, -1)
    count = n_batch * geo.out_hw[0] * geo.out_hw[1]

    c_in_g, c_out_g = weight.shape[1], c_out // groups
    in_conv = method == "direct" and (
        chunk_values(n_batch, groups, c_in_g, c_out_g, weight.shape[2:], geo, dtype.itemsize)
        >= MIN_FUSED_CHUNK_VALUES
    )

    def engine(chunk_pass: ChunkPass) -> None:
        """The conv with ``chunk_pass`` applied to every chunk of its output: in its
        output pass where the chunks are large enough, else in a pass after it."""
        if in_conv:
            conv2d_direct(x, weight, geo, groups, out, padding_mode, chunk_pass)
            return
        if method == "fft":
            conv2d_fft(x, weight, geo, groups, out, padding_mode)
        else:
            conv2d_direct(x, weight, geo, groups, out, padding_mode)
        over_blocks(out, chunk_pass)

    def normalize(mean: np.ndarray, var: np.ndarray) -> Normalize:
        scale = 1.0 / np.sqrt(var + eps)
        if gamma is not None:
            scale = scale * gamma
        return Normalize(
            mean.astype(dtype),
            scale.astype(dtype),
            beta,
            activation,
            dtype.type(slope),
        )

    def stage_arrays() -> tuple[np.ndarray | None, np.ndarray | None]:
        if not keep_stages:
            return None, None
        bn = np.empty_like(out)
        act = None if activation == "none" else np.empty_like(out)
        return bn, act

    if stats is None:
        first = ChunkPass(dtype, bias=bias, moments=True)
        engine(first)
        _, mean, m2 = first.moments(c_out)
        var = m2 / count
        bn, act = stage_arrays()
        tail = ChunkPass(
            dtype,
            normalize=normalize(mean, var),
            bn=None if bn is None else bn.reshape(flat),
            act=None if act is None else act.reshape(flat),
        )
        over_blocks(out, tail)
    else:
        mean, var = stats
        bn, act = stage_arrays()
        engine(
            ChunkPass(
                dtype,
                bias=bias,
                normalize=normalize(mean, var),
                bn=None if bn is None else bn.reshape(flat),
                act=None if act is None else act.reshape(flat),
            )
        )
    bn = out if bn is None else bn
    act = bn if act is None else act
    return Stages(out, bn, act, mean, var, count)
