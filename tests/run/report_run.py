"""A small real ``cbr apply`` run with its report, as the command makes it.

:func:`build_report` runs :func:`cbr_cli.run.apply.run_apply` with the report on, on two
crops of a sample image (one of them named like an XSS attack), and rebuilds the page's
context from what the run wrote, for the tests to look into.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image

from cbr_cli.io.render.report_context import ReportContext, report_context
from cbr_cli.run.apply import run_apply
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


def build_report(tmp: Path, range_rule: str = "p99.5") -> BuiltReport:
    inputs = tmp / "in"
    inputs.mkdir()
    paths = crops(inputs)
    out = tmp / "out"
    spec = build_spec(None, LayerFlags())
    command = shlex.join(["cbr", "apply", *map(str, paths), "--out", str(out), "--save-npy"])
    options = ApplyOptions(
        out_dir=str(out), save_npy=True, report=True, range_rule=range_rule, command=command
    )
    result = run_apply([str(p) for p in paths], spec, options)
    assert result.report == str(out / "report.html")
    manifest = json.loads(Path(result.manifest).read_text(encoding="utf-8"))
    context = report_context(
        result.to_dict(),
        manifest,
        out,
        command=command,
        pipeline_yaml=yaml.safe_dump(spec.to_plain(), sort_keys=False),
    )
    return BuiltReport(out, Path(result.report), context, result)
