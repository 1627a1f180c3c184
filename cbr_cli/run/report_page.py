"""The report pages of a run (:mod:`cbr_cli.io.render.report`).

``cbr apply`` writes ``OUT/report.html`` for the whole run, built from its records and
``manifest.json`` (versions, the ``cbr shape`` rows, the time) after the run is committed,
so every file it links to is in place. ``cbr batch`` writes one page per image into its
folder (:func:`write_image_report`, before the image's done-marker) and the folder's
``index.html`` (:mod:`cbr_cli.batch.index_page`). Pages are written atomically: whole or
absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbr_cli.run.records import ApplyOptions, ApplyResult, ImageRecord
from cbr_cli.spec.pipeline_types import PipelineSpec

if TYPE_CHECKING:
    from cbr_cli.spec.layerstack import StackResult

REPORT = "report.html"


def report_title(names: list[str]) -> str:
    """``cbr report: astronaut``, ``cbr report: a, b, c and 4 more``."""
    shown = ", ".join(names[:3])
    if len(names) > 3:
        shown += f" and {len(names) - 3} more"
    return f"cbr report: {shown}"


def _write_page(
    result: Mapping[str, Any],
    manifest: Mapping[str, Any],
    folder: Path,
    spec: PipelineSpec,
    options: ApplyOptions,
    into: Path | None = None,
) -> Path:
    """The page for ``result``, its links relative to ``folder``, written into ``into``
    (default ``folder``)."""
    import yaml

    from cbr_cli.io.render.report import render_report
    from cbr_cli.io.render.report_context import report_context
    from cbr_cli.io.writers import atomic_write_bytes

    context = report_context(
        result,
        manifest,
        folder,
        command=options.command or "cbr",
        pipeline_yaml=yaml.safe_dump(spec.to_plain(), sort_keys=False, allow_unicode=True),
        title=report_title([image["name"] for image in result["images"]]),
    )
    path = (folder if into is None else into) / REPORT
    atomic_write_bytes(path, render_report(context).encode("utf-8"))
    return path


def write_report(result: ApplyResult, spec: PipelineSpec, options: ApplyOptions) -> str:
    """Write ``report.html`` into ``options.out_dir`` for ``result``; return its path."""
    from cbr_cli.io.statefiles import load

    out = Path(options.out_dir)
    manifest, _ = load(out / "manifest.json")
    _write_page(result.to_dict(), manifest or {}, out, spec, options)
    return str(out / REPORT)


def write_image_report(
    record: ImageRecord,
    spec: PipelineSpec,
    options: ApplyOptions,
    target: Path,
    stack: StackResult,
) -> str:
    """Write one image's page, ``report.html``, into its folder ``target`` (where
    ``record.out_dir``'s files are being written); return its final path."""
    from cbr_cli.run.manifest import run_description

    shape = "x".join(map(str, stack.input_shape))
    manifest = {
        "versions": run_description(spec, options)["versions"],
        "geometry": {shape: stack.to_plain()["layers"]},
    }
    result = {"images": [record.to_dict()], "warnings": [w.message for w in stack.warnings]}
    # Links relative to the image's final folder; the page goes where its files go now.
    _write_page(result, manifest, Path(record.out_dir), spec, options, into=Path(target))
    return str(Path(record.out_dir) / REPORT)
