"""OUT is cbr's, and only cbr's files in it: links, clean-up, reruns, names, pruning.

The holes of issue 15 (items 1, 2, 3 and 7, an empty OUT left by a failed ``apply``, and
folders of images removed from IN), each shown end to end through the CLI, plus the
pieces of :mod:`cbr_cli.io.image_folder` and :mod:`cbr_cli.io.staging` they rest on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from cbr_cli.errors import CbrError
from tests.helpers import REPO, cbr, one_line_error

# The names as documented (README, cbr_cli.io.image_folder); spelled out here so that the
# end-to-end tests also run against code that predates that module.
MARKER = ".cbr-done.json"
PENDING = ".cbr-pending.json"
STAGING_PREFIX = ".cbr-staging-"

runner = CliRunner()
FAST = ["--no-channel-pngs", "-k", "box"]


def png(path: Path, size: tuple[int, int] = (12, 16), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file (and link, as its target) under ``root``: relative path -> bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}".encode()
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def manifest_is_consistent(out: Path) -> None:
    """The manifest (if any) lists only files that are there, and every image's files."""
    path = out / "manifest.json"
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    for rel in data["files"]:
        assert (out / rel).is_file(), rel
    for image in data["inputs"]:
        assert f"{image['name']}/input.png" in data["files"]


# -- 1. no symbolic link below OUT is followed -------------------------------------------


def test_apply_refuses_an_image_folder_that_is_a_link(tmp_path: Path) -> None:
    image = png(tmp_path / "small.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "layer1_conv_grid.png").write_bytes(b"the user's picture")
    (outside / "notes.txt").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "small").symlink_to("../outside")
    before = tree(tmp_path)
    result = cbr("apply", image, "-o", out)
    one_line_error(result, f"{out / 'small'} is a symbolic link", "real folders below OUT")
    assert tree(tmp_path) == before  # nothing deleted or written, inside OUT or out


@pytest.mark.parametrize("link", ["a", "sub"])
def test_batch_refuses_a_link_on_the_way_to_an_image_folder(tmp_path: Path, link: str) -> None:
    bin_ = tmp_path / "bin"
    png(bin_ / "a.png")
    png(bin_ / "photo_conv.png", seed=1)  # an input with an output-like name
    png(bin_ / "sub" / "b.png", seed=2)
    out = tmp_path / "bout"
    out.mkdir()
    (out / link).symlink_to(bin_ if link == "a" else bin_ / "sub")
    before = tree(tmp_path)
    result = cbr("batch", bin_, "-o", out, "-r", *FAST)
    one_line_error(result, f"{out / link} is a symbolic link")
    assert tree(tmp_path) == before


def test_clean_up_never_follows_a_link_in_the_middle(tmp_path: Path) -> None:
    from cbr_cli.io.image_folder import ImageFolder, OutTree

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "input.png").write_bytes(b"keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dir").symlink_to(tmp_path)  # out/dir/victim is the victim
    folder = ImageFolder(OutTree(tmp_path / "out"), "dir/victim")
    with pytest.raises(CbrError, match="is a symbolic link"):
        folder.clear(remove_empty=True)
    with pytest.raises(CbrError, match="is a symbolic link"):
        folder.create()
    assert (victim / "input.png").read_bytes() == b"keep"


def test_out_itself_may_be_a_link(tmp_path: Path) -> None:
    image = png(tmp_path / "a.png")
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to("real")
    assert cbr("apply", image, "-o", tmp_path / "out", *FAST).exit_code == 0
    assert (tmp_path / "real" / "a" / "input.png").is_file()


# -- 2. clean-up removes only cbr's own files --------------------------------------------

USER_FILES = {"holiday_act.png": b"h", "my_conv.npy": b"m", "cat_bn_grid.png": b"c"}


def test_apply_keeps_the_users_files_in_an_image_folder(tmp_path: Path) -> None:
    image = png(tmp_path / "small.png")
    out = tmp_path / "out"
    (out / "small").mkdir(parents=True)
    for name, data in USER_FILES.items():
        (out / "small" / name).write_bytes(data)
    (out / ".holiday.png.0123abcd.tmp").write_bytes(b"the user's, not cbr's")
    (out / ".manifest.json.0123abcd.tmp").write_bytes(b"cbr's, from a killed write")
    result = cbr("apply", image, "-o", out, "--save-npy")
    assert result.exit_code == 0, result.stderr
    for name, data in USER_FILES.items():
        assert (out / "small" / name).read_bytes() == data
    assert (out / ".holiday.png.0123abcd.tmp").exists()
    assert not (out / ".manifest.json.0123abcd.tmp").exists()
    manifest_is_consistent(out)


