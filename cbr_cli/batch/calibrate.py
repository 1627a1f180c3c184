"""Dataset-wide BatchNorm statistics, streamed over many images, and calibrated pipelines.

No printing; progress goes to a callback (:class:`cbr_cli.batch.pool.Progress`).

Dataset statistics
------------------
For a BN layer in ``mode: batch`` the statistics are the per-channel mean and **biased**
variance over every output position of every image (count ``n = sum of H_out * W_out``).
For images of one size that is exactly what PyTorch's ``BatchNorm2d`` in training mode
uses when the whole folder is one batch of ``N`` images (``n = N * H_out * W_out``).

They are computed streaming, so the folder never has to fit in memory: per image and
channel a worker computes the count, the mean and ``M2 = sum((x - mean)**2)`` (two
passes, float64 accumulators: :func:`cbr_cli.core.ops.channel_mean_var`); the parent merges
them with the pairwise update of Chan, Golub and LeVeque (1979)::

    n = n_a + n_b,  delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    M2 = M2_a + M2_b + delta**2 * n_a * n_b / n

which is exact and numerically stable (no ``E[x**2] - E[x]**2`` cancellation). Images
are merged in sorted order whatever order the workers finish in, so the numbers do
not depend on ``--jobs`` or on timing: every run gives the same bits.

Several batch-mode BN layers are calibrated layer by layer: pass ``k`` runs every
image up to the conv of the ``k``-th such layer, normalising the earlier ones with
their dataset statistics, so that layer's input is what it would be in the
whole-folder batch. ``k`` layers cost ``k`` passes over the folder (each stops at its
layer). An image that cannot be read is left out of every pass and reported.

Calibration and PyTorch's train/eval
------------------------------------
``mode: batch`` is ``model.train()``: normalise with the statistics of the batch.
``mode: running`` is ``model.eval()``: normalise with stored ``running_mean`` /
``running_var``. :func:`calibrated_plain` turns every batch-mode BN into a running one
whose ``running_mean`` is the dataset mean and whose ``running_var`` is the dataset
variance made unbiased, ``var * n / (n - 1)``, because that is what PyTorch stores:
these are the buffers ``BatchNorm2d(momentum=None)`` (or ``momentum=1``) holds after
one training-mode forward pass of the whole folder as a single batch. Evaluating with
them reproduces the batch-mode normalisation of every image in one pass per image, up
to PyTorch's own train/eval difference: the scale uses ``n / (n - 1)`` times the
variance, a relative change of about ``1 / (2n)`` (e.g. 2e-6 for 64 images of 64x64).

``momentum=m`` instead mimics a real PyTorch calibration loop: ``model.train()`` and a
``DataLoader`` with batch size 1, no shuffling (sorted order), starting from PyTorch's
initial buffers (mean 0, variance 1). Every image updates every batch-mode BN once,
``running = (1 - m) * running + m * stat``, with the image's own mean and unbiased
variance; each layer's input is normalised with the image's own statistics (that is
what train mode does), so one pass suffices. The result weights recent images more
(``m = 0.1``: the last ~10 dominate) -- the exact average is the default for a reason.
Accumulation is in float64 (PyTorch's buffers are float32: expect rounding-level
differences).

``cbr calibrate``
-----------------
:func:`run_calibrate` is the command's work: check everything that can be checked
before touching an image (options, where the file goes, the config against the
folder's headers), compute the statistics, write the calibrated YAML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cbr_cli.batch.discover import discover
from cbr_cli.batch.pool import Progress, WorkerPool, resolve_jobs, state
from cbr_cli.batch.scan import RunSetup, check_config, failure_reason, scan_folder
from cbr_cli.core import ops
from cbr_cli.errors import CbrError
from cbr_cli.run.apply import ApplyOptions
from cbr_cli.run.pipeline import run_layers
from cbr_cli.spec.pipeline_spec import PipelineSpec

ProgressCallback = Callable[[Progress], None]


# ------------------------------------------------------------------ moments


@dataclass(frozen=True)
class Moments:
    """Per-channel count, mean and ``M2`` (sum of squared deviations), float64.

    Attributes
    ----------
    count : int
        Values per channel.
    mean, m2 : ndarray of shape (C,), float64
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Moments of ``x`` of shape (N, C, H, W) over every axis but the channels."""
        mean, var = ops.channel_mean_var(x)
        count = x.size // x.shape[1]
        return cls(count, mean, var * count)

    def merge(self, other: Moments) -> Moments:
        """Moments of both sets together (Chan et al.; exact, numerically stable)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / count)
        return Moments(count, mean, m2)

    @property
    def var(self) -> np.ndarray:
        """Biased (population) variance, what training-mode BN normalises with."""
        return self.m2 / self.count

    @property
    def unbiased_var(self) -> np.ndarray:
        """``M2 / (count - 1)``, what PyTorch stores in ``running_var``."""
        return self.m2 / (self.count - 1)


