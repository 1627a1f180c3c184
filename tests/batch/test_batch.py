"""`cbr batch`: discovery, mirrored outputs, failures, dataset-wide BN, resume, kill, Ctrl-C."""

from __future__ import annotations

import csv
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

from cbr_cli.batch.discover import discover, plan_outputs
from cbr_cli.batch.resume import MARKER
from cbr_cli.cli.app import app
from cbr_cli.errors import CbrError
from cbr_cli.run.apply import run_apply
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.flags import LayerFlags, build_spec

runner = CliRunner()

NO_PNGS = ["--no-channel-pngs"]
IMAGES = 16  # in the killed/interrupted runs


def save(path: Path, rng: np.random.Generator, size=(24, 32), mode="RGB", fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    pixels = (rng.random((*size, channels)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    image.save(path, format=fmt)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def mtimes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Nested folders, five formats, a corrupt, an empty, a fake and a text file."""
    rng = np.random.default_rng(5)
    root = tmp_path / "in"
    save(root / "a.png", rng)
    save(root / "a.jpg", rng, fmt="JPEG")
    save(root / "b.bmp", rng)
    save(root / "sub" / "c.tif", rng, mode="L")
    save(root / "sub" / "deeper" / "d.gif", rng)
    save(root / "sub" / "e.webp", rng)
    save(root / ".hidden" / "h.png", rng)
    save(root / ".dot.png", rng)
    good = (root / "a.png").read_bytes()
    (root / "sub" / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "fake.jpg").write_text("this is text, not a JPEG")
    (root / "notes.txt").write_text("not an image; skipped silently")
    (root / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    return root


# -- discovery and layout ----------------------------------------------------------------


def test_discover_sorted_skips_hidden_dangling_and_non_images(mixed: Path):
    rel = [p.relative_to(mixed).as_posix() for p in discover(mixed, recursive=True)]
    assert rel == [
        "a.jpg", "a.png", "b.bmp", "empty.png", "fake.jpg",
        "sub/c.tif", "sub/corrupt.png", "sub/deeper/d.gif", "sub/e.webp",
    ]  # fmt: skip
    top = [p.name for p in discover(mixed)]
    assert top == ["a.jpg", "a.png", "b.bmp", "empty.png", "fake.jpg"]
    assert [p.name for p in discover(mixed, True, "*.png")] == ["a.png", "empty.png", "corrupt.png"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.png", ["a.png", "empty.png", "sub/corrupt.png"]),  # `*` crosses `/`: any depth
        ("sub/*", ["sub/c.tif", "sub/corrupt.png", "sub/deeper/d.gif", "sub/e.webp"]),
        ("sub/deeper/*", ["sub/deeper/d.gif"]),
        ("*/deeper/*", ["sub/deeper/d.gif"]),
        ("a.*", ["a.jpg", "a.png"]),
        ("[ab].png", ["a.png"]),
    ],
)
def test_glob_matches_the_whole_relative_path_with_fnmatch_rules(
    mixed: Path, pattern: str, expected: list[str]
):
    """README: `fnmatch` rules on the path relative to IN_DIR, `*` also matching `/`."""
    found = [p.relative_to(mixed).as_posix() for p in discover(mixed, True, pattern)]
    assert found == expected


@pytest.mark.parametrize("pattern", ["deeper/*", "c.tif", "A.PNG"])
def test_glob_is_anchored_at_in_dir_and_case_sensitive(mixed: Path, pattern: str):
    """`deeper/*` names a top-level folder (there is none): not `sub/deeper/d.gif`."""
    with pytest.raises(CbrError, match="matching"):
        discover(mixed, True, pattern)


def test_folder_symlinks_are_not_followed(tmp_path: Path):
    save(tmp_path / "in" / "real" / "x.png", np.random.default_rng(0))
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in", target_is_directory=True)
    assert [p.name for p in discover(tmp_path / "in", recursive=True)] == ["x.png"]


def test_output_names_mirror_the_tree_and_avoid_collisions(tmp_path: Path):
    rng = np.random.default_rng(1)
    root = tmp_path / "in"
    for name in ("a.png", "a.jpg", "A.bmp", "sub.png", "sub/x.png", "sub/x.PNG"):
        save(root / name, rng)
    jobs = plan_outputs(root, discover(root, recursive=True), tmp_path / "out")
    assert {j.rel: j.out_rel for j in jobs} == {
        "A.bmp": "A",  # sorted by code point: upper case first, keeps the stem
        "a.jpg": "a-jpg",
        "a.png": "a-png",
        "sub.png": "sub-png",  # 'sub' is the mirrored folder
        "sub/x.PNG": "sub/x",
        "sub/x.png": "sub/x-png",
    }
    assert jobs[0].folder == str(tmp_path / "out" / "A")


@pytest.mark.parametrize("where", ["inside", "same", "around"])
def test_output_folder_overlapping_the_input_is_refused(tmp_path: Path, where: str):
    root = tmp_path / "data" / "in"
    save(root / "x.png", np.random.default_rng(0))
    out = {"inside": root / "out", "same": root, "around": tmp_path / "data"}[where]
    result = runner.invoke(app, ["batch", str(root), "-o", str(out), "-r"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --out") and "input folder" in result.stderr
    assert not (root / "out").exists() and sorted(os.listdir(root)) == ["x.png"]


def test_a_config_that_does_not_fit_the_images_fails_before_writing(tmp_path: Path):
    save(tmp_path / "in" / "x.png", np.random.default_rng(0))  # RGB
    config = tmp_path / "p.yaml"
    config.write_text("input: {mean: [0.5]}\nlayers:\n  - conv: {out_channels: 2}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(out), "-c", str(config)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "input.mean" in result.stderr
    assert not out.exists()


def test_an_output_path_that_is_a_file_is_a_one_line_error(tmp_path: Path):
    save(tmp_path / "in" / "x.png", np.random.default_rng(0))
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "file")])
    assert result.exit_code == 2
    assert result.stderr == f"error: --out {tmp_path / 'file'}: exists and is not a folder\n"


SUFFIXES = "(.png, .jpg, .jpeg, .tif, .tiff, .bmp, .webp, .gif)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], f"no images in {{in}} {SUFFIXES}; add --recursive to include subfolders"),
        (["--glob", "*.xyz"], f"no images in {{in}} {SUFFIXES} matching '*.xyz'; add --recursive "
         "to include subfolders"),
        (["-r", "--glob", "*.xyz"], f"no images in {{in}} or its subfolders {SUFFIXES} matching "
         "'*.xyz'"),
    ],
)  # fmt: skip
def test_a_folder_without_images_is_one_clear_error(tmp_path: Path, extra, message):
    root = tmp_path / "in"
    save(root / "sub" / "x.png", np.random.default_rng(0))
    (root / "readme.txt").write_text("x")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(root), "-o", str(out), *extra])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {message.format(**{'in': root})}\n"
    assert not out.exists()


def test_no_recursive_hint_without_subfolders(tmp_path: Path):
    (tmp_path / "in").mkdir()
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr == f"error: no images in {tmp_path / 'in'} {SUFFIXES}\n"


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("-3", "-3"), ("two", "'two'")])
def test_jobs_must_be_a_positive_integer_one_line_error(tmp_path: Path, value: str, shown: str):
    save(tmp_path / "in" / "x.png", np.random.default_rng(0))
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(out), "-j", value])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: --jobs: expected a positive integer (got {shown})\n"
    assert not out.exists()


SMALL_KERNEL_THEN_LARGE = (
    "layers:\n"
    "  - conv: {out_channels: 2, kernel_size: 3}\n    bn: batch\n"
    "  - conv: {out_channels: 2, kernel_size: 5}\n    bn: batch\n"
)


@pytest.mark.parametrize(
    ("sizes", "extra", "why"),
    [
        ([(16, 16), (20, 12)], ["--resize", "3x3"], "with --resize 3x3"),
        ([(5, 6), (5, 6)], [], "every image is 5x6"),
    ],
    ids=["resize", "one-size"],
)
def test_a_layer_that_cannot_fit_the_one_input_size_fails_once_before_any_work(
    tmp_path: Path, sizes, extra, why
):
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        save(tmp_path / "in" / f"i{i}.png", rng, size=size)
    config = tmp_path / "p.yaml"
    config.write_text(SMALL_KERNEL_THEN_LARGE)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["batch", str(tmp_path / "in"), "-o", str(out), "-c", str(config), *extra]
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no progress, no failure per image
    assert lines[0].startswith(f"error: {config}:4:")
    assert "layer 'layer2'" in lines[0] and "the output would be empty" in lines[0]
    assert lines[0].endswith(f"({why})")
    assert not out.exists()


def test_images_of_several_sizes_are_run_one_by_one(tmp_path: Path):
    """Only some sizes fit the layers: those images are processed, the others fail."""
    rng = np.random.default_rng(0)
    save(tmp_path / "in" / "big.png", rng, size=(9, 9))
    save(tmp_path / "in" / "small.png", rng, size=(5, 5))
    config = tmp_path / "p.yaml"
    config.write_text(SMALL_KERNEL_THEN_LARGE.replace("bn: batch", "bn: running"))
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "-o", str(out), "-c", str(config), "-j", "1"]
    result = runner.invoke(app, [*args, *NO_PNGS])
    assert result.exit_code == 1
    failures = (out / "failures.txt").read_text().splitlines()
    assert len(failures) == 1 and failures[0].startswith("small.png: ")
    assert (out / "big" / MARKER).exists()


# -- a whole run -------------------------------------------------------------------------


def test_mixed_folder_mirrored_failures_reported_exit_1(mixed: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["batch", str(mixed), "-o", str(out), "-r", "-j", "1", "--save-npy"]
    )
    assert result.exit_code == 1, result.output
    failures = (out / "failures.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in failures] == ["empty.png", "fake.jpg", "sub/corrupt.png"]
    assert "file is empty" in failures[0] and "truncated" in failures[2]
    for name in ("empty.png", "fake.jpg", "sub/corrupt.png"):
        assert name in result.stdout
    done = {"a-jpg", "a", "b", "sub/c", "sub/deeper/d", "sub/e"}
    folders = {p.parent.relative_to(out).as_posix() for p in out.rglob(MARKER)}
    assert folders == {"a", "a-png", "b", "sub/c", "sub/deeper/d", "sub/e"} != done
    assert not (out / "empty").exists() and not (out / "sub" / "corrupt").exists()
    for folder in folders:  # the files cbr apply writes per image
        names = sorted(p.name for p in (out / folder).iterdir())
        assert names == sorted(
            [MARKER, "input.png"]
            + [f"layer1_{s}_grid.png" for s in ("conv", "bn", "act")]
            + [f"layer1_{s}_c{c:02d}.png" for s in ("conv", "bn", "act") for c in range(8)]
            + [f"layer1_{s}.npy" for s in ("conv", "bn", "act")]
            + ["report.html", "layer1_kernels.png", "layer1_hist.png"]  # the image's page
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 6, "failed": 3, "not run": 0}
    assert manifest["options"]["color"] == "rgb"  # sub/c.tif is gray: the folder is read as RGB
    assert "created" not in manifest
    with open(out / "stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 3 * 8 and rows[0]["image"] == "a.jpg"
    with open(out / "aggregate.csv", newline="") as f:
        aggregate = list(csv.DictReader(f))
    assert len(aggregate) == 3 * 8 and {r["images"] for r in aggregate} == {"6"}
    # Exact aggregate: the dataset mean/std of a stage equals numpy's over all arrays.
    conv = np.concatenate(
        [np.load(out / f / "layer1_conv.npy").reshape(8, -1) for f in sorted(folders)], axis=1
    ).astype(np.float64)
    for row in aggregate[:8]:
        c = int(row["channel"])
        # Per-image means come from float32 block sums corrected by the float32 sum of
        # deviations (ops.channel_mean_var): error ~ float32 eps x std, merged in float64.
        tolerance = 1e-6 * conv[c].std()
        assert float(row["mean"]) == pytest.approx(conv[c].mean(), rel=1e-7, abs=tolerance)
        assert float(row["std"]) == pytest.approx(conv[c].std(), rel=1e-5)
        assert int(row["count"]) == conv.shape[1]


def test_dataset_bn_equals_train_mode_over_the_folder_as_one_batch(tmp_path: Path):
    rng = np.random.default_rng(2)
    root = tmp_path / "in"
    paths = [str(save(root / f"sub{i % 2}" / f"im{i}.png", rng)) for i in range(5)]
    config = tmp_path / "p.yaml"
    config.write_text(
        "layers:\n"
        "  - conv: {out_channels: 4, padding: 1, seed: 7}\n    bn: batch\n"
        "  - conv: {out_channels: 3, stride: 2, seed: 8}\n    bn: {mode: batch, weight: 2.0}\n"
        "    activation: none\n"
    )
    out = tmp_path / "out"
    args = ["batch", str(root), "-o", str(out), "-r", "-c", str(config), "--save-npy", "-j", "1"]
    assert runner.invoke(app, [*args, *NO_PNGS]).exit_code == 0
    spec = build_spec(config, LayerFlags())
    whole = run_apply(
        sorted(paths),
        spec,
        ApplyOptions(out_dir=str(tmp_path / "ref"), save_npy=True, channel_pngs=False),
    )  # cbr apply on all images: one batch, PyTorch train-mode BN
    for record in whole.images:
        rel = Path(record.path).relative_to(root).with_suffix("")
        for stage in ("layer1_bn", "layer1_act", "layer2_bn"):
            want = np.load(Path(record.out_dir) / f"{stage}.npy")
            got = np.load(out / rel / f"{stage}.npy")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    stats = json.loads((out / "bn_stats.json").read_text())
    assert stats["images"] == 5 and list(stats["layers"]) == ["layer1", "layer2"]


def test_two_workers_write_the_same_bytes_as_one(mixed: Path, tmp_path: Path):
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        assert (
            runner.invoke(app, ["batch", str(mixed), "-o", str(out), "-r", "-j", jobs]).exit_code
            == 1
        )
    assert tree(tmp_path / "jobs1") == tree(tmp_path / "jobs2")


def test_fail_fast_stops_at_the_first_failure(tmp_path: Path):
    rng = np.random.default_rng(3)
    root = tmp_path / "in"
    (root).mkdir()
    (root / "a0.png").write_bytes(b"")
    for i in range(1, 4):
        save(root / f"a{i}.png", rng)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["batch", str(root), "-o", str(out), "--bn", "off", "--fail-fast", "-j", "1", *NO_PNGS]
    )
    assert result.exit_code == 1 and "--fail-fast" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 0, "failed": 1, "not run": 3}
    assert not list(out.rglob(MARKER))


def test_the_statistics_pass_is_named_for_what_it_computes(tmp_path: Path):
    rng = np.random.default_rng(8)
    for i in range(2):
        save(tmp_path / "in" / f"i{i}.png", rng, size=(8, 8))
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(out), *NO_PNGS])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "cbr: BN statistics layer1: 2 images"
    assert "cbr: process: 2 images" in lines
    assert "calibrate" not in result.stderr


def _engine_threads(_: object) -> int:
    from cbr_cli.core.threads import thread_count

    return thread_count()


def test_workers_split_the_cpus_between_them():
    from cbr_cli.batch.pool import WorkerPool, default_jobs

    # "The CPUs available" is this process's CPU affinity (not os.cpu_count()), computed
    # here independently of cbr's own definition.
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_jobs() == available
    with WorkerPool(2, None) as pool:
        seen = {threads for _, threads in pool.run(_engine_threads, range(4))}
    assert seen == {max(1, default_jobs() // 2)}


# -- resume ------------------------------------------------------------------------------


def test_rerun_skips_finished_images_without_rewriting_them(mixed: Path, tmp_path: Path):
    out = tmp_path / "out"
    args = ["batch", str(mixed), "-o", str(out), "-r", "-j", "1", "--bn", "off", *NO_PNGS]
    assert runner.invoke(app, args).exit_code == 1
    before = mtimes(out)
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "skipped" in again.stdout
    after = mtimes(out)
    image_files = [k for k in before if "/" in k]  # not the folder-level reports
    assert image_files and all(after[k] == before[k] for k in image_files)

    time.sleep(0.01)  # a new mtime for b.bmp: only b is redone
    save(mixed / "b.bmp", np.random.default_rng(99))
    assert runner.invoke(app, args).exit_code == 1
    later = mtimes(out)
    changed = {k.split("/")[0] for k in image_files if later[k] != before[k]}
    assert changed == {"b"}

    recolored = runner.invoke(app, [*args, "--colormap", "gray"])  # outputs differ: all redone
    assert recolored.exit_code == 1
    final = mtimes(out)
    assert all(final[k] != later[k] for k in image_files)

    forced = runner.invoke(app, [*args, "--colormap", "gray", "--force"])
    assert forced.exit_code == 1
    assert all(mtimes(out)[k] != final[k] for k in image_files)


def test_adding_an_image_changes_dataset_stats_so_all_are_redone(tmp_path: Path):
    rng = np.random.default_rng(4)
    root = tmp_path / "in"
    for i in range(3):
        save(root / f"i{i}.png", rng)
    out = tmp_path / "out"
    args = ["batch", str(root), "-o", str(out), "-j", "1", *NO_PNGS]
    assert runner.invoke(app, args).exit_code == 0
    before = mtimes(out)
    skipped = runner.invoke(app, args)
    assert skipped.exit_code == 0 and mtimes(out)["i0/input.png"] == before["i0/input.png"]
    save(root / "i3.png", rng)
    assert runner.invoke(app, args).exit_code == 0
    assert mtimes(out)["i0/input.png"] != before["i0/input.png"]
    assert json.loads((out / "bn_stats.json").read_text())["images"] == 4


def test_unfinished_folders_are_cleaned_and_redone(tmp_path: Path):
    rng = np.random.default_rng(6)
    root = tmp_path / "in"
    save(root / "x.png", rng)
    out = tmp_path / "out"
    args = ["batch", str(root), "-o", str(out), "-j", "1", *NO_PNGS]
    assert runner.invoke(app, args).exit_code == 0
    reference = tree(out)
    # What a SIGKILL mid-image leaves: no marker, a half-written temp file, a stale map.
    (out / "x" / MARKER).unlink()
    (out / "x" / ".layer1_act_grid.png.0123abcd.tmp").write_bytes(b"partial")
    (out / "x" / "layer1_bn_grid.png").write_bytes(b"stale")
    (out / ".manifest.json.89abcdef.tmp").write_bytes(b"partial")
    (out / "x" / "my-notes.txt").write_text("not cbr's: kept")
    assert runner.invoke(app, args).exit_code == 0
    assert tree(out) == {**reference, "x/my-notes.txt": b"not cbr's: kept"}


# -- killed and interrupted runs (real processes) ----------------------------------------


def _start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cbr_cli", "batch", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell job would be
    )


def _wait_for_markers(out: Path, count: int, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = len(list(out.rglob(MARKER))) if out.exists() else 0
        if found >= count or process.poll() is not None:
            return found
        time.sleep(0.005)
    raise AssertionError("no image finished within 60 s")


def _live_processes(group: int) -> list[int]:
    """Processes of a process group that are still running (not zombies)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


@pytest.fixture(scope="module")
def folder_and_reference(tmp_path_factory: pytest.TempPathFactory):
    """16 images (two folders, one broken) and an uninterrupted run's output."""
    base = tmp_path_factory.mktemp("killed")
    rng = np.random.default_rng(7)
    for i in range(IMAGES):
        save(base / "in" / f"part{i % 2}" / f"im{i:02d}.png", rng, size=(40, 48))
    (base / "in" / "part0" / "im99.png").write_bytes(b"broken")
    args = ["in", "-o", "reference", "-r", "-j", "2", "--save-npy", *NO_PNGS]
    assert _run_here(args, base).exit_code == 1
    return base, args, tree(base / "reference")


def _run_here(args: list[str], cwd: Path):
    """An uninterrupted run, in this process (the same code and bytes as a subprocess)."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(app, ["batch", *args])
    finally:
        os.chdir(previous)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigkill_then_rerun_gives_the_uninterrupted_output(folder_and_reference):
    base, args, reference = folder_and_reference
    out = "killed"
    run_args = [args[0], "-o", out, *args[3:]]
    process = _start(run_args, base)
    found = _wait_for_markers(base / out, 1, process)
    os.kill(process.pid, signal.SIGKILL)  # the main process only; its workers must follow
    process.communicate()
    assert found < IMAGES, "the run finished before it could be killed"
    deadline = time.monotonic() + 5
    while _live_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _live_processes(process.pid) == []  # no orphan still writing files

    rerun = _run_here(run_args, base)
    assert rerun.exit_code == 1
    assert "already done" in rerun.stderr
    assert tree(base / out) == reference


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_stops_promptly_exits_130_and_leaves_no_partial_files(folder_and_reference):
    base, args, reference = folder_and_reference
    run_args = [args[0], "-o", "interrupted", *args[3:]]
    process = _start(run_args, base)
    found = _wait_for_markers(base / "interrupted", 2, process)
    assert found < IMAGES, "the run finished before it could be interrupted"
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.monotonic() - started < 5
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    assert _live_processes(process.pid) == []
    out = base / "interrupted"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    image_folders = [p for p in out.rglob("im*") if p.is_dir()]
    assert image_folders, "no finished image was kept"
    for folder in image_folders:  # every image folder left is a finished one, intact
        rel = folder.relative_to(out).as_posix()
        assert (folder / MARKER).exists()
        assert tree(folder) == {
            k[len(rel) + 1 :]: v for k, v in reference.items() if k.startswith(rel + "/")
        }

    assert _run_here(run_args, base).exit_code == 1
    assert tree(out) == reference


# -- help and layering -------------------------------------------------------------------


def test_cli_batch_does_not_import_the_app_module():
    """cli.py imports cli_batch to register its commands; the reverse would be a cycle."""
    import ast

    import cbr_cli.cli.batch

    tree = ast.parse(Path(cbr_cli.cli.batch.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "cbr_cli.cli.app" not in imported
    assert "cbr_cli.cli.common" in imported


@pytest.mark.parametrize("command", ["batch", "calibrate"])
def test_commands_have_help(command: str):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout and len(result.stdout) > 500


def test_editing_the_weights_file_in_place_redoes_the_images(tmp_path: Path):
    """The resume fingerprint covers a ``weights:`` file's bytes, not just its path."""
    rng = np.random.default_rng(3)
    save(tmp_path / "in" / "a.png", rng)
    weights = tmp_path / "w.npz"
    np.savez(weights, **{"conv1.weight": rng.standard_normal((2, 3, 3, 3)).astype(np.float32)})
    config = tmp_path / "net.yaml"
    config.write_text("weights: w.npz\nlayers:\n  - conv: {from: conv1, padding: 1}\n")
    args = ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-c", str(config)]
    args += ["-j", "1", "--save-npy", *NO_PNGS]
    assert runner.invoke(app, args).exit_code == 0
    npy = tmp_path / "out" / "a" / "layer1_conv.npy"
    written = npy.stat().st_mtime_ns
    assert runner.invoke(app, args).exit_code == 0
    assert npy.stat().st_mtime_ns == written  # unchanged weights: the image is skipped
    before = np.load(npy)
    np.savez(weights, **{"conv1.weight": rng.standard_normal((2, 3, 3, 3)).astype(np.float32)})
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.stderr
    after = np.load(npy)
    assert not np.array_equal(before, after)  # redone with the new weights, not skipped
