"""Done-markers are small (issue 14) and still all that resume, clean-up and the reports need.

A marker of format 2 stores the per-channel statistics as exact columns
(:mod:`cbr_cli.io.columns`) and derives its file names from its stages; these tests pin
its size, the exactness of the reports built from it, the names it stands for, and what
becomes of a marker of format 1 (an earlier cbr).
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cbr_cli.batch.resume import MARKER, marker_stats
from cbr_cli.core.stats import channel_stats
from cbr_cli.io.columns import ColumnError, decode_column, encode_column
from cbr_cli.io.image_folder import ImageFolder, OutTree, marker_names
from cbr_cli.io.statefiles import MAX_CHANNEL_STAGES
from tests.helpers import cbr, ok

WIDE = (
    "layers:\n  - name: stem\n    conv: {out_channels: 64, padding: same, seed: 0}\n    bn: batch\n"
)


def noise(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and p.name != MARKER}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two noise images through 64 channels in 3 stages (conv, BN over the folder, ReLU)."""
    base = tmp_path_factory.mktemp("wide")
    for i in range(2):
        noise(base / "in" / f"n{i}.png", seed=i)
    config = base / "wide.yaml"
    config.write_text(WIDE)
    ok(cbr("batch", base / "in", "-c", config, "-o", base / "out", "-j", "1", "--save-npy"))
    return base / "in", config, base / "out"


def test_a_marker_of_64_channels_in_3_stages_is_a_few_kilobytes(wide_run) -> None:
    _, _, out = wide_run
    marker = json.loads((out / "n0" / MARKER).read_text())
    assert [(s["stage"], s["shape"][0]) for s in marker["image"]["stages"]] == [
        ("conv", 64), ("bn", 64), ("act", 64)
    ]  # fmt: skip
    assert (out / "n0" / MARKER).stat().st_size < 8 * 1024  # format 1: ~59 KB