class _InOrder:
    """Merges moments in item order while they arrive in any order (bounded buffer)."""

    def __init__(self) -> None:
        self.total: dict[str, Moments] = {}
        self._next = 0
        self._waiting: dict[int, dict[str, Moments] | None] = {}

    def add(self, position: int, moments: dict[str, Moments] | None) -> None:
        self._waiting[position] = moments
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            for name, m in (ready or {}).items():
                self.total[name] = self.total[name].merge(m) if name in self.total else m
            self._next += 1


# -------------------------------------------------------------- worker side


def _moments_task(job: tuple[int, str, int, dict[str, Any]]) -> dict[str, Moments] | str:
    """Moments of layer ``index``'s conv output for one image (a worker task)."""
    _, path, index, known = job
    setup: RunSetup = state()
    try:
        x = setup.load(path)
        layers = setup.layers(x.shape[1])[: index + 1]
        last = layers[-1]  # stop after its conv: the BN needs the statistics we compute
        layers[-1] = replace(last, spec=replace(last.spec, bn=None, activation="none"))
        y = run_layers(layers, x, batch_stats=known)[-1].data
        return {last.spec.name: Moments.of(y)}
    except (CbrError, MemoryError) as exc:
        return failure_reason(exc)


def _image_stats_task(job: tuple[int, str, int]) -> list[tuple[str, int, Any, Any]] | str:
    """Each batch-mode BN's statistics of one image alone (train mode, batch size 1)."""
    _, path, last = job
    setup: RunSetup = state()
    try:
        x = setup.load(path)
        results = run_layers(setup.layers(x.shape[1])[: last + 1], x)
    except (CbrError, MemoryError) as exc:
        return failure_reason(exc)
    batch_layers = {layer.name for layer in setup.spec.layers if _is_batch_bn(layer)}
    return [
        (r.layer, r.data.shape[2] * r.data.shape[3], r.bn_mean, r.bn_var)
        for r in results
        if r.stage == "bn" and r.layer in batch_layers
    ]


# -------------------------------------------------------------- parent side


NOTHING_TO_CALIBRATE = "the pipeline has no BN layer with mode: batch; nothing to calibrate"


def _check_momentum(momentum: float) -> None:
    if not 0.0 <= momentum <= 1.0:  # NaN too
        raise CbrError(f"--momentum: expected a number in [0, 1] (got {momentum})")


def _is_batch_bn(layer: Any) -> bool:
    return layer.bn is not None and layer.bn.mode == "batch"


def batch_bn_layers(spec: PipelineSpec) -> list[int]:
    """Indices of the layers whose BN uses batch statistics (``mode: batch``)."""
    return [i for i, layer in enumerate(spec.layers) if _is_batch_bn(layer)]


