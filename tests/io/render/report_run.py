"""A small real ``cbr apply`` run and its report, built the way the wiring will build it.

:func:`build_report` runs today's :func:`cbr_cli.run.apply.run_apply` on crops of a sample
image (one of them named like an XSS attack), draws the report-only pictures (kernels,
histograms) and writes ``OUT/report.html`` from :func:`report_context`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from cbr_cli.core.kernels import expand_names
from cbr_cli.io.render.grid import normalize_note
from cbr_cli.io.render.histograms import layer_histograms
from cbr_cli.io.render.kernel_picture import kernels_picture
from cbr_cli.io.render.ranges import MAX_RULE
from cbr_cli.io.render.report import render_report
from cbr_cli.io.render.report_context import ReportContext, report_context
from cbr_cli.io.writers import write_png
from cbr_cli.run.apply import run_apply
from cbr_cli.run.pipeline import build_layers
from cbr_cli.run.records import ApplyOptions, ApplyResult
from cbr_cli.spec.flags import LayerFlags, build_spec
from tests.helpers import REPO

XSS_NAME = "<img src=x onerror=alert(1)>"
"""A file stem that runs script if a page pastes it into HTML unescaped."""


@dataclass
class BuiltReport:
    out: Path
    html: Path
    context: ReportContext
    result: ApplyResult


def crops(folder: Path) -> list[Path]:
    """Two 72 x 96 crops of the astronaut sample, one of them with the XSS name."""
    with Image.open(REPO / "samples" / "astronaut.png") as image:
        rgb = image.convert("RGB")
    paths = [folder / "face.png", folder / f"{XSS_NAME}.png"]
    rgb.crop((170, 40, 266, 112)).save(paths[0])
    rgb.crop((300, 300, 396, 372)).save(paths[1])
    return paths


def build_report(tmp: Path) -> BuiltReport:
    inputs = tmp / "in"
    inputs.mkdir()
    paths = crops(inputs)
    out = tmp / "out"
    spec = build_spec(None, LayerFlags())
    options = ApplyOptions(out_dir=str(out), save_npy=True)
    result = run_apply([str(p) for p in paths], spec, options)
    manifest = json.loads(Path(result.manifest).read_text(encoding="utf-8"))
    layers = build_layers(spec, 3)
    kernels: dict[tuple[str, str], str] = {}
    histograms: dict[tuple[str, str], str] = {}
    for record in result.images:
        folder = Path(record.out_dir)
        for built in layers:
            layer = built.spec.name
            names = None
            if built.spec.conv.kernels is not None:
                names = [f"{i}:{n}" for i, n in enumerate(expand_names(built.spec.conv.kernels))]
            path = folder / f"{layer}_kernels.png"
            write_png(path, kernels_picture(built.weight, names, layer=layer))
            kernels[(record.name, layer)] = str(path)
            stages = {s.stage: np.load(s.files["npy"]) for s in record.stages if s.layer == layer}
            path = folder / f"{layer}_hist.png"
            labels = next(s.labels for s in record.stages if s.layer == layer)
            write_png(path, layer_histograms(stages, labels, layer=layer))
            histograms[(record.name, layer)] = str(path)
    notes = {
        stage: normalize_note(options.normalize, MAX_RULE, stage != "act")
        for stage in ("conv", "bn", "act")
    }
    context = report_context(
        result.to_dict(),
        manifest,
        out,
        command=shlex.join(["cbr", "apply", *map(str, paths), "--out", str(out), "--save-npy"]),
        pipeline_yaml=yaml.safe_dump(spec.to_plain(), sort_keys=False),
        notes=notes,
        kernels=kernels,
        histograms=histograms,
        title="cbr report: demo pipeline on two crops",
    )
    html = out / "report.html"
    html.write_text(render_report(context), encoding="utf-8")
    return BuiltReport(out, html, context, result)
