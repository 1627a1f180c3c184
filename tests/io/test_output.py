"""Atomic writes, PNG/npy/JSON round trips, and OS errors turned into CbrError."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbr_cli.errors import CbrError
from cbr_cli.io.writers import (
    atomic_write_bytes,
    atomic_writer,
    ensure_dir,
    write_json,
    write_npy,
    write_png,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- atomic writes -----------------------------------------------------------------------


def test_atomic_write_bytes_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    assert names(tmp_path) == ["a.bin"]


def test_new_file_gets_ordinary_permissions(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "atomic", b"x")
    (tmp_path / "plain").write_bytes(b"x")  # what open() gives under the current umask
    mode = stat.S_IMODE((tmp_path / "atomic").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_replacing_keeps_the_old_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_bytes() == b"new"


def test_text_mode_writes_utf8_with_newlines(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    with atomic_writer(target, "w") as f:
        f.write("σ=1\nline 2\n")
    assert target.read_bytes() == "σ=1\nline 2\n".encode()


def test_failure_inside_the_block_leaves_no_trace(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError, match="encoder crashed"), atomic_writer(target) as f:
        f.write(b"partial data")
        raise RuntimeError("encoder crashed")
    assert names(tmp_path) == []


def test_failure_leaves_the_existing_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old contents")
    with pytest.raises(KeyboardInterrupt), atomic_writer(target) as f:
        f.write(b"new")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old contents"
    assert names(tmp_path) == ["out.json"]


def test_temp_file_is_hidden_next_to_the_target(tmp_path: Path) -> None:
    target = tmp_path / "map.npy"
    with atomic_writer(target) as f:
        f.write(b"data")
        (temp,) = names(tmp_path)
        assert temp.startswith(".map.npy.") and temp.endswith(".tmp")
        assert not target.exists()  # nothing visible under the real name yet
    assert names(tmp_path) == ["map.npy"]


def test_disk_full_during_write_is_a_cbr_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(CbrError) as caught, atomic_writer(target) as f:
        f.write(b"new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(target) in caught.value.message
    assert "No space left on device" in caught.value.message
    assert caught.value.exit_code == 1
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["out.bin"]


def test_disk_full_at_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "out.json"
    with pytest.raises(CbrError, match=r"cannot write .*out\.json: No space left on device"):
        write_json(target, {"a": 1})
    assert names(tmp_path) == []


def test_failed_replace_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(CbrError, match=r"cannot write .*x\.bin: Permission denied"):
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert names(tmp_path) == []


def test_missing_parent_is_a_cbr_error(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "a.png"
    with pytest.raises(CbrError, match="No such file or directory") as caught:
        atomic_write_bytes(target, b"x")
    assert str(target) in caught.value.message


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("I am a file")
    target = tmp_path / "file" / "a.png"
    with pytest.raises(CbrError, match="Not a directory") as caught:
        write_png(target, np.zeros((2, 2, 3), np.uint8))
    assert str(target) in caught.value.message


def test_target_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(CbrError, match=r"cannot write .*out: Is a directory"):
        atomic_write_bytes(tmp_path / "out", b"x")
    assert names(tmp_path) == ["out"]


def test_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", deny)
    target = tmp_path / "a.npy"
    with pytest.raises(CbrError, match="Permission denied") as caught:
        write_npy(target, np.zeros(3))
    assert str(target) in caught.value.message


@pytest.mark.skipif(IS_ROOT or os.name != "posix", reason="root ignores permission bits")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(CbrError, match=r"locked.*a\.png: Permission denied"):
            write_png(locked / "a.png", np.zeros((2, 2, 3), np.uint8))
    finally:
        locked.chmod(0o700)


def test_bad_mode_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be"), atomic_writer(tmp_path / "a", "a"):
        pass


# -- ensure_dir --------------------------------------------------------------------------


def test_ensure_dir(tmp_path: Path) -> None:
    made = ensure_dir(tmp_path / "a" / "b")
    assert made.is_dir() and made == tmp_path / "a" / "b"
    assert ensure_dir(str(made)) == made  # existing: fine


def test_ensure_dir_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(CbrError, match=r"cannot create directory .*f: a file is in the way"):
        ensure_dir(tmp_path / "f")
    with pytest.raises(CbrError, match=r"cannot create directory .*f/sub: Not a directory"):
        ensure_dir(tmp_path / "f" / "sub")


# -- PNG ---------------------------------------------------------------------------------


def test_png_round_trip_pixels_and_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    meta = {"vmin": -0.1 + 0.2, "vmax": 3, "colormap": "rdbu", "stage": "bn", "channel": "2"}
    target = tmp_path / "map.png"
    write_png(target, image, meta)
    with Image.open(target) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), image)
        text = dict(im.text)
    assert text == {k: str(v) for k, v in meta.items()}
    assert float(text["vmin"]) == -0.1 + 0.2  # floats round-trip exactly


def test_png_greyscale_and_unicode_text(tmp_path: Path) -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    target = tmp_path / "g.png"
    write_png(target, image, {"kernel": "σ=1.5 – gaussian"})
    with Image.open(target) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), image)
        assert im.text == {"kernel": "σ=1.5 – gaussian"}


def test_png_without_text(tmp_path: Path) -> None:
    write_png(tmp_path / "p.png", np.zeros((1, 1, 3), np.uint8))
    with Image.open(tmp_path / "p.png") as im:
        assert im.text == {}


@pytest.mark.parametrize(
    "image",
    [np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 4), np.uint8), np.zeros(4, np.uint8)],
)
def test_png_rejects_non_rgb_uint8(tmp_path: Path, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "p.png", image)
    assert names(tmp_path) == []


@pytest.mark.parametrize("key", ["", "k" * 80, "tab\tkey", "σ"])
def test_png_rejects_bad_text_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="PNG text keys"):
        write_png(tmp_path / "p.png", np.zeros((1, 1, 3), np.uint8), {key: "v"})


# -- npy and JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_npy_round_trip(tmp_path: Path, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    write_npy(tmp_path / "a.npy", array)
    back = np.load(tmp_path / "a.npy", allow_pickle=False)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_npy_refuses_objects(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pickle"):
        write_npy(tmp_path / "o.npy", np.array([{}, 1], dtype=object))
    assert names(tmp_path) == []


def test_json_round_trip_and_format(tmp_path: Path) -> None:
    obj = {"b": [1, 2.5, "x"], "a": {"z": None, "y": True}}
    target = tmp_path / "s.json"
    write_json(target, obj)
    text = target.read_text(encoding="utf-8")
    assert json.loads(text) == obj
    assert text == json.dumps(obj, sort_keys=True, indent=2) + "\n"


def test_json_nan_and_inf_become_null_and_numpy_is_plain(tmp_path: Path) -> None:
    obj = {
        "mean": np.float32(1.5),
        "count": np.int64(3),
        "flags": np.array([True, False]),
        "min": math.nan,
        "max": np.float64(np.inf),
        "hist": np.array([[1.0, np.nan], [-np.inf, 2.0]]),
        "shape": (1, 2),
    }
    write_json(tmp_path / "s.json", obj)
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "count": 3,
        "flags": [True, False],
        "hist": [[1.0, None], [None, 2.0]],
        "max": None,
        "mean": 1.5,
        "min": None,
        "shape": [1, 2],
    }


@pytest.mark.parametrize(("obj", "message"), [({1: "a"}, "keys must be str"), ({"a": {1}}, "set")])
def test_json_rejects_what_it_cannot_represent(tmp_path: Path, obj: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        write_json(tmp_path / "s.json", obj)
    assert names(tmp_path) == []