@dataclass
class DatasetStats:
    """Dataset-wide statistics of every batch-mode BN layer.

    Attributes
    ----------
    layers : dict of str to Moments
        In layer order.
    images : int
        Images that contributed.
    failures : list of (name, reason)
        Images left out, in input order.
    stopped : bool
        True if ``fail_fast`` stopped at a failure (``layers`` is then incomplete).
    """

    layers: dict[str, Moments]
    images: int
    failures: list[tuple[str, str]]
    stopped: bool = False

    def batch_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{layer: (mean, biased var)}`` for :func:`cbr_cli.run.pipeline.run_layers`."""
        return {name: (m.mean, m.var) for name, m in self.layers.items()}

    def running(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{layer: (running_mean, running_var)}`` as PyTorch stores them (unbiased)."""
        return {name: (m.mean, m.unbiased_var) for name, m in self.layers.items()}


@contextmanager
def _pool(pool: WorkerPool[Any] | None, jobs: int, setup: RunSetup) -> Iterator[WorkerPool[Any]]:
    if pool is not None:
        yield pool
        return
    with WorkerPool(jobs, setup) as own:
        yield own


def dataset_bn_stats(
    paths: Sequence[str],
    spec: PipelineSpec,
    *,
    color: str | None = None,
    resize: tuple[int, int] | None = None,
    jobs: int = 1,
    pool: WorkerPool[Any] | None = None,
    names: Sequence[str] | None = None,
    on_progress: ProgressCallback | None = None,
    fail_fast: bool = False,
) -> DatasetStats:
    """Exact statistics of every batch-mode BN over all images (see the module docstring).

    Parameters
    ----------
    paths : sequence of str
        The images, in the order they are merged (sorted, for ``cbr batch``).
    spec : PipelineSpec
    color, resize : optional
        How images are read (``color`` overrides ``spec.input.color``).
    jobs : int
        Worker processes, if no ``pool`` is given.
    pool : WorkerPool, optional
        Workers to use; their state must be ``RunSetup(spec, color, ApplyOptions(resize=...))``.
    names : sequence of str, optional
        How to name images in progress and failures (default: the paths).
    on_progress : callable, optional
        Called with a :class:`~cbr_cli.batch.pool.Progress` after every image.
    fail_fast : bool
        Stop at the first image that cannot be processed.

    Raises
    ------
    CbrError
        The pipeline has no batch-mode BN, or a layer has at most one value per channel
        over all images.
    """
    indices = batch_bn_layers(spec)
    if not indices:
        raise CbrError(f"{spec.source}: {NOTHING_TO_CALIBRATE}")
    labels = list(names) if names is not None else list(paths)
    remaining = list(range(len(paths)))
    failures: dict[int, str] = {}
    known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    layers: dict[str, Moments] = {}
    setup = RunSetup(spec, color, ApplyOptions(resize=resize))
    with _pool(pool, jobs, setup) as workers:
        for k, index in enumerate(indices):
            name = spec.layers[index].name
            phase = f"BN statistics {name}" + (
                f" ({k + 1}/{len(indices)})" if len(indices) > 1 else ""
            )
            jobs_k = [(pos, paths[i], index, known) for pos, i in enumerate(remaining)]
            merged = _InOrder()
            progress = Progress(phase, len(jobs_k))
            workers.start()
            if on_progress:
                on_progress(progress)
            for (pos, _, _, _), outcome in workers.run(_moments_task, jobs_k):
                i = remaining[pos]
                if isinstance(outcome, str):
                    failures[i] = outcome
                    merged.add(pos, None)
                else:
                    merged.add(pos, outcome)
                progress = _advance(progress, outcome, labels[i], on_progress)
                if fail_fast and failures:
                    workers.stop()
                    return DatasetStats(layers, 0, _listed(failures, labels), stopped=True)
            remaining = [i for i in remaining if i not in failures]
            if name not in merged.total:  # every image failed
                return DatasetStats({}, 0, _listed(failures, labels))
            moments = merged.total[name]
            if moments.count <= 1:
                raise CbrError(
                    f"layer {name!r}: bn mode 'batch' needs more than one value per channel "
                    f"over all images (got {moments.count})"
                )
            layers[name] = moments
            known = {**known, name: (moments.mean, moments.var)}
    return DatasetStats(layers, len(remaining), _listed(failures, labels))


