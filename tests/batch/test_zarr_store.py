"""The Zarr feature store: layout, values, crash safety, resume, fingerprints, read-back."""

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

zarr = pytest.importorskip("zarr")

from cbr_cli.batch import zarr_store  # noqa: E402
from cbr_cli.batch.zarr_store import (  # noqa: E402
    StoreLayout,
    one_size,
    open_store,
    stage_shapes,
    tree_digest,
)
from cbr_cli.errors import CbrError  # noqa: E402
from cbr_cli.run.apply import run_apply  # noqa: E402
from cbr_cli.run.records import ApplyOptions  # noqa: E402
from cbr_cli.spec.flags import LayerFlags, build_spec  # noqa: E402
from tests.batch.conftest import make_folder  # noqa: E402
from tests.batch.storehelp import prepare, write_all  # noqa: E402
from tests.helpers import REPO  # noqa: E402

IMAGES = 8
STAGES = ["layer1/conv", "layer1/bn", "layer1/act", "layer2/conv", "layer2/bn"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_folder(tmp_path / "in", IMAGES)
    return tmp_path / "in"


def test_store_holds_the_folder_as_one_train_mode_batch(folder: Path, pipeline: Path, tmp_path):
    store = tmp_path / "features.zarr"
    assert write_all(folder, pipeline, store, jobs=2) == []
    root = zarr.open_group(store, mode="r")
    paths = sorted(folder.rglob("*.png"))
    assert list(root["image"][:]) == [p.relative_to(folder).as_posix() for p in paths]
    assert root["done"][:].tolist() == [1] * IMAGES
    # the reference: `cbr apply` on all images at once, PyTorch's train-mode BN over the batch
    whole = run_apply(
        [str(p) for p in paths],
        build_spec(pipeline, LayerFlags()),
        ApplyOptions(out_dir=str(tmp_path / "ref"), save_npy=True, channel_pngs=False),
    )
    for i, record in enumerate(whole.images):
        for name in STAGES:
            want = np.load(Path(record.out_dir) / f"{name.replace('/', '_')}.npy")
            got = root[name][i]
            assert got.dtype == np.float32 and got.shape == want.shape[-3:]
            np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-5, atol=2e-6)
    meta = root.attrs["cbr"]
    assert meta["arrays"] == STAGES and meta["dtype"] == "float32"
    assert meta["pipeline"]["layers"][0]["conv"]["out_channels"] == 4
    conv = root["layer1/conv"]
    assert conv.chunks == (1, *conv.shape[1:])  # one image, one chunk
    assert conv.metadata.dimension_names == ("image", "channel", "y", "x")


def test_one_and_two_workers_write_the_same_bytes(folder: Path, pipeline: Path, tmp_path):
    write_all(folder, pipeline, tmp_path / "one.zarr", jobs=1)
    write_all(folder, pipeline, tmp_path / "two.zarr", jobs=2)
    assert tree_digest(tmp_path / "one.zarr") == tree_digest(tmp_path / "two.zarr")


def test_float16_stores_the_float32_maps_rounded(folder: Path, pipeline: Path, tmp_path):
    write_all(folder, pipeline, tmp_path / "f32.zarr")
    write_all(folder, pipeline, tmp_path / "f16.zarr", dtype="float16")
    f32 = zarr.open_group(tmp_path / "f32.zarr", mode="r")
    f16 = zarr.open_group(tmp_path / "f16.zarr", mode="r")
    for name in STAGES:
        assert f16[name].dtype == np.float16
        np.testing.assert_array_equal(f16[name][:], f32[name][:].astype(np.float16))


def test_big_maps_get_a_few_chunks_per_image_never_shared(
    folder: Path, pipeline: Path, tmp_path, monkeypatch
):
    write_all(folder, pipeline, tmp_path / "whole.zarr")
    monkeypatch.setattr(zarr_store, "CHUNK_BYTES", 20 * 24 * 4)  # one 20x24 float32 channel
    write_all(folder, pipeline, tmp_path / "split.zarr")
    whole = zarr.open_group(tmp_path / "whole.zarr", mode="r")
    split = zarr.open_group(tmp_path / "split.zarr", mode="r")
    conv = split["layer1/conv"]
    assert conv.chunks == (1, 1, 20, 24)  # 4 chunks per image, each in one image only
    for name in STAGES:
        np.testing.assert_array_equal(split[name][:], whole[name][:])


def _done_count(store: Path) -> int:
    chunks = store / "done" / "c"
    return len(list(chunks.iterdir())) if chunks.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_write_then_resume_gives_the_uninterrupted_bytes(
    folder: Path, pipeline: Path, tmp_path
):
    reference = tmp_path / "reference.zarr"
    write_all(folder, pipeline, reference)
    store = tmp_path / "killed.zarr"
    prepare(folder, pipeline, store)  # created, nothing written
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.batch.storehelp", str(folder), str(pipeline), str(store)],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while _done_count(store) < 2 and time.monotonic() < deadline and writer.poll() is None:
        time.sleep(0.005)
    time.sleep(0.03)  # into the next image's chunks (each write takes 20 ms)
    os.kill(writer.pid, signal.SIGKILL)
    writer.communicate()
    assert writer.returncode == -signal.SIGKILL, "the writer finished before it was killed"
    done_before = zarr.open_group(store, mode="r")["done"][:]
    assert 2 <= done_before.sum() < IMAGES
    _, _, todo = prepare(folder, pipeline, store)  # unfinished images' chunks do not count
    assert [item[0] for item in todo] == [i for i in range(IMAGES) if not done_before[i]]
    write_all(folder, pipeline, store)
    assert tree_digest(store) == tree_digest(reference)


