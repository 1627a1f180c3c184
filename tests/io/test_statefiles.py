"""State files in OUT are validated on read (issue 15, item 10).

An edited or foreign done-marker or ``bn_stats.json`` is treated as absent: the work
is redone, the outputs are those of an untouched run, and one ``warning:`` line on
stderr names the file -- never a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.batch.resume import MARKER
from cbr_cli.cli.app import app
from cbr_cli.io.statefiles import MAX_STATE_BYTES

runner = CliRunner()

ARGS = ["--no-channel-pngs", "-j", "1"]  # the default pipeline: conv, BN in mode batch, ReLU


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of three images and the output of a complete run over it."""
    base = tmp_path_factory.mktemp("state")
    rng = np.random.default_rng(11)
    (base / "in").mkdir()
    for name in ("a", "b", "c"):
        pixels = (rng.random((12, 14, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(base / "in" / f"{name}.png")
    result = runner.invoke(app, ["batch", str(base / "in"), "-o", str(base / "ref"), *ARGS])
    assert result.exit_code == 0, result.stderr
    assert (base / "ref" / "bn_stats.json").exists() and (base / "ref" / "a" / MARKER).exists()
    return base / "in", base / "ref"


def edit_json(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """An edit that loads a JSON file, changes it and writes it back (NaN allowed)."""

    def apply(path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps(change(data)), encoding="utf-8")

    return apply


def stage0(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    def apply(marker: Any) -> Any:
        change(marker["image"]["stages"][0])
        return marker

    return apply


def setter(*path: Any, value: Any) -> Callable[[Any], Any]:
    def apply(data: Any) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    return apply


def deleter(*path: Any) -> Callable[[Any], Any]:
    def apply(data: Any) -> Any:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return data

    return apply


def write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def make_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def drop_last_stage(marker: Any) -> Any:
    marker["image"]["stages"].pop()  # the fingerprint still matches: stages must too
    return marker


def first_labels(change: Callable[[list[Any]], None]) -> Callable[[Any], Any]:
    def apply(marker: Any) -> Any:
        change(next(iter(marker["image"]["labels"].values())))
        return marker

    return apply


def column(key: str, values: list[float], dtype: str) -> Callable[[dict[str, Any]], None]:
    """Replace a statistics column of a stage by ``values`` packed as cbr packs them
    (byte-shuffled, zlib, base64), written out here so that the check is independent."""

    def apply(stage: dict[str, Any]) -> None:
        raw = np.asarray(values, dtype=dtype).view(np.uint8).reshape(len(values), -1).T
        text = base64.b64encode(zlib.compress(raw.tobytes())).decode()
        stage["stats"][key] = [dtype, text]

    return apply


def values_per_channel(stage: dict[str, Any]) -> int:
    return stage["shape"][1] * stage["shape"][2]


def bn_layer(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    def apply(cache: Any) -> Any:
        change(next(iter(cache["layers"].values())))
        return cache

    return apply


def too_many_zeros(stage: dict[str, Any]) -> None:
    column("frac_zero", [values_per_channel(stage) + 1] * stage["shape"][0], "<u4")(stage)


MARKER_EDITS = {
    "stages is a string": (
        setter("image", "stages", value="conv"),
        "image.stages: expected a list",
    ),
    "an outputs flag that is a string": (
        setter("image", "outputs", "channel_pngs", value="yes"),
        "image.outputs.channel_pngs: expected a boolean, got a string",
    ),
    "shape of wrong length": (
        stage0(lambda s: s.update(shape=[2, 3])),
        "image.stages[0].shape: expected 3 entries, got 2",
    ),
    "a NaN in the marker": (
        stage0(lambda s: s["shape"].__setitem__(1, float("nan"))),
        "non-finite number NaN",
    ),
    "too few labels": (first_labels(lambda labels: labels.pop()), "entries, got 7"),
    "a label that is a number": (
        first_labels(lambda labels: labels.__setitem__(0, 5)),
        "image.labels.layer1[0]: expected a string, got an integer",
    ),
    "a layer name that is a path": (
        stage0(lambda s: s.update(layer="../../elsewhere")),
        "image.stages[0].layer: expected a layer name, got '../../elsewhere'",
    ),
    "a missing key": (deleter("image", "source"), "image.source: expected an object, got nothing"),
    "a stage fewer": (drop_last_stage, "image.stages: do not match the pipeline"),
    "another format": (setter("format", value=3), "format: expected 2, got 3"),
    "a fraction above 1": (
        stage0(lambda s: column("frac_zero", [1.5] * s["shape"][0], "<f8")(s)),
        "image.stages[0].stats.frac_zero: expected fractions in [0, 1]",
    ),
    "more zeros than values": (
        stage0(
            lambda s: column("frac_zero", [values_per_channel(s) + 1] * s["shape"][0], "<u4")(s)
        ),
        "image.stages[0].stats.frac_zero: expected counts of at most 80",
    ),
    "a negative std": (
        stage0(lambda s: column("std", [-1.0] * s["shape"][0], "<f8")(s)),
        "image.stages[0].stats.std: expected numbers >= 0",
    ),
    "a column cut short": (
        stage0(lambda s: column("mean", [0.0] * (s["shape"][0] - 1), "<f8")(s)),
        "image.stages[0].stats.mean: expected 8 values of <f8",
    ),
    "a column of another type": (
        stage0(lambda s: column("mean", [0] * s["shape"][0], "<i2")(s)),
        "image.stages[0].stats.mean: unknown dtype '<i2'",
    ),
    "counts for a mean": (
        stage0(lambda s: column("mean", [0] * s["shape"][0], "<u4")(s)),
        "image.stages[0].stats.mean: unknown dtype '<u4'",
    ),
    "a column that is not base64": (
        stage0(lambda s: s["stats"].update(max=["<f4", "not base64!"])),
        "image.stages[0].stats.max: payload: not base64 text of zlib data",
    ),
    "a missing column": (
        stage0(lambda s: s["stats"].pop("min")),
        "image.stages[0].stats.min: expected [dtype, payload], two strings",
    ),
    "not an object": (lambda marker: [marker], "expected a JSON object, got a list"),
}
BN_EDITS = {
    "layers is a list": (setter("layers", value=[1, 2]), "layers: expected an object, got a list"),
    "mean of wrong length": (
        bn_layer(lambda layer: layer.update(mean=[0.5])),
        ".mean: expected 8 entries, got 1",
    ),
    "an infinite variance": (
        bn_layer(lambda layer: layer["var"].__setitem__(0, float("inf"))),
        "non-finite number Infinity",
    ),
    "a negative variance": (
        bn_layer(lambda layer: layer["var"].__setitem__(0, -1.0)),
        ".var[0]: expected a number >= 0, got -1.0",
    ),
    "count is a string": (
        bn_layer(lambda layer: layer.update(count="many")),
        ".count: expected an integer, got a string",
    ),
    "an unknown failed image": (
        setter("failures", value=[["nope.png", "broken"]]),
        "failures[0]: 'nope.png' is not one of the images",
    ),
    "no key": (deleter("key"), "key: expected a string, got nothing (missing)"),
    "null": (lambda cache: None, "expected a JSON object, got null"),
    "a layer too many": (
        setter("layers", "extra", value={"count": 9, "mean": [0.0], "var": [1.0]}),
        "layers: expected layer1, got layer1, extra",
    ),
}


def symlink_elsewhere(path: Path) -> None:
    out = next(parent for parent in path.parents if parent.name == "out")
    target = out.parent / "elsewhere.json"
    path.replace(target)  # the real content, outside OUT: not read through the link
    path.symlink_to(target)


RAW_EDITS = {
    "a symlink": (symlink_elsewhere, "a symbolic link (not followed)"),
    "not JSON": (write_bytes(b'{"format": 1,'), "not valid JSON"),
    "not UTF-8": (write_bytes(b'{"key": "\xff"}'), "not UTF-8 text"),
    "a FIFO": (make_fifo, "not a regular file"),
}

CASES = [
    pytest.param(
        "a/" + MARKER, edit_json(change), expected, "the image is redone", id=f"marker: {name}"
    )
    for name, (change, expected) in MARKER_EDITS.items()
] + [
    pytest.param("a/" + MARKER, edit, expected, "the image is redone", id=f"marker: {name}")
    for name, (edit, expected) in RAW_EDITS.items()
] + [
    pytest.param(
        "bn_stats.json", edit_json(change), expected, "the BN statistics are computed again",
        id=f"bn_stats: {name}",
    )
    for name, (change, expected) in BN_EDITS.items()
] + [
    pytest.param(
        "bn_stats.json", edit, expected, "the BN statistics are computed again",
        id=f"bn_stats: {name}",
    )
    for name, (edit, expected) in RAW_EDITS.items()
]  # fmt: skip


@pytest.mark.parametrize(("name", "edit", "problem", "consequence"), CASES)
def test_an_edited_state_file_is_ignored_with_a_warning_and_the_work_redone(
    finished_run, tmp_path, name, edit, problem, consequence
):
    in_dir, reference = finished_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    edit(out / name)
    result = runner.invoke(app, ["batch", str(in_dir), "-o", str(out), *ARGS])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"warning: {out / name}: ")
    assert problem in warnings[0]
    assert warnings[0].endswith(f"; ignored: {consequence}")
    assert tree(out) == tree(reference)  # the outputs of an untouched run, state files too


def test_an_untouched_rerun_gives_no_warning(finished_run, tmp_path):
    in_dir, reference = finished_run
    shutil.copytree(reference, tmp_path / "out")
    result = runner.invoke(app, ["batch", str(in_dir), "-o", str(tmp_path / "out"), *ARGS])
    assert result.exit_code == 0
    assert "warning" not in result.stderr
    assert "3 already done" in result.stderr or "skipped" in result.stdout


def test_an_oversized_state_file_is_not_read_whole(finished_run, tmp_path):
    in_dir, reference = finished_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    with open(out / "bn_stats.json", "r+b") as f:
        f.truncate(MAX_STATE_BYTES + 10)  # sparse: no disk space used
    result = runner.invoke(app, ["batch", str(in_dir), "-o", str(out), *ARGS])
    assert result.exit_code == 0
    assert f"bn_stats.json: larger than {MAX_STATE_BYTES} bytes" in result.stderr
    assert tree(out) == tree(reference)