def _advance(
    progress: Progress,
    outcome: object,
    label: str,
    on_progress: ProgressCallback | None,
) -> Progress:
    """One more image done (a ``str`` outcome is its failure reason); report it."""
    failed = isinstance(outcome, str)
    progress = replace(
        progress,
        done=progress.done + 1,
        failed=progress.failed + failed,
        item=label,
        reason=outcome if failed else None,  # type: ignore[arg-type]
    )
    if on_progress:
        on_progress(progress)
    return progress


def _listed(failures: dict[int, str], labels: Sequence[str]) -> list[tuple[str, str]]:
    return [(labels[i], failures[i]) for i in sorted(failures)]


@dataclass
class MomentumStats:
    """Running statistics after one exponential update per image (see the module docstring)."""

    running: dict[str, tuple[np.ndarray, np.ndarray]]
    images: int
    failures: list[tuple[str, str]]
    stopped: bool = False


def momentum_bn_stats(
    paths: Sequence[str],
    spec: PipelineSpec,
    momentum: float,
    *,
    color: str | None = None,
    resize: tuple[int, int] | None = None,
    jobs: int = 1,
    names: Sequence[str] | None = None,
    on_progress: ProgressCallback | None = None,
    fail_fast: bool = False,
) -> MomentumStats:
    """PyTorch's running statistics after a train-mode pass over the images, batch size 1.

    Starting from ``running_mean = 0``, ``running_var = 1``, each image in order updates
    every batch-mode BN: ``running = (1 - momentum) * running + momentum * stat``, with
    the image's own mean and unbiased variance (``var * n / (n - 1)``, ``n = H_out * W_out``).
    """
    _check_momentum(momentum)
    indices = batch_bn_layers(spec)
    if not indices:
        raise CbrError(f"{spec.source}: {NOTHING_TO_CALIBRATE}")
    labels = list(names) if names is not None else list(paths)
    out_channels = {spec.layers[i].name: spec.layers[i].conv.out_channels for i in indices}
    running = {
        name: (np.zeros(c, dtype=np.float64), np.ones(c, dtype=np.float64))
        for name, c in out_channels.items()
    }
    failures: dict[int, str] = {}
    waiting: dict[int, Any] = {}
    applied = 0
    setup = RunSetup(spec, color, ApplyOptions(resize=resize))
    jobs_list = [(i, path, indices[-1]) for i, path in enumerate(paths)]
    progress = Progress(f"BN statistics (momentum {momentum})", len(jobs_list))
    with WorkerPool(jobs, setup) as workers:
        workers.start()
        if on_progress:
            on_progress(progress)
        for (i, _, _), outcome in workers.run(_image_stats_task, jobs_list):
            waiting[i] = outcome
            while applied in waiting:  # updates must happen in image order
                result = waiting.pop(applied)
                if isinstance(result, str):
                    failures[applied] = result
                else:
                    for name, count, mean, var in result:
                        rm, rv = running[name]
                        ops.update_running_stats(rm, rv, mean, var, count, momentum)
                applied += 1
            progress = _advance(progress, outcome, labels[i], on_progress)
            if fail_fast and isinstance(outcome, str):
                workers.stop()
                return MomentumStats(running, 0, _listed({i: outcome}, labels), stopped=True)
    return MomentumStats(running, len(paths) - len(failures), _listed(failures, labels))


# --------------------------------------------------------------- the result


