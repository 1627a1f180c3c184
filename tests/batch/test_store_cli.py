"""``cbr batch --store``: the Zarr feature store through the CLI, end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from cbr_cli.batch.resume import MARKER  # noqa: E402
from cbr_cli.batch.zarr_store import tree_digest  # noqa: E402
from tests.batch.conftest import make_folder, save_image, tree  # noqa: E402
from tests.helpers import REPO, cbr, ok, one_line_error  # noqa: E402

IMAGES = 8
STAGES = ["layer1/conv", "layer1/bn", "layer1/act", "layer2/conv", "layer2/bn"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_folder(tmp_path / "in", IMAGES)
    return tmp_path / "in"


def _batch(folder: Path, pipeline: Path, out: Path, *extra: object):
    return cbr("batch", folder, "-o", out, "-r", "-c", pipeline, "--store", "features.zarr", *extra)


def _rels(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.png"))]


def test_store_holds_what_the_folder_npy_files_hold(folder: Path, pipeline: Path, tmp_path):
    out = tmp_path / "out"
    result = _batch(folder, pipeline, out, "--save-npy", "-j", "2")
    ok(result)
    store = out / "features.zarr"  # a relative --store is under OUT
    assert f"store {store}" in result.stdout
    root = zarr.open_group(store, mode="r")
    assert list(root["image"][:]) == _rels(folder)
    assert root["done"][:].tolist() == [1] * IMAGES
    assert root.attrs["cbr"]["arrays"] == STAGES
    for i, rel in enumerate(_rels(folder)):
        image_dir = out / rel.removesuffix(".png")
        for name in STAGES:
            want = np.load(image_dir / f"{name.replace('/', '_')}.npy")
            got = root[name][i]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)  # the same maps, not just close
    assert root["layer1/conv"].chunks == (1, 4, 20, 24)  # one image, one chunk


def test_no_pngs_store_alone_writes_the_same_store(folder: Path, pipeline: Path, tmp_path):
    ok(_batch(folder, pipeline, tmp_path / "with"))
    result = _batch(folder, pipeline, tmp_path / "alone", "--no-pngs")
    ok(result)
    assert result.stdout.count("processed") == 1
    files = [p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*")]
    assert not [f for f in files if f.suffix in (".png", ".npy")]
    per_image = [f for f in files if f.name == MARKER]
    assert len(per_image) == IMAGES  # the statistics records (stats.csv is built from them)
    assert (tmp_path / "alone" / "stats.csv").stat().st_size > 0
    assert tree_digest(tmp_path / "with" / "features.zarr") == tree_digest(
        tmp_path / "alone" / "features.zarr"
    )


@pytest.mark.slow
def test_one_two_workers_and_dask_write_the_same_store(folder: Path, pipeline: Path, tmp_path):
    pytest.importorskip("distributed")
    ok(_batch(folder, pipeline, tmp_path / "one", "-j", "1", "--no-pngs"))
    ok(_batch(folder, pipeline, tmp_path / "two", "-j", "2", "--no-pngs"))
    ok(_batch(folder, pipeline, tmp_path / "dask", "--dask", "local:2", "--no-pngs"))
    one = tree_digest(tmp_path / "one" / "features.zarr")
    assert one == tree_digest(tmp_path / "two" / "features.zarr")
    assert one == tree_digest(tmp_path / "dask" / "features.zarr")


def test_an_image_counts_only_with_its_marker_and_its_store_flag(
    folder: Path, pipeline: Path, tmp_path
):
    out = tmp_path / "out"
    ok(_batch(folder, pipeline, out))
    reference = tree_digest(out / "features.zarr")
    again = _batch(folder, pipeline, out)
    ok(again)
    assert f"({IMAGES} already done)" in again.stderr
    # flags gone from the store (the folders' markers still there): redone
    done = zarr.open_group(out / "features.zarr", mode="r+")["done"]
    done[2] = 0
    done[5] = 0
    redo = _batch(folder, pipeline, out)
    ok(redo)
    assert f"({IMAGES - 2} already done)" in redo.stderr
    assert tree_digest(out / "features.zarr") == reference
    # a folder's marker gone (the store flag still set): redone too
    (out / _rels(folder)[3].removesuffix(".png") / MARKER).unlink()
    redo = _batch(folder, pipeline, out)
    ok(redo)
    assert f"({IMAGES - 1} already done)" in redo.stderr
    assert tree_digest(out / "features.zarr") == reference


def test_a_changed_config_is_refused_and_force_rebuilds(folder: Path, pipeline: Path, tmp_path):
    out = tmp_path / "out"
    ok(_batch(folder, pipeline, out))
    before = tree(out)
    pipeline.write_text(pipeline.read_text().replace("seed: 7", "seed: 9"))
    refused = _batch(folder, pipeline, out)
    one_line_error(
        refused,
        "holds features of another config (pipeline, weights, resize, dtype or BN stats); "
        "use --force to rebuild it or give another path",
        stdout_empty=False,
    )
    assert tree(out) == before  # nothing touched, nothing computed
    ok(_batch(folder, pipeline, out, "--force"))
    changed = zarr.open_group(out / "features.zarr", mode="r")
    assert changed["done"][:].all()
    make_folder(folder / "more", 1, seed=11)
    one_line_error(
        _batch(folder, pipeline, out), "holds another set of input images", stdout_empty=False
    )


def test_several_output_sizes_point_to_resize(folder: Path, pipeline: Path, tmp_path):
    save_image(folder / "small.png", np.random.default_rng(1), size=(16, 16))
    result = _batch(folder, pipeline, tmp_path / "out")
    one_line_error(result, "every image must reach the first layer at one size", "--resize HxW")
    assert not (tmp_path / "out").exists()
    ok(_batch(folder, pipeline, tmp_path / "out", "--resize", "20x24"))


def test_dtype_float16_store_is_the_float32_store_rounded(folder: Path, pipeline: Path, tmp_path):
    ok(_batch(folder, pipeline, tmp_path / "f32", "--no-pngs"))
    ok(_batch(folder, pipeline, tmp_path / "f16", "--no-pngs", "--dtype", "float16"))
    f32 = zarr.open_group(tmp_path / "f32" / "features.zarr", mode="r")
    f16 = zarr.open_group(tmp_path / "f16" / "features.zarr", mode="r")
    for name in STAGES:
        assert f16[name].dtype == np.float16
        np.testing.assert_array_equal(f16[name][:], f32[name][:].astype(np.float16))


def test_store_inside_in_dir_is_refused(folder: Path, pipeline: Path, tmp_path):
    result = cbr(
        "batch", folder, "-r", "-o", tmp_path / "out", "-c", pipeline, "--store", folder / "f.zarr"
    )
    one_line_error(result, "must not be inside IN_DIR")
    assert not (folder / "f.zarr").exists()


def test_store_against_torch_train_mode_over_the_folder(tmp_path: Path):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from PIL import Image

    folder = tmp_path / "in"
    paths = make_folder(folder, 6)
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    np.save(tmp_path / "w1.npy", w1)
    np.save(tmp_path / "w2.npy", w2)
    config = tmp_path / "net.yaml"
    config.write_text(
        "layers:\n"
        "  - conv: {weight: w1.npy, padding: 1}\n    bn: batch\n"
        "  - conv: {weight: w2.npy, stride: 2}\n    bn: {mode: batch, weight: 2.0}\n"
        "    activation: none\n"
    )
    ok(cbr("batch", folder, "-o", tmp_path / "out", "-r", "-c", config, "--store", "f.zarr",
           "--no-pngs"))  # fmt: skip
    x = torch.from_numpy(
        np.stack([np.asarray(Image.open(p), np.float32).transpose(2, 0, 1) / 255 for p in paths])
    )
    conv1 = F.conv2d(x, torch.from_numpy(w1), padding=1)
    bn1 = F.batch_norm(conv1, None, None, training=True, eps=1e-5)
    act1 = F.relu(bn1)
    conv2 = F.conv2d(act1, torch.from_numpy(w2), stride=2)
    bn2 = F.batch_norm(conv2, None, None, weight=torch.full((3,), 2.0), training=True, eps=1e-5)
    want = {"layer1/conv": conv1, "layer1/bn": bn1, "layer1/act": act1,
            "layer2/conv": conv2, "layer2/bn": bn2}  # fmt: skip
    root = zarr.open_group(tmp_path / "out" / "f.zarr", mode="r")
    for name, expected in want.items():
        got = root[name][:]
        expected = expected.numpy()
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale, err_msg=name)


def _done_count(store: Path) -> int:
    chunks = store / "done" / "c"
    return len(list(chunks.iterdir())) if chunks.exists() else 0


@pytest.mark.slow
def test_sigkill_of_batch_store_then_rerun_gives_the_uninterrupted_store(
    pipeline: Path, tmp_path: Path
):
    count = 24
    make_folder(tmp_path / "in", count, size=(64, 80))
    args = ["in", "-r", "-c", str(pipeline), "--store", "features.zarr", "-j", "1"]
    reference = tmp_path / "reference"
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        ok(cbr("batch", *args, "-o", "reference"))
    finally:
        os.chdir(previous)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cbr_cli", "batch", *args, "-o", "killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    store = tmp_path / "killed" / "features.zarr"
    deadline = time.monotonic() + 60
    while _done_count(store) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed"
    flags = zarr.open_group(store, mode="r")["done"][:]
    assert 3 <= flags.sum() < count
    os.chdir(tmp_path)
    try:
        rerun = cbr("batch", *args, "-o", "killed")
    finally:
        os.chdir(previous)
    ok(rerun)
    assert re.search(r"\((\d+) already done\)", rerun.stderr)
    assert tree_digest(store) == tree_digest(reference / "features.zarr")
    assert tree(tmp_path / "killed") == tree(reference)  # the folder outputs too


def test_readme_snippets_read_the_store_back(folder: Path, pipeline: Path, tmp_path):
    pytest.importorskip("xarray")
    pytest.importorskip("dask.array")
    out = tmp_path / "OUT"
    ok(_batch(folder, pipeline, out, "--no-pngs"))
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### The feature store") :]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)[:3]
    assert len(blocks) == 3
    found: dict[str, object] = {}
    previous = os.getcwd()
    os.chdir(tmp_path)  # the snippets name OUT/features.zarr
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), found)
    finally:
        os.chdir(previous)
    root = zarr.open_group(out / "features.zarr", mode="r")
    conv = root["layer1/conv"][:]
    np.testing.assert_array_equal(found["conv"], conv)
    assert list(found["names"]) == _rels(folder)
    np.testing.assert_array_equal(found["first"], conv[0])
    np.testing.assert_allclose(
        found["mean"], conv.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-6
    )


@pytest.mark.parametrize("bn", ["batch", "off"])  # fails in the BN pass, or in its own task
def test_a_broken_image_has_no_flag_and_the_others_are_stored(folder: Path, tmp_path, bn):
    (folder / "p0" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = cbr(
        "batch", folder, "-r", "-o", out, "--out-channels", "2", "--bn", bn, "--store", "s.zarr",
    )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    assert "broken.png" in result.stdout
    root = zarr.open_group(out / "s.zarr", mode="r")
    names = list(root["image"][:])
    assert names == sorted([*_rels(folder)])  # the broken file is one of the N images
    done = root["done"][:]
    broken = names.index("p0/broken.png")
    assert done[broken] == 0 and done.sum() == IMAGES
    assert np.isnan(root["layer1/conv"][broken]).all()  # the fill value: no chunk
    assert not np.isnan(root["layer1/conv"][[i for i in range(IMAGES + 1) if i != broken]]).any()
