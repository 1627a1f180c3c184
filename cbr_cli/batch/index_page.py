"""``OUT/index.html``: the gallery of a ``cbr batch`` folder.

One card per image, in sorted order: a thumbnail (the last stage's grid) linking to the
image's own ``report.html``, or the one-line reason it failed; then the aggregate
statistics (``aggregate.csv`` as a table) and the failures. Built from the manifest
entries :mod:`cbr_cli.batch.reports` makes and the files it wrote; like them, a function
of the inputs, pipeline and options alone (no time), so a resumed run ends with the same
bytes. Rendered by :func:`cbr_cli.io.render.report.render_index`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from cbr_cli.spec.pipeline_types import PipelineSpec

INDEX = "index.html"
AGGREGATE_SHOWN = ("layer", "stage", "channel", "label", "min", "max", "mean", "std")


def thumbnail_name(spec: PipelineSpec) -> str:
    """The grid a card shows: the last layer's last stage (its activation, if any)."""
    from cbr_cli.io.image_folder import grid_name

    last = spec.layers[-1]
    stage = "act" if last.activation != "none" else ("bn" if last.bn is not None else "conv")
    return grid_name(last.name, stage)


def _number(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def write_index(
    out_root: str | Path,
    entries: Sequence[dict[str, Any]],
    aggregate_csv: str | Path,
    spec: PipelineSpec,
    *,
    command: str,
    versions: dict[str, str | None],
    pngs: bool = True,
) -> str:
    """Write ``OUT/index.html``; returns its path.

    ``entries`` are the folder manifest's images (``path``, ``status``, ``out_dir``
    relative to OUT, ``reason``).
    """
    from cbr_cli.io.image_folder import IMAGE_REPORT
    from cbr_cli.io.render.report import render_index
    from cbr_cli.io.render.report_context import IndexContext, IndexEntry, Picture, Table
    from cbr_cli.io.writers import atomic_write_bytes

    root = Path(out_root)
    thumb = thumbnail_name(spec)
    cards, failures = [], []
    for entry in entries:
        if entry["status"] == "done":
            folder = PurePosixPath(entry["out_dir"])
            report = (folder / IMAGE_REPORT).as_posix()
            picture = Picture((folder / thumb).as_posix(), f"{entry['path']}: {thumb}")
            cards.append(
                IndexEntry(
                    entry["path"],
                    report=report if (root / report).is_file() else None,
                    thumbnail=picture if pngs and (root / picture.src).is_file() else None,
                )
            )
        elif entry["status"] == "failed":
            card = IndexEntry(entry["path"], message=str(entry.get("reason", "failed")))
            cards.append(card)
            failures.append(card)
    with open(aggregate_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = Table(
        list(AGGREGATE_SHOWN),
        [[_number(row[c]) if c in ("min", "max", "mean", "std") else row[c]
          for c in AGGREGATE_SHOWN] for row in rows],
    )  # fmt: skip
    done = sum(1 for e in entries if e["status"] == "done")
    context = IndexContext(
        title=f"cbr batch: {done} of {len(entries)} images",
        command=command or "cbr batch",
        versions=versions,
        warnings=[],
        entries=cards,
        aggregate=table,
        failures=failures,
    )
    path = root / INDEX
    atomic_write_bytes(path, render_index(context).encode("utf-8"))
    return str(path)