def calibrated_plain(
    spec: PipelineSpec, running: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """``spec`` as config data with every BN in ``running`` made ``mode: running``.

    ``running`` maps layer names to ``(running_mean, running_var)`` (PyTorch's
    convention: unbiased variance). Values are written as float lists.
    """
    plain = spec.to_plain()
    for entry in plain["layers"]:
        if entry["name"] in running:
            mean, var = running[entry["name"]]
            bn = entry["bn"]
            bn["mode"] = "running"
            bn["running_mean"] = [float(v) for v in mean]
            bn["running_var"] = [float(v) for v in var]
    return plain


_NOT_IN_COMMENT = re.compile(
    "[^\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
"""What a YAML comment cannot hold: control characters (ESC, DEL, C1), line breaks
(``\\r``, NEL, U+2028/9), lone surrogates (undecodable bytes in a file name), the BOM and
non-characters. YAML 1.1's printable set minus its line breaks; the BOM is invisible."""


def comment_text(text: str) -> str:
    """``text`` with every character a YAML comment cannot hold written as an escape.

    ``\\xNN`` or ``\\uNNNN`` (Python's notation), so a folder named ``a<ESC>b`` reads
    ``a\\x1bb``, and a byte of a file name that is not UTF-8 reads as that byte
    (``caf\\xe9``); everything else, non-ASCII letters too, stays as is.
    """
    return _NOT_IN_COMMENT.sub(lambda m: _escaped(m.group()), text)


def _escaped(char: str) -> str:
    code = ord(char)  # below 0x10000: every character above is allowed
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def write_pipeline_yaml(path: str | os.PathLike[str], plain: dict[str, Any], header: str) -> None:
    """Write config data as YAML (``header`` as ``#`` comment lines), atomically.

    Floats are written with ``repr``, so they load back to the same float64 values.
    ``header`` is split at ``\\n`` only; any other character a comment cannot hold is
    escaped (:func:`comment_text`). Strings in ``plain`` are quoted and escaped by the
    YAML emitter (ASCII output), so every written file reads back to ``plain``.
    """
    import yaml

    from cbr_cli.io.writers import atomic_writer

    lines = [comment_text(line) for line in header.split("\n")]
    comment = "".join(f"# {line}\n" if line else "#\n" for line in lines)
    text = yaml.safe_dump(plain, sort_keys=False, default_flow_style=None, width=100)
    with atomic_writer(path, "w") as f:
        f.write(comment + text)


# ------------------------------------------------------------ cbr calibrate


@dataclass(frozen=True)
class CalibrateOptions:
    """How ``cbr calibrate`` runs.

    Attributes
    ----------
    out : str
        The calibrated pipeline (YAML) to write. Its folder must exist, and it may not
        be the config file the pipeline was read from.
    recursive, glob
        Which images (:func:`cbr_cli.batch.discover.discover`).
    jobs : int, optional
        Worker processes (default: the CPUs available).
    fail_fast : bool
        Stop at the first image that fails; nothing is written then.
    resize : (H, W), optional
        Resize every image first (pass the same to ``cbr apply``/``cbr batch``).
    momentum : float, optional
        PyTorch's exponential update (:func:`momentum_bn_stats`) instead of the exact
        dataset statistics (:func:`dataset_bn_stats`).
    """

    out: str
    recursive: bool = False
    glob: str | None = None
    jobs: int | None = None
    fail_fast: bool = False
    resize: tuple[int, int] | None = None
    momentum: float | None = None


@dataclass
class CalibrateResult:
    """What :func:`run_calibrate` did.

    Attributes
    ----------
    out : str or None
        The file written; None when ``fail_fast`` stopped the run (nothing written).
    running : dict of str to (running_mean, running_var)
        What was written for each calibrated BN layer, shape (C,) each (empty if stopped).
    images : int
        Images that contributed.
    failures : list of (name, reason)
        Images left out, named by their path relative to the folder, in sorted order.
    """

    out: str | None
    running: dict[str, tuple[np.ndarray, np.ndarray]]
    images: int
    failures: list[tuple[str, str]]

    @property
    def stopped(self) -> bool:
        """True if ``fail_fast`` stopped the run."""
        return self.out is None


def run_calibrate(
    in_dir: str | os.PathLike[str],
    spec: PipelineSpec,
    options: CalibrateOptions,
    on_progress: ProgressCallback | None = None,
) -> CalibrateResult:
    """Write ``spec`` with every batch-mode BN calibrated over the images under ``in_dir``.

    The statistics are :func:`dataset_bn_stats` (or :func:`momentum_bn_stats`), made
    running statistics by :func:`calibrated_plain`; a folder read as RGB because it
    mixes gray and colour images gets ``input.color: rgb``. A header (``#`` lines)
    says where the statistics come from.

    Raises
    ------
    CbrError
        Exit code 2, before any image is processed: bad options; an output path that
        is a folder, lies in a folder that does not exist or cannot be written, or is
        the pipeline's own config file; no batch-mode BN; no images; a config that
        does not fit the images (:func:`cbr_cli.batch.scan.check_config`). Exit code 1:
        no image could be processed, or the file cannot be written.
    """
    if options.momentum is not None:
        _check_momentum(options.momentum)
    _check_out(options.out, spec)
    if not batch_bn_layers(spec):
        raise CbrError(f"{spec.source}: {NOTHING_TO_CALIBRATE}")
    paths = discover(in_dir, options.recursive, options.glob)
    files = [str(p) for p in paths]
    jobs = resolve_jobs(options.jobs, len(files))
    scan = scan_folder(spec, files, options.resize)
    check_config(RunSetup(spec, scan.color, ApplyOptions(resize=options.resize)), scan)
    common: dict[str, Any] = {
        "color": scan.color,
        "resize": options.resize,
        "jobs": jobs,
        "names": [p.relative_to(in_dir).as_posix() for p in paths],
        "on_progress": on_progress,
        "fail_fast": options.fail_fast,
    }
    stats: DatasetStats | MomentumStats
    if options.momentum is None:
        stats = dataset_bn_stats(files, spec, **common)
        running = stats.running()
    else:
        stats = momentum_bn_stats(files, spec, options.momentum, **common)
        running = stats.running
    if stats.stopped:
        return CalibrateResult(None, {}, 0, stats.failures)
    if stats.images == 0:
        raise CbrError(
            f"no image could be processed ({len(stats.failures)} failed); nothing written", 1
        )
    plain = calibrated_plain(spec, running)
    if scan.color is not None and spec.input.color is None:
        input_part = {**plain.pop("input", {}), "color": scan.color}
        plain = {"input": input_part, **plain}  # first, as in a hand-written config
    header = _header(in_dir, spec, options, stats.images, len(stats.failures))
    write_pipeline_yaml(options.out, plain, header)
    return CalibrateResult(options.out, running, stats.images, stats.failures)


def _check_out(out: str, spec: PipelineSpec) -> None:
    """Refuse, before any work, a path the calibrated pipeline cannot or must not go to."""
    if os.path.isdir(out):
        raise CbrError(f"--out {out}: is a folder; give the YAML file to write")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        problem = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise CbrError(f"--out {out}: the folder {folder} {problem}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CbrError(f"--out {out}: cannot write in the folder {folder} (permission denied)")
    try:
        same = spec.source != "flags" and os.path.samefile(out, spec.source)
    except OSError:  # either does not exist
        same = False
    if same:
        raise CbrError(
            f"--out {out}: is the pipeline config given with -c; write the calibrated "
            "pipeline to another file"
        )


def _header(
    in_dir: str | os.PathLike[str],
    spec: PipelineSpec,
    options: CalibrateOptions,
    images: int,
    failed: int,
) -> str:
    """The comment lines at the top of a calibrated pipeline."""
    from cbr_cli import __version__

    if options.momentum is None:
        how = (
            "exact dataset mean and unbiased variance over every output position "
            "(PyTorch's buffers after one train-mode pass of the folder as one batch)"
        )
    else:
        how = (
            f"PyTorch's exponential update, momentum {options.momentum}, one train-mode step "
            "per image in sorted order (batch size 1), from mean 0 / variance 1"
        )
    lines = [
        f"Calibrated by cbr {__version__} (cbr calibrate) from {images} images in "
        f"{comment_text(os.path.abspath(in_dir))}" + (f" ({failed} failed)" if failed else ""),
        f"Pipeline: {comment_text(spec.source)}",
        f"BatchNorm statistics: {how}.",
    ]
    if options.resize is not None:
        size = f"{options.resize[0]}x{options.resize[1]}"
        lines.append(
            f"Images were resized to {size}: pass --resize {size} to cbr apply / cbr batch too."
        )
    return "\n".join(lines)
