"""One run per output folder (issue 15, item 8): the lock on OUT/.cbr-lock."""

from __future__ import annotations

import os
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
from cbr_cli.io.outlock import LOCK_FILE, out_lock

runner = CliRunner()

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def busy(out: Path, pid: int) -> str:
    return (
        f"error: --out {out}: another cbr run (pid {pid}) is writing here; "
        "wait for it or choose another --out\n"
    )


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def make_images(folder: Path, count: int, size: int = 48) -> None:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i:03d}.png")


# -- the lock itself ---------------------------------------------------------------------


def test_a_second_holder_is_refused_naming_the_first_and_the_file_goes_at_the_end(tmp_path):
    with out_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"{os.getpid()} ")
        with pytest.raises(CbrError) as refused, out_lock(tmp_path):
            pass  # flock: a second open file description conflicts, even in one process
        assert refused.value.exit_code == 2
        assert f"another cbr run (pid {os.getpid()}) is writing here" in refused.value.message
        assert (tmp_path / LOCK_FILE).exists()  # the refused attempt did not remove it
    assert list(tmp_path.iterdir()) == []  # a finished run leaves nothing behind
    with out_lock(tmp_path):  # and the folder can be locked again
        pass


def test_a_lock_file_left_by_a_killed_run_is_reused(tmp_path):
    (tmp_path / LOCK_FILE).write_text("999999 cbr batch in -o out\n")  # its holder is gone
    with out_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"{os.getpid()} ")


@pytest.mark.parametrize("planted", ["symlink", "fifo", "folder"])
def test_a_planted_lock_path_is_refused_not_followed(tmp_path, planted):
    target = tmp_path / "elsewhere.txt"
    target.write_text("the user's")
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_FILE
    if planted == "symlink":
        lock.symlink_to(target)
        expected = f"{LOCK_FILE} is a symbolic link; remove it"
    elif planted == "fifo":
        os.mkfifo(lock)
        expected = f"{lock} is not a regular file; remove it"
    else:
        lock.mkdir()
        expected = f"cannot open {lock}"
    with pytest.raises(CbrError) as refused, out_lock(out):
        pass
    assert refused.value.message.startswith(f"--out {out}: {expected}")
    assert target.read_text() == "the user's"


def test_apply_into_a_locked_out_is_refused_before_writing(tmp_path):
    make_images(tmp_path / "in", 1, size=16)
    out = tmp_path / "out"
    out.mkdir()
    with out_lock(out):
        result = runner.invoke(app, ["apply", str(tmp_path / "in" / "im000.png"), "-o", str(out)])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr == busy(out, os.getpid())
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert runner.invoke(app, ["apply", str(tmp_path / "in" / "im000.png"), "-o", str(out)])
    assert (out / "manifest.json").exists() and not (out / LOCK_FILE).exists()


# -- two real cbr batch processes --------------------------------------------------------


def _batch(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cbr_cli", "batch", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_until_locked(lock: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if lock.read_text().startswith(f"{process.pid} "):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError("the first run never held the lock")


@pytest.mark.slow
def test_a_second_batch_into_the_same_out_is_refused_and_the_first_is_intact(tmp_path, monkeypatch):
    make_images(tmp_path / "in", 160)  # about 3 s of work with -j 1 on one core
    args = ["in", "-j", "1", "--no-channel-pngs"]
    first = _batch([*args, "-o", "out"], tmp_path)
    _wait_until_locked(tmp_path / "out" / LOCK_FILE, first)
    second = _batch([*args, "-o", "out"], tmp_path)
    out2, err2 = second.communicate(timeout=60)
    assert first.poll() is None, "the first run finished before the second one started"
    assert second.returncode == 2
    assert out2 == b""
    assert err2.decode() == busy(Path("out"), first.pid)

    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1.decode()
    monkeypatch.chdir(tmp_path)  # the same run alone, in-process: the reference
    reference = runner.invoke(app, ["batch", *args, "-o", "ref"])
    assert reference.exit_code == 0
    done = files(tmp_path / "out")
    assert done == files(tmp_path / "ref")
    assert done["aggregate.csv"].count(b"\n") > 1
    assert LOCK_FILE not in done