def test_apply_rerun_removes_its_own_stale_files_only(tmp_path: Path) -> None:
    image = png(tmp_path / "small.png")
    out = tmp_path / "out"
    assert cbr("apply", image, "-o", out, "--out-channels", "12").exit_code == 0
    (out / "small" / "notes.txt").write_text("mine")
    assert cbr("apply", image, "-o", out, "--out-channels", "2").exit_code == 0
    names = {p.name for p in (out / "small").iterdir()}
    assert "layer1_conv_c11.png" not in names  # the earlier run's, recorded: removed
    assert {"layer1_conv_c00.png", "layer1_conv_c01.png", "notes.txt"} <= names
    assert not [n for n in names if n.startswith("layer1_conv_c0") and n[-6:-4] > "01"]
    manifest_is_consistent(out)


def test_apply_keeps_other_images_folders_and_their_record(tmp_path: Path) -> None:
    a, b = png(tmp_path / "a.png"), png(tmp_path / "b.png", seed=1)
    out = tmp_path / "out"
    assert cbr("apply", a, "-o", out, *FAST).exit_code == 0
    kept = tree(out / "a")
    assert cbr("apply", b, "-o", out, *FAST).exit_code == 0
    assert tree(out / "a") == kept  # another image's folder: not this run's to clear
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert "a/input.png" in files and "b/input.png" in files
    manifest_is_consistent(out)


def test_batch_keeps_the_users_files_in_an_unfinished_image_folder(tmp_path: Path) -> None:
    png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    args = ["batch", tmp_path / "in", "-o", out, "-j", "1", *FAST]
    assert cbr(*args).exit_code == 0
    (out / "x" / MARKER).unlink()  # as if killed mid-image
    for name, data in USER_FILES.items():
        (out / "x" / name).write_bytes(data)
    (out / ".notes.txt.89abcdef.tmp").write_bytes(b"not cbr's")
    assert cbr(*args).exit_code == 0
    for name, data in USER_FILES.items():
        assert (out / "x" / name).read_bytes() == data
    assert (out / ".notes.txt.89abcdef.tmp").exists()
    assert (out / "x" / MARKER).exists()


def test_batch_cleans_the_files_a_pending_record_lists(tmp_path: Path) -> None:
    # An image killed mid-way under another pipeline: its files are named in the pending
    # record written before them, so the rerun removes them although it would not write them.
    png(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    args = ["batch", tmp_path / "in", "-o", out, "-j", "1", *FAST]
    assert cbr(*args).exit_code == 0
    reference = tree(out)
    folder = out / "x"
    (folder / MARKER).unlink()
    (folder / "old_conv_grid.png").write_bytes(b"older pipeline")
    (folder / ".old_conv.npy.0123abcd.tmp").write_bytes(b"partial")
    (folder / f".{PENDING}.0123abcd.tmp").write_bytes(b"a record cut short")
    (folder / f".{MARKER}.0123abcd.tmp").write_bytes(b"a marker cut short")
    pending = {"format": 1, "input": "x.png", "files": ["old_conv_grid.png", "old_conv.npy"]}
    (folder / PENDING).write_text(json.dumps(pending))
    assert cbr(*args).exit_code == 0
    assert tree(out) == reference


def test_a_record_cannot_make_cbr_delete_other_names(tmp_path: Path) -> None:
    from cbr_cli.io.image_folder import ImageFolder, OutTree

    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    for name in ("notes.txt", "photo.jpg", "input.png"):
        (out / "x" / name).write_text("?")
    (tmp_path / "secret.png").write_text("outside")
    record = {"files": ["notes.txt", "photo.jpg", "../../secret.png", "input.png"]}
    (out / "x" / PENDING).write_text(json.dumps(record))
    ImageFolder(OutTree(out), "x").clear(remove_empty=True)
    assert sorted(p.name for p in (out / "x").iterdir()) == ["notes.txt", "photo.jpg"]
    assert (tmp_path / "secret.png").exists()


def test_root_clean_up_removes_only_temporary_files_of_cbrs_reports(tmp_path: Path) -> None:
    from cbr_cli.io.image_folder import OutTree

    for name in (
        "manifest.json",
        "bn_stats.json",
        ".stats.csv.0123abcd.tmp",
        ".a.png.0123abcd.tmp",
    ):
        (tmp_path / name).write_text("x")
    OutTree(tmp_path).clean_root_temps()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.png.0123abcd.tmp", "bn_stats.json", "manifest.json"
    ]  # fmt: skip


