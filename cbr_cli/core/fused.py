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

The FFT engine has no chunks in cache to offer; its output gets the same chunk pass
afterwards, block by block (one pass more).  Arithmetic is that of the unfused ops:
``(x - mean) * scale + beta`` in the input's dtype, then the activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbr_cli.core.conv_direct import conv2d_direct
from cbr_cli.core.conv_fft import conv2d_fft
from cbr_cli.core.moments import BLOCK_VALUES, merge_blocks, row_moments
from cbr_cli.core.shapes import ConvGeometry
from cbr_cli.core.threads import run_tasks

ACTIVATIONS = ("relu", "leaky_relu", "none")


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
        self, block: np.ndarray, bn: np.ndarray, act: np.ndarray, scratch: np.ndarray, channel: int
    ) -> None:
        """Normalise ``block`` (C, L) of channels from ``channel`` into ``bn``, activate
        ``bn`` into ``act`` (each may be ``block`` itself)."""
        rows = slice(channel, channel + block.shape[0])
        np.subtract(block, self.mean[rows, None], out=bn)
        np.multiply(bn, self.scale[rows, None], out=bn)
        if self.shift is not None:
            np.add(bn, self.shift[rows, None], out=bn)
        if self.activation == "relu":
            np.maximum(bn, 0, out=act)
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

    Chunks are cut into blocks of at most ``BLOCK_VALUES`` values, whole channels where
    they fit; each block's mean and ``M2`` are kept under its (sample, channel, position).
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
        self.bias = bias
        self.normalize = normalize
        self.bn, self.act = bn, act
        self.blocks: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, int]] | None = (
            {} if moments else None
        )
        self._ones = np.ones(BLOCK_VALUES, dtype) if moments else None

    def scratch(self) -> np.ndarray:
        return np.empty(BLOCK_VALUES, self.dtype)

    def __call__(
        self, n: int, channel: int, position: int, block: np.ndarray, buffer: np.ndarray
    ) -> None:
        channels, size = block.shape
        if size >= BLOCK_VALUES:
            pieces = (
                (c, p, 1, min(BLOCK_VALUES, size - p))
                for c in range(channels)
                for p in range(0, size, BLOCK_VALUES)
            )
        else:
            step = BLOCK_VALUES // size
            pieces = ((c, 0, min(step, channels - c), size) for c in range(0, channels, step))
        for c, p, rows, length in pieces:
            self._block(n, channel + c, position + p, block[c : c + rows, p : p + length], buffer)

    def _block(
        self, n: int, channel: int, position: int, block: np.ndarray, buffer: np.ndarray
    ) -> None:
        rows = slice(channel, channel + block.shape[0])
        if self.bias is not None:
            np.add(block, self.bias[rows, None], out=block)
        if self.blocks is not None:
            mean, m2 = row_moments(block, buffer, self._ones)
            self.blocks[(n, channel, position)] = (mean, m2, block.shape[1])
        if self.normalize is not None:
            where = (n, rows, slice(position, position + block.shape[1]))
            bn = block if self.bn is None else self.bn[where]
            act = bn if self.act is None else self.act[where]
            self.normalize.apply(block, bn, act, buffer, channel)

    def moments(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, mean and ``M2`` per channel of every block seen (float64), merged in a
        fixed order whatever order the threads took."""
        keys = sorted(self.blocks)
        entries = [self.blocks[key] for key in keys]
        channel = np.concatenate(
            [np.arange(c, c + e[0].size) for (_, c, _), e in zip(keys, entries, strict=True)]
        )
        count = np.concatenate([np.full(e[0].size, e[2]) for e in entries])
        mean = np.concatenate([e[0] for e in entries])
        m2 = np.concatenate([e[1] for e in entries])
        return merge_blocks(channels, channel, count, mean, m2)


def over_blocks(out: np.ndarray, chunk_pass: ChunkPass) -> None:
    """Run ``chunk_pass`` over ``out`` (N, C, H, W) in blocks of one (sample, channel)
    plane of at most ``BLOCK_VALUES`` values, on all cores."""
    planes = out.reshape(out.shape[0], out.shape[1], -1)
    size = planes.shape[2]
    step = max(1, min(size, BLOCK_VALUES))
    tasks = [
        (n, c, s)
        for n in range(planes.shape[0])
        for c in range(planes.shape[1])
        for s in range(0, size, step)
    ]

    def run(task: tuple[int, int, int], buffer: np.ndarray) -> None:
        n, c, s = task
        chunk_pass._block(n, c, s, planes[n, c : c + 1, s : s + step], buffer)

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

    def engine(chunk_pass: ChunkPass) -> None:
        if method == "fft":
            conv2d_fft(x, weight, geo, groups, out, padding_mode)
            over_blocks(out, chunk_pass)
        else:
            conv2d_direct(x, weight, geo, groups, out, padding_mode, chunk_pass)

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