def test_the_reports_from_markers_are_the_exact_statistics(wide_run) -> None:
    # Independent reference: the statistics of the saved float32 maps, computed again.
    _, _, out = wide_run
    with open(out / "stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 64
    for row in rows:
        if row["channel"] != "0" and row["channel"] != "63":
            continue
        maps = np.load(out / row["image"].removesuffix(".png") / f"stem_{row['stage']}.npy")
        stats = channel_stats(maps)[int(row["channel"])].to_dict()
        for key in ("min", "max", "mean", "std", "frac_zero", "frac_negative"):
            assert row[key] == repr(stats[key]), (row["image"], row["stage"], key)


def test_a_marker_stands_for_exactly_the_files_written(tmp_path: Path) -> None:
    noise(tmp_path / "in" / "x.png", seed=3, size=(12, 14))
    for flags in ([], ["--no-channel-pngs"], ["--save-npy"], ["--no-channel-pngs", "--save-npy"]):
        out = tmp_path / f"out{len(os.listdir(tmp_path))}"
        ok(cbr("batch", tmp_path / "in", "-o", out, "-j", "1", *flags))
        marker = json.loads((out / "x" / MARKER).read_text())
        assert set(marker_names(marker["image"])) == files(out / "x"), flags


def test_resume_sees_a_changed_config_and_a_changed_input(tmp_path: Path) -> None:
    for i in range(2):
        noise(tmp_path / "in" / f"i{i}.png", seed=i, size=(12, 14))
    config = tmp_path / "net.yaml"
    config.write_text("layers:\n  - conv: {out_channels: 5, seed: 1}\n    bn: batch\n")
    args = ["batch", tmp_path / "in", "-c", config, "-o", tmp_path / "out", "-j", "1"]
    ok(cbr(*args))
    assert "skipped   │     2" in cbr(*args).stdout
    config.write_text("layers:\n  - conv: {out_channels: 5, seed: 2}\n    bn: batch\n")
    assert "processed │     2" in cbr(*args).stdout
    time.sleep(0.01)
    noise(tmp_path / "in" / "i1.png", seed=9, size=(12, 14))  # another size, mtime
    result = cbr(*args)  # adding i1's new content changes the folder's BN statistics too
    assert "processed │     2" in result.stdout
    ok(cbr("batch", tmp_path / "in", "-o", tmp_path / "off", "-j", "1", "--bn", "off"))
    os.utime(tmp_path / "in" / "i0.png", ns=(2, 2))  # the same bytes, a new mtime
    again = cbr("batch", tmp_path / "in", "-o", tmp_path / "off", "-j", "1", "--bn", "off")
    assert "processed │     1" in again.stdout and "skipped   │     1" in again.stdout


@pytest.mark.parametrize("lost", ["marker", "grid", "npy"])
def test_what_a_power_loss_can_leave_is_redone(tmp_path: Path, lost: str) -> None:
    """Markers are not fsync-ed, like the files they stand for: after a power loss either
    may be empty. An empty marker is not valid JSON, an empty file fails the check of the
    marker's files; either way that image (only) is redone, with its files rewritten."""
    for i in range(2):
        noise(tmp_path / "in" / f"i{i}.png", seed=i, size=(12, 14))
    args = ["batch", tmp_path / "in", "-o", tmp_path / "out", "-j", "1", "--save-npy"]
    ok(cbr(*args))
    folder = tmp_path / "out" / "i0"
    before = tree(folder)
    victim = {
        "marker": folder / MARKER,
        "grid": next(folder.glob("*_act_grid.png")),
        "npy": next(folder.glob("*_act.npy")),
    }[lost]
    victim.write_bytes(b"")
    result = cbr(*args)
    ok(result)
    assert "processed │     1" in result.stdout and "skipped   │     1" in result.stdout
    assert ("not valid JSON" in result.stderr) == (lost == "marker")
    assert tree(folder) == before


def test_a_marker_of_format_1_is_redone_quietly_and_its_files_cleaned(tmp_path: Path) -> None:
    noise(tmp_path / "in" / "x.png", seed=5, size=(12, 14))
    out = tmp_path / "out"
    args = ["batch", tmp_path / "in", "-o", out, "-j", "1", "--no-channel-pngs"]
    ok(cbr(*args))
    reference = tree(out)
    # As cbr 0.x wrote it (shortened): every file listed, relative to OUT.
    old = {
        "format": 1,
        "fingerprint": json.loads((out / "x" / MARKER).read_text())["fingerprint"],
        "image": {
            "path": os.fspath(tmp_path / "in" / "x.png"),
            "input_png": "x/input.png",
            "stages": [{"files": {"grid": "x/old_conv_grid.png", "channels": ["x/notes.txt"]}}],
        },
    }
    (out / "x" / MARKER).write_text(json.dumps(old))
    (out / "x" / "old_conv_grid.png").write_bytes(b"an older pipeline's grid")
    (out / "x" / "notes.txt").write_text("the user's")
    result = cbr(*args)
    ok(result)
    assert "warning" not in result.stderr
    assert "processed │     1" in result.stdout
    assert tree(out) == {**reference, "x/notes.txt": b"the user's"}


def test_names_derived_from_a_forged_marker_are_cbrs_names_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    for name in ("notes.txt", "evil", "evil_conv_grid.png"):
        (out / "x" / name).write_text("?")
    (tmp_path / "secret_conv_grid.png").write_text("outside")
    forged = {
        "format": 2,
        "image": {
            "outputs": {"channel_pngs": False, "save_npy": False},
            "stages": [
                {"layer": "../../secret", "stage": "conv", "shape": [1, 1, 1]},
                {"layer": "notes.txt", "stage": "x", "shape": [1, 1, 1]},
                {"layer": "evil", "stage": "conv", "shape": ["1"]},
            ],
        },
    }
    (out / "x" / MARKER).write_text(json.dumps(forged))
    ImageFolder(OutTree(out), "x").clear()
    assert files(out / "x") == {"notes.txt", "evil", "evil_conv_grid.png"}
    assert (tmp_path / "secret_conv_grid.png").exists()


def test_a_marker_claiming_too_many_channels_stands_for_no_files() -> None:
    image = {
        "outputs": {"channel_pngs": True, "save_npy": False},
        "stages": [{"layer": "a", "stage": "conv", "shape": [MAX_CHANNEL_STAGES + 1, 1, 1]}],
    }
    assert marker_names(image) == []
    image["stages"][0]["shape"][0] = 3
    assert marker_names(image) == [
        "input.png", "a_conv_c00.png", "a_conv_c01.png", "a_conv_c02.png", "a_conv_grid.png"
    ]  # fmt: skip


# -- the columns ---------------------------------------------------------------------------

F32 = [float(np.float32(v)) for v in (0.1, -3.5e-8, 7.25, 1e30)]


@pytest.mark.parametrize(
    ("key", "values", "count", "dtype"),
    [
        ("min", F32, 10, "<f4"),  # float32 values: 4 bytes each, exactly
        ("min", [0.1, 2.0, -1.0, 5.0], 10, "<f8"),  # not all float32
        ("max", [1e300, 0.0, 1.0, 2.0], 10, "<f8"),  # beyond float32's range
        ("mean", F32, 10, "<f8"),
        ("std", [0.0, None, 1.5, 2.0**-1070], 10, "<f8"),  # None: non-finite
        ("frac_zero", [k / 12345 for k in (0, 1, 12344, 12345)], 12345, "<u4"),
        ("frac_negative", [0.1, 0.5, 0.0, 1.0], 3, "<f8"),  # 0.1 is no count of 3: fractions
        ("frac_zero", [0.0, None, 0.5, 1.0], 2, "<f8"),
    ],
)
def test_a_column_gives_back_exactly_its_values(key, values, count, dtype) -> None:
    entry = encode_column(key, values, count)
    assert entry[0] == dtype
    decoded = decode_column(json.loads(json.dumps(entry)), key, len(values), count)
    assert [None if v is None else v.hex() for v in decoded] == [
        None if v is None else float(v).hex() for v in values
    ]


def test_non_finite_values_decode_as_none_as_json_markers_held() -> None:
    values = [float("nan"), float("inf"), -float("inf"), 1.0]
    entry = encode_column("max", values, 4)
    assert decode_column(entry, "max", 4, 4) == [None, None, None, 1.0]


def test_a_column_of_the_wrong_length_is_refused() -> None:
    entry = encode_column("mean", [1.0, 2.0, 3.0], 5)
    with pytest.raises(ColumnError, match="expected 4 values of <f8"):
        decode_column(entry, "mean", 4, 5)


def test_marker_stats_decode_every_column(wide_run) -> None:
    _, _, out = wide_run
    stage = json.loads((out / "n1" / MARKER).read_text())["image"]["stages"][2]
    stats = marker_stats(stage)
    assert sorted(stats) == sorted(["min", "max", "mean", "std", "frac_zero", "frac_negative"])
    assert all(len(v) == 64 for v in stats.values())
    assert all(v == 0.0 for v in stats["frac_negative"])  # after ReLU


@given(
    key=st.sampled_from(["min", "max", "mean", "std", "frac_zero", "frac_negative"]),
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
    count=st.integers(1, 2**40),
)
def test_every_column_round_trips_exactly_or_is_refused(key, values, count) -> None:
    # Whatever the values, what decodes is what was encoded (non-finite: None), or, for
    # values a marker cannot hold (a negative std, a fraction above 1), a ColumnError.
    entry = encode_column(key, values, count)
    try:
        decoded = decode_column(entry, key, len(values), count)
    except ColumnError:
        finite = [v for v in values if np.isfinite(v)]
        assert (key == "std" and min(finite) < 0) or (
            key.startswith("frac_") and not all(0 <= v <= 1 for v in finite)
        )
        return
    assert [None if v is None else v.hex() for v in decoded] == [
        v.hex() if np.isfinite(v) else None for v in values
    ]
