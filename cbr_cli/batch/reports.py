"""The folder-level files of ``cbr batch``: statistics, aggregates, failures, manifest.

Written at the end of every run (also when every image was skipped), atomically, from
the done-markers of the finished images read one at a time, so memory does not grow
with per-image statistics. Every file is a function of the inputs, the pipeline and
the options alone (no timestamps, no timings, no "skipped this time"), so an
interrupted run that is resumed ends with the same bytes as an uninterrupted one.

``OUT/stats.csv``
    One row per image, layer, stage and channel: ``image`` (path relative to ``IN``),
    ``layer``, ``stage``, ``channel``, ``label``, ``min``, ``max``, ``mean``, ``std``
    (population), ``frac_zero``, ``frac_negative``. Floats are written with ``repr``
    (they read back exactly).
``OUT/aggregate.csv``
    One row per layer, stage and channel over every finished image: ``images``,
    ``count`` (values), ``min``, ``max``, and ``mean``/``std`` over all values, merged
    from each image's count, mean and std with Chan et al.'s exact update (each
    image's std is float32-accumulated, so relative accuracy ~1e-6), and the fractions
    of zeros and negatives over all values.
``OUT/failures.txt``
    One line per failed image, ``path: reason`` (empty when none failed).
``OUT/manifest.json``
    The resolved pipeline, options, versions and seeds (as ``cbr apply``'s manifest,
    without its creation time) plus every image's output folder and status
    (``done``, ``failed`` with the reason, or ``not run``).
``OUT/index.html``
    With ``--report`` (the default): the gallery, each card linking to the image's own
    ``report.html`` (:mod:`cbr_cli.batch.index_page`).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbr_cli.batch.resume import marker_stats, read_marker
from cbr_cli.core.moments import Moments

if TYPE_CHECKING:
    from cbr_cli.batch.discover import ImageJob
    from cbr_cli.batch.options import BatchOptions
    from cbr_cli.spec.pipeline_types import PipelineSpec

STATS_COLUMNS = (
    "image", "layer", "stage", "channel", "label",
    "min", "max", "mean", "std", "frac_zero", "frac_negative",
)  # fmt: skip
AGGREGATE_COLUMNS = (
    "layer", "stage", "channel", "label", "images", "count",
    "min", "max", "mean", "std", "frac_zero", "frac_negative",
)  # fmt: skip


def _num(value: Any) -> str:
    if value is None:
        return ""
    value = float(value)
    return repr(value) if math.isfinite(value) else str(value)


@dataclass
class _StageTotal:
    """A stage's per-channel totals over images (arrays of shape (C,))."""

    labels: list[str]
    images: int = 0
    moments: Moments | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    zeros: np.ndarray = field(default_factory=lambda: np.zeros(0))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, stats: dict[str, list[float | None]], count: int) -> None:
        def column(key: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in stats[key]], float)

        std = column("std")
        moments = Moments(count, column("mean"), std * std * count)
        self.moments = moments if self.moments is None else self.moments.merge(moments)
        self.low = column("min") if self.low is None else np.fmin(self.low, column("min"))
        self.high = column("max") if self.high is None else np.fmax(self.high, column("max"))
        zeros = np.rint(column("frac_zero") * count)
        negatives = np.rint(column("frac_negative") * count)
        self.zeros = zeros if self.images == 0 else self.zeros + zeros
        self.negatives = negatives if self.images == 0 else self.negatives + negatives
        self.images += 1


def write_reports(
    in_dir: str,
    out_root: str,
    jobs: list[ImageJob],
    status: dict[str, str],
    failures: dict[str, str],
    spec: PipelineSpec,
    color: str | None,
    options: BatchOptions,
    bn_stats: str | None = None,
) -> dict[str, str]:
    """Write the four folder-level files; returns ``{kind: path}``."""
    from cbr_cli.io.writers import write_json

    root = Path(out_root)
    paths = {
        "stats": root / "stats.csv",
        "aggregate": root / "aggregate.csv",
        "failures": root / "failures.txt",
        "manifest": root / "manifest.json",
    }
    entries, totals = _write_stats(paths["stats"], jobs, status, failures)
    _write_aggregate(paths["aggregate"], totals)
    _write_failures(paths["failures"], jobs, failures)
    from cbr_cli.batch.index_page import INDEX
    from cbr_cli.io.image_folder import OutTree
    from cbr_cli.io.statefiles import load

    earlier, _ = load(paths["manifest"])
    data = _folder_manifest(in_dir, spec, color, options, bn_stats, entries)
    data["index"] = INDEX if options.output.report else None
    write_json(paths["manifest"], data)
    written = {kind: str(path) for kind, path in paths.items()}
    if not options.output.report and isinstance(earlier, dict) and earlier.get("index"):
        OutTree(root).remove(".", [INDEX])  # the earlier run's gallery: its pages are gone
    if options.output.report:
        from cbr_cli.batch.index_page import write_index

        written["index"] = write_index(
            root,
            entries,
            paths["aggregate"],
            spec,
            command=options.output.command,
            versions=data["versions"],
        )
    return written


