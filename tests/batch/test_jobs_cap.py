"""``--jobs`` is capped at 4 worker processes per CPU (issue 15): refused above, one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.cli.app import app

runner = CliRunner()


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    pixels = (np.random.default_rng(0).random((8, 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "x.png")
    (tmp_path / "p.yaml").write_text("layers:\n  - conv: {out_channels: 2, kernel_size: 3}\n")
    return tmp_path


def command(kind: str, base: Path, jobs: int) -> list[str]:
    if kind == "batch":
        return ["batch", str(base / "in"), "-o", str(base / "out"), "-j", str(jobs)]
    config = base / "p.yaml"
    config.write_text("layers:\n  - conv: {out_channels: 2, kernel_size: 3}\n    bn: batch\n")
    return [
        "calibrate",
        str(base / "in"),
        "-c",
        str(config),
        "-o",
        str(base / "out"),
        "-j",
        str(jobs),
    ]


@pytest.mark.parametrize("kind", ["batch", "calibrate"])
@pytest.mark.parametrize("extra", [1, 10**30])
def test_more_than_four_jobs_per_cpu_is_refused_before_any_work(folder, kind, extra):
    limit = 4 * cpus()
    jobs = limit + extra
    result = runner.invoke(app, command(kind, folder, jobs))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: --jobs: expected at most {limit}, 4 per CPU available (got {jobs}); "
        "more worker processes only add memory and contention\n"
    )
    assert not (folder / "out").exists()


@pytest.mark.parametrize("kind", ["batch", "calibrate"])
def test_four_jobs_per_cpu_are_allowed(folder, kind):
    result = runner.invoke(app, command(kind, folder, 4 * cpus()))
    assert result.exit_code == 0, result.stderr
    assert (folder / "out").exists()


def test_the_help_says_why_jobs_is_capped():
    result = runner.invoke(app, ["batch", "--help"])
    words = " ".join(result.stdout.split())  # however the help is wrapped
    assert "at most 4 per CPU: more only add memory and contention" in words
