"""Calibrated pipelines: ``cbr calibrate``'s work, and the YAML it writes.

:func:`run_calibrate` is the command's work: check everything that can be checked
before touching an image (options, where the file goes, the config against the
folder's headers), compute the statistics, write the calibrated YAML.

The statistics come from :mod:`cbr_cli.batch.dataset_bn` (exact, or PyTorch's momentum
update); :func:`calibrated_plain` turns the pipeline's batch-mode BN layers into running
ones holding them (see that module for how they match PyTorch's train/eval).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cbr_cli.batch.dataset_bn import (
    NOTHING_TO_CALIBRATE,
    DatasetStats,
    MomentumStats,
    batch_bn_layers,
    check_momentum,
    dataset_bn_stats,
    momentum_bn_stats,
)
from cbr_cli.batch.discover import discover
from cbr_cli.batch.pool import Progress, resolve_jobs
from cbr_cli.batch.scan import RunSetup, check_config, scan_folder
from cbr_cli.errors import CbrError
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.pipeline_types import PipelineSpec

ProgressCallback = Callable[[Progress], None]


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
        check_momentum(options.momentum)
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