def _write_stats(
    path: Path, jobs: list[ImageJob], status: dict[str, str], failures: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], _StageTotal]]:
    """``stats.csv``: a row per image, stage and channel, from the done-markers; returns
    each image's manifest entry and the per-stage totals for ``aggregate.csv``."""
    from cbr_cli.io.writers import atomic_writer

    totals: dict[tuple[str, str], _StageTotal] = {}
    entries = []
    with atomic_writer(path, "w", durable=False) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(STATS_COLUMNS)
        for job in jobs:
            entry: dict[str, Any] = {"path": job.rel}
            state = status[job.rel]
            marker = read_marker(job.folder) if state in ("processed", "skipped") else None
            if marker is None:
                entry["status"] = "failed" if job.rel in failures else "not run"
                if job.rel in failures:
                    entry["reason"] = failures[job.rel]
                entries.append(entry)
                continue
            image = marker["image"]
            entry.update(status="done", out_dir=job.out_rel, source=image["source"])
            entries.append(entry)
            for stage in image["stages"]:
                labels = image["labels"][stage["layer"]]
                stats = marker_stats(stage)
                key = (stage["layer"], stage["stage"])
                total = totals.setdefault(key, _StageTotal(labels))
                total.add(stats, stage["shape"][1] * stage["shape"][2])
                for c, label in enumerate(labels):
                    writer.writerow(
                        [job.rel, stage["layer"], stage["stage"], c, label]
                        + [_num(stats[k][c]) for k in STATS_COLUMNS[5:]]
                    )
    return entries, totals


def _write_aggregate(path: Path, totals: dict[tuple[str, str], _StageTotal]) -> None:
    """``aggregate.csv``: per layer, stage and channel over the whole folder."""
    from cbr_cli.io.writers import atomic_writer

    with atomic_writer(path, "w", durable=False) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(AGGREGATE_COLUMNS)
        for (layer, stage), total in totals.items():
            m = total.moments
            if m is None or total.low is None or total.high is None:
                continue
            std = np.sqrt(m.var)
            for c, label in enumerate(total.labels):
                writer.writerow(
                    [layer, stage, c, label, total.images, m.count]
                    + [_num(v) for v in (total.low[c], total.high[c], m.mean[c], std[c])]
                    + [_num(total.zeros[c] / m.count), _num(total.negatives[c] / m.count)]
                )


def _write_failures(path: Path, jobs: list[ImageJob], failures: dict[str, str]) -> None:
    """``failures.txt``: one ``image: reason`` line per failed image, in sorted order."""
    from cbr_cli.io.writers import atomic_writer

    with atomic_writer(path, "w", durable=False) as f:
        for job in jobs:
            if job.rel in failures:
                f.write(f"{job.rel}: {failures[job.rel]}\n")


def _folder_manifest(
    in_dir: str,
    spec: PipelineSpec,
    color: str | None,
    options: BatchOptions,
    bn_stats: str | None,
    entries: list[dict[str, Any]],
) -> dict[str, Any]:
    """The folder's ``manifest.json``: the run (as ``cbr apply`` describes it), the folder
    and every image's entry with the counts."""
    from cbr_cli.run.manifest import run_description

    data = run_description(spec, options.output)
    data["options"]["channel_pngs"] = options.output.channel_pngs
    data["options"]["color"] = color
    data["options"]["store"] = options.store
    data["input"] = {
        "folder": os.path.abspath(in_dir),
        "recursive": options.recursive,
        "glob": options.glob,
    }
    data["bn_stats"] = bn_stats
    data["images"] = entries
    data["counts"] = {
        kind: sum(1 for e in entries if e["status"] == kind)
        for kind in ("done", "failed", "not run")
    }
    return data
