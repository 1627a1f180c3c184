"""Dataset-wide BatchNorm statistics, streamed over a folder of images on the worker pool.

What ``cbr batch`` (dataset-wide ``mode: batch`` BN) and ``cbr calibrate`` share. No
printing; progress goes to a callback (:class:`cbr_cli.batch.pool.Progress`).

Dataset statistics
------------------
For a BN layer in ``mode: batch`` the statistics are the per-channel mean and **biased**
variance over every output position of every image (count ``n = sum of H_out * W_out``).
For images of one size that is exactly what PyTorch's ``BatchNorm2d`` in training mode
uses when the whole folder is one batch of ``N`` images (``n = N * H_out * W_out``).

They are computed streaming, so the folder never has to fit in memory: per image and
channel a worker computes the count, the mean and ``M2 = sum((x - mean)**2)`` (two
passes, float64 accumulators: :class:`cbr_cli.core.moments.Moments`); the parent merges
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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cbr_cli.batch.ordered import InOrder
from cbr_cli.batch.pool import Progress, WorkerPool, state
from cbr_cli.batch.scan import RunSetup, failure_reason
from cbr_cli.core import ops
from cbr_cli.core.moments import Moments
from cbr_cli.errors import CbrError
from cbr_cli.run.pipeline import run_layers
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.pipeline_types import PipelineSpec

ProgressCallback = Callable[[Progress], None]


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


def check_momentum(momentum: float) -> None:
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
            labels_k = [labels[i] for i in remaining]
            moments, failed = _one_layer(workers, jobs_k, phase, labels_k, on_progress, fail_fast)
            failures.update({remaining[pos]: reason for pos, reason in failed.items()})
            if fail_fast and failures:
                return DatasetStats(layers, 0, _listed(failures, labels), stopped=True)
            remaining = [i for i in remaining if i not in failures]
            if moments is None:  # every image failed
                return DatasetStats({}, 0, _listed(failures, labels))
            if moments.count <= 1:
                raise CbrError(
                    f"layer {name!r}: bn mode 'batch' needs more than one value per channel "
                    f"over all images (got {moments.count})"
                )
            layers[name] = moments
            known = {**known, name: (moments.mean, moments.var)}
    return DatasetStats(layers, len(remaining), _listed(failures, labels))


def _one_layer(
    workers: WorkerPool[Any],
    jobs: list[tuple[int, str, int, dict[str, Any]]],
    phase: str,
    labels: Sequence[str],
    on_progress: ProgressCallback | None,
    fail_fast: bool,
) -> tuple[Moments | None, dict[int, str]]:
    """One pass over the images for one BN layer: its moments merged in image order (None
    if every image failed), and the failures by position in ``jobs``. With ``fail_fast``
    the pass stops, and the workers with it, at the first failure."""
    merged = InOrder[dict[str, Moments] | None]()
    total: Moments | None = None
    failures: dict[int, str] = {}
    progress = Progress(phase, len(jobs))
    workers.start()
    if on_progress:
        on_progress(progress)
    for (pos, _, _, _), outcome in workers.run(_moments_task, jobs):
        if isinstance(outcome, str):
            failures[pos] = outcome
        for _, ready in merged.add(pos, None if isinstance(outcome, str) else outcome):
            for m in (ready or {}).values():
                total = m if total is None else total.merge(m)
        progress = _advance(progress, outcome, labels[pos], on_progress)
        if fail_fast and failures:
            workers.stop()
            break
    return total, failures


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
    check_momentum(momentum)
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
    in_order = InOrder[Any]()
    setup = RunSetup(spec, color, ApplyOptions(resize=resize))
    jobs_list = [(i, path, indices[-1]) for i, path in enumerate(paths)]
    progress = Progress(f"BN statistics (momentum {momentum})", len(jobs_list))
    with WorkerPool(jobs, setup) as workers:
        workers.start()
        if on_progress:
            on_progress(progress)
        for (i, _, _), outcome in workers.run(_image_stats_task, jobs_list):
            for position, result in in_order.add(i, outcome):  # updates go in image order
                if isinstance(result, str):
                    failures[position] = result
                else:
                    for name, count, mean, var in result:
                        rm, rv = running[name]
                        ops.update_running_stats(rm, rv, mean, var, count, momentum)
            progress = _advance(progress, outcome, labels[i], on_progress)
            if fail_fast and isinstance(outcome, str):
                workers.stop()
                return MomentumStats(running, 0, _listed({i: outcome}, labels), stopped=True)
    return MomentumStats(running, len(paths) - len(failures), _listed(failures, labels))