# -- 3. a failed or killed rerun of `cbr apply` keeps the earlier output -----------------


def _snapshot_without_staging(out: Path) -> dict[str, bytes]:
    """OUT's files but the killed run's staging folder and lock file (the next run's)."""
    return {
        k: v for k, v in tree(out).items() if not k.startswith(STAGING_PREFIX) and k != ".cbr-lock"
    }


def test_disk_full_during_a_rerun_keeps_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cbr_cli.io import writers as output

    image = png(tmp_path / "small.png", size=(24, 24))
    out = tmp_path / "out"
    assert cbr("apply", image, "-o", out, "--out-channels", "3").exit_code == 0
    before = tree(out)
    real_write_png = output.write_png
    calls = []

    def write_png(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise CbrError(f"cannot write {path}: No space left on device", 1)
        real_write_png(path, *args, **kwargs)

    monkeypatch.setattr(output, "write_png", write_png)
    result = cbr("apply", image, "-o", out, "--out-channels", "5")
    one_line_error(result, "No space left on device", exit_code=1)
    assert len(calls) >= 4
    assert tree(out) == before  # old files, old manifest; no staging folder, no temp file
    manifest_is_consistent(out)


def test_a_kill_during_the_commit_is_completed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = png(tmp_path / "small.png", size=(20, 20))
    out, reference = tmp_path / "out", tmp_path / "reference"
    for target in (out, reference):
        assert cbr("apply", image, "-o", target, "--out-channels", "6").exit_code == 0
    assert cbr("apply", image, "-o", reference, "--out-channels", "2").exit_code == 0

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs."""

    real_replace = os.replace
    moved = []

    def replace(src, dst, **kwargs):
        if STAGING_PREFIX in os.fspath(src) and not os.fspath(src).endswith(".tmp"):
            moved.append(src)
            if len(moved) == 3:
                raise Killed
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        runner.invoke(
            app, ["apply", str(image), "-o", str(out), "--out-channels", "2"],
            catch_exceptions=False,
        )  # fmt: skip
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (out / "manifest.json").exists()  # the old one went first: none is wrong
    assert any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())

    other = png(tmp_path / "other.png", seed=3)  # any next run into OUT completes it
    assert cbr("apply", other, "-o", out, *FAST).exit_code == 0
    got, want = tree(out / "small"), tree(reference / "small")
    assert got == want
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert {f for f in files if f.startswith("small/")} == {f"small/{n}" for n in want}
    manifest_is_consistent(out)


@pytest.mark.slow
def test_sigkill_mid_rerun_leaves_the_old_complete_output(tmp_path: Path) -> None:
    image = png(tmp_path / "big.png", size=(384, 384))
    out = tmp_path / "out"
    assert cbr("apply", image, "-o", out, "--out-channels", "4").exit_code == 0
    before = tree(out)
    process = subprocess.Popen(
        [sys.executable, "-m", "cbr_cli", "apply", str(image), "-o", str(out),
         "--out-channels", "16"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    changed: set[str] = set()
    while process.poll() is None and time.monotonic() < deadline:
        now = tree(out)
        changed = {k for k in now.keys() | before.keys() if now.get(k) != before.get(k)}
        if len(changed) >= 3:  # the rerun is under way: files appeared, changed or went
            break
        time.sleep(0.002)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert running, "the rerun finished before it could be killed"
    assert _snapshot_without_staging(out) == before
    manifest_is_consistent(out)
    # The next run removes the unfinished staging folder and writes the new output.
    assert cbr("apply", image, "-o", out, "--out-channels", "2", *FAST[:1]).exit_code == 0
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
    manifest_is_consistent(out)


# -- failed apply: no OUT left behind ----------------------------------------------------


def test_a_compute_time_failure_leaves_no_out_it_created(tmp_path: Path) -> None:
    image = tmp_path / "huge.tif"
    Image.fromarray(np.full((16, 16), 3e38, np.float32), "F").save(image)
    out = tmp_path / "new" / "out"
    one_line_error(cbr("apply", image, "-o", out, *FAST), "overflow float32", exit_code=1)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # an OUT that was there stays, as it was
    one_line_error(cbr("apply", image, "-o", tmp_path / "mine", *FAST), exit_code=1)
    assert list((tmp_path / "mine").iterdir()) == []


# -- 7. image folders never take cbr's own names -----------------------------------------


def test_unique_names_avoid_cbrs_names_in_out() -> None:
    from cbr_cli.io.image_folder import is_reserved, unique_names

    paths = ["manifest.json.png", "d/Stats.CSV.png", ".cbr-staging-ab.png", "bn_stats.json.jpg"]
    names = unique_names(paths, reserved=True)
    assert names == [
        "manifest.json-png",
        "Stats.CSV-png",
        "_.cbr-staging-ab-png",
        "bn_stats.json-jpg",
    ]
    assert not any(is_reserved(n) for n in names)
    assert unique_names(paths[:1]) == ["manifest.json"]  # in a subfolder it is free


def test_apply_image_named_like_the_manifest(tmp_path: Path) -> None:
    image = png(tmp_path / "manifest.json.png")
    out = tmp_path / "out"
    result = cbr("apply", image, "-o", out, *FAST)
    assert result.exit_code == 0, result.stderr
    assert (out / "manifest.json").is_file()
    assert (out / "manifest.json-png" / "input.png").is_file()


def test_batch_images_named_like_its_reports(tmp_path: Path) -> None:
    for i, name in enumerate(("manifest.json", "bn_stats.json", "stats.csv", "failures.txt")):
        png(tmp_path / "in" / f"{name}.png", seed=i)
    png(tmp_path / "in" / "sub" / "manifest.json.png")  # free in a subfolder
    out = tmp_path / "out"
    result = cbr("batch", tmp_path / "in", "-o", out, "-r", "--bn", "batch", *FAST)
    assert result.exit_code == 0, result.stderr
    for name in ("manifest.json", "bn_stats.json", "stats.csv", "failures.txt"):
        assert (out / name).is_file()
        assert (out / f"{name}-png" / MARKER).is_file()
    assert (out / "sub" / "manifest.json" / MARKER).is_file()


def test_batch_refuses_a_subfolder_named_like_a_report(tmp_path: Path) -> None:
    png(tmp_path / "in" / "stats.csv" / "a.png")
    result = cbr("batch", tmp_path / "in", "-o", tmp_path / "out", "-r", *FAST)
    one_line_error(result, "stats.csv", "rename it")
    assert not (tmp_path / "out").exists()


# -- folders of images removed from IN ---------------------------------------------------


def test_folders_of_removed_images_are_reported_then_pruned(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i, name in enumerate(("a", "b", "c")):
        png(src / f"{name}.png", seed=i)
    png(src / "sub" / "d.png", seed=4)
    out = tmp_path / "out"
    args = ["batch", src, "-o", out, "-j", "1", *FAST]
    assert cbr(*args, "-r").exit_code == 0
    (src / "b.png").unlink()
    (out / "c" / "notes.txt").write_text("mine")
    (src / "c.png").unlink()
    result = cbr(*args)  # without -r: sub/d.png is left out, not removed
    assert result.exit_code == 0, result.stderr
    assert "note: 2 folder(s) in OUT belong to images no longer in IN (b, c)" in result.stderr
    assert "--prune" in result.stderr
    assert (out / "b" / MARKER).exists()
    result = cbr(*args, "--prune")
    assert result.exit_code == 0, result.stderr
    assert "removed 2 folder(s) of images no longer in IN: b, c" in result.stderr
    assert not (out / "b").exists()
    assert sorted(p.name for p in (out / "c").iterdir()) == ["notes.txt"]  # the user's: kept
    assert (out / "sub" / "d" / MARKER).exists()
    assert "no longer in IN" not in cbr(*args, "--prune").stderr