def test_chunks_without_the_done_flag_do_not_count(folder: Path, pipeline: Path, tmp_path):
    reference = tmp_path / "reference.zarr"
    write_all(folder, pipeline, reference)
    store = tmp_path / "cut.zarr"
    _, opened, todo = prepare(folder, pipeline, store)
    index, *_, writer, _ = todo[3]
    arrays = writer._open()
    arrays["layer1/conv"][index] = np.ones(arrays["layer1/conv"].shape[1:])  # killed here
    stray = store / "layer1" / "conv" / "c" / "3" / "0" / "0" / f"0.{'a' * 32}.partial"
    stray.write_bytes(b"half a chunk")  # what a kill inside zarr's atomic write leaves
    assert not opened.done()[index]
    write_all(folder, pipeline, store)
    assert not stray.exists()
    assert tree_digest(store) == tree_digest(reference)


def test_a_failed_image_leaves_no_chunk_and_no_flag(folder: Path, pipeline: Path, tmp_path):
    store = tmp_path / "f.zarr"
    _, opened, todo = prepare(folder, pipeline, store)
    index, _, _, writer, _ = todo[2]
    arrays = writer._open()
    arrays["layer1/conv"][index] = np.ones(arrays["layer1/conv"].shape[1:])
    writer.clear(index)
    assert not [p for p in store.glob(f"*/*/c/{index}/**/*") if p.is_file()]
    assert not opened.done()[index]
    wrong = r"^im: layer1/conv is 4x9x9, the store holds 4x20x24: .*--resize"
    with pytest.raises(CbrError, match=wrong):
        writer.write(index, {n: np.zeros((4, 9, 9), np.float32) for n in writer.arrays}, "im")


def test_a_changed_config_or_input_set_is_refused_and_rebuilt_with_force(
    folder: Path, pipeline: Path, tmp_path
):
    store = tmp_path / "s.zarr"
    write_all(folder, pipeline, store)
    before = tree_digest(store)
    pipeline.write_text(pipeline.read_text().replace("seed: 7", "seed: 9"))
    with pytest.raises(CbrError) as error:
        prepare(folder, pipeline, store)
    assert str(error.value) == (
        f"--store {store}: holds features of another config (pipeline, weights, resize, "
        "dtype or BN stats); use --force to rebuild it or give another path"
    )
    assert tree_digest(store) == before  # untouched
    make_folder(folder / "more", 1, seed=11)
    with pytest.raises(CbrError, match="holds another set of input images; use --force"):
        prepare(folder, pipeline, store)
    _, rebuilt, todo = prepare(folder, pipeline, store, rebuild=True)
    assert rebuilt.count == IMAGES + 1 and len(todo) == IMAGES + 1
    assert not rebuilt.done().any()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_path_that_is_not_a_cbr_store_is_refused_and_kept(folder, pipeline, tmp_path):
    store = tmp_path / "mine.zarr"
    store.mkdir()
    (store / "notes.txt").write_text("the user's")
    with pytest.raises(CbrError, match=r"mine\.zarr: exists and is not a cbr feature store"):
        prepare(folder, pipeline, store)
    assert (store / "notes.txt").read_text() == "the user's"


def test_an_interrupted_build_leaves_no_store_and_is_cleaned(folder, pipeline, tmp_path):
    leftover = tmp_path / ".s.zarr.cbr-tmp-new-0123abcd"
    (leftover / "layer1").mkdir(parents=True)  # killed while building: never renamed
    _, opened, todo = prepare(folder, pipeline, tmp_path / "s.zarr")
    assert not leftover.exists() and len(todo) == IMAGES and opened.count == IMAGES


def test_images_of_several_sizes_point_to_resize():
    with pytest.raises(CbrError, match=r"found 8x8 and 9x9\); use --resize HxW$"):
        one_size(frozenset({(9, 9), (8, 8)}))
    assert one_size({(8, 9)}) == (8, 9)


def test_layout_stages_follow_the_pipeline(pipeline: Path):
    spec = build_spec(pipeline, LayerFlags())
    assert stage_shapes(spec, (3, 20, 24)) == {
        "layer1/conv": (4, 20, 24),
        "layer1/bn": (4, 20, 24),
        "layer1/act": (4, 20, 24),
        "layer2/conv": (3, 9, 11),
        "layer2/bn": (3, 9, 11),
    }
    with pytest.raises(CbrError, match="--dtype: expected one of float32, float16"):
        open_store("x.zarr", StoreLayout(("a",), {"l/conv": (1, 2, 2)}, "int8"), ("c", "i"))


def test_read_back_with_zarr_xarray_and_dask(folder: Path, pipeline: Path, tmp_path):
    xr = pytest.importorskip("xarray")
    da = pytest.importorskip("dask.array")
    store = tmp_path / "features.zarr"
    write_all(folder, pipeline, store)
    z = zarr.open(store, mode="r")
    conv = z["layer1/conv"][:]
    ds = xr.open_zarr(store, group="layer1", consolidated=False)
    assert list(ds["conv"].dims) == ["image", "channel", "y", "x"]
    first = sorted(folder.rglob("*.png"))[0].relative_to(folder).as_posix()
    np.testing.assert_array_equal(ds["conv"].sel(image=first).values, conv[0])
    lazy = da.from_zarr(str(store), component="layer1/conv")
    assert lazy.chunks[0] == (1,) * IMAGES
    np.testing.assert_array_equal(lazy[3].compute(), conv[3])
    mean = lazy.mean(axis=(0, 2, 3)).compute()  # per-chunk sums: another summation order
    np.testing.assert_allclose(mean, conv.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-6)
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["cbr"]
    assert meta["config_key"] and meta["inputs_key"]
