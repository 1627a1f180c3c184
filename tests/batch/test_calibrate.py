"""Dataset-wide BatchNorm statistics (streaming, Chan merging) and `cbr calibrate`.

References are independent: numpy's mean/var over the stacked folder, and PyTorch's
training-mode update written out with :func:`cbr_cli.core.ops.batch_norm` (itself checked
against torch in test_golden.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.batch.calibrate import calibrated_plain, write_pipeline_yaml
from cbr_cli.batch.dataset_bn import dataset_bn_stats, momentum_bn_stats
from cbr_cli.cli.app import app
from cbr_cli.core import ops
from cbr_cli.core.moments import Moments
from cbr_cli.errors import CbrError
from cbr_cli.run.pipeline import build_layers
from cbr_cli.spec.flags import LayerFlags, build_spec
from tests.helpers import one_line_error

runner = CliRunner()

TWO_BN = """
layers:
  - name: first
    conv: {out_channels: 4, kernel_size: 3, padding: 1, seed: 3}
    bn: {mode: batch, weight: [1.0, 2.0, 0.5, 1.5], bias: 0.25}
    activation: relu
  - name: second
    conv: {out_channels: 3, kernel_size: 3, stride: 2, seed: 4}
    bn: batch
    activation: leaky_relu
"""


def make_folder(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[str]:
    """RGB PNGs with different content (and brightness), named in sorted order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        pixels = rng.random((h, w, 3)) * (0.3 + 0.7 * i / len(sizes))
        path = root / f"img{i:02d}.png"
        Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def load_stack(paths: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(p), dtype=np.float32).transpose(2, 0, 1) / 255 for p in paths]


@pytest.fixture
def two_bn(tmp_path: Path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(TWO_BN)
    return config, build_spec(config, LayerFlags())


# -- Chan merging ------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1, 1, 1], [1, 500], [7, 3, 100, 2], [1000]])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_merged_moments_equal_numpy_over_the_concatenation(sizes, offset):
    rng = np.random.default_rng(len(sizes))
    chunks = [offset + rng.standard_normal((1, 3, n, 1)) for n in sizes]
    total = None
    for chunk in chunks:
        m = Moments.of(chunk)
        total = m if total is None else total.merge(m)
    every = np.concatenate(chunks, axis=2)
    assert total.count == sum(sizes)
    # float64 rounding is relative to the values' magnitude, not to a mean near 0
    scale = np.abs(every).max()
    np.testing.assert_allclose(
        total.mean, every.mean(axis=(0, 2, 3)), rtol=1e-14, atol=1e-14 * scale
    )
    # Values ~N(offset, 1): a naive E[x^2] - E[x]^2 loses all digits at offset 1e6.
    np.testing.assert_allclose(total.var, every.var(axis=(0, 2, 3)), rtol=1e-9)
    if sum(sizes) > 1:
        np.testing.assert_allclose(total.unbiased_var, every.var(axis=(0, 2, 3), ddof=1), rtol=1e-9)


# -- dataset statistics ------------------------------------------------------------------


def reference_stats(spec, images: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train-mode BN over the folder as one batch, with numpy's mean/var (float64)."""
    layers = build_layers(spec, 3)
    xs = list(images)
    stats = {}
    for layer in layers:
        c = layer.spec.conv
        ys = [
            ops.conv2d(x[None], layer.weight, layer.bias, c.stride, c.padding)[0].astype(np.float64)
            for x in xs
        ]
        values = np.concatenate([y.reshape(y.shape[0], -1) for y in ys], axis=1)
        mean, var = values.mean(axis=1), values.var(axis=1)
        stats[layer.spec.name] = (mean, var)
        gamma = 1.0 if layer.bn_weight is None else layer.bn_weight.astype(np.float64)
        beta = 0.0 if layer.bn_bias is None else layer.bn_bias.astype(np.float64)
        scale = gamma / np.sqrt(var + layer.spec.bn.eps)
        zs = [
            (y - mean[:, None, None]) * scale[:, None, None] + np.reshape(beta, (-1, 1, 1))
            for y in ys
        ]
        if layer.spec.activation == "relu":
            zs = [np.maximum(z, 0) for z in zs]
        else:
            zs = [np.where(z < 0, 0.01 * z, z) for z in zs]
        xs = [z.astype(np.float32) for z in zs]
    return stats


@pytest.mark.parametrize(
    "sizes", [[(20, 24)] * 5, [(20, 24), (17, 31), (26, 22)]], ids=["same-size", "mixed-sizes"]
)
def test_dataset_stats_equal_numpy_over_the_stacked_folder(tmp_path, two_bn, sizes):
    _, spec = two_bn
    paths = make_folder(tmp_path / "in", sizes)
    got = dataset_bn_stats(paths, spec)
    want = reference_stats(spec, load_stack(paths))
    assert list(got.layers) == ["first", "second"]
    assert got.images == len(paths) and not got.failures
    for name, (mean, var) in want.items():
        # float32 convolutions of one image vs the stacked batch round differently (~1e-7)
        np.testing.assert_allclose(got.layers[name].mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.layers[name].var, var, rtol=1e-5)
    first = got.layers["first"]
    assert first.count == sum(h * w for h, w in sizes)


def test_same_size_folder_equals_one_batch_through_run_layers(tmp_path, two_bn):
    """For one size, the statistics are those of cbr apply's (PyTorch train-mode) batch."""
    from cbr_cli.run.pipeline import normalize_input, run_layers

    _, spec = two_bn
    paths = make_folder(tmp_path / "in", [(18, 18)] * 4)
    batch = normalize_input(np.stack(load_stack(paths)), spec.input)
    results = run_layers(build_layers(spec, 3), batch)
    got = dataset_bn_stats(paths, spec).batch_stats()
    for r in results:
        if r.stage == "bn":
            np.testing.assert_allclose(got[r.layer][0], r.bn_mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[r.layer][1], r.bn_var, rtol=1e-5)


def test_two_workers_give_the_same_bits(tmp_path, two_bn):
    _, spec = two_bn
    paths = make_folder(tmp_path / "in", [(20, 24)] * 6)
    one = dataset_bn_stats(paths, spec, jobs=1)
    two = dataset_bn_stats(paths, spec, jobs=2)
    for name in one.layers:
        assert one.layers[name].count == two.layers[name].count
        np.testing.assert_array_equal(one.layers[name].mean, two.layers[name].mean)
        np.testing.assert_array_equal(one.layers[name].m2, two.layers[name].m2)


def test_unreadable_images_are_left_out_and_reported(tmp_path, two_bn):
    _, spec = two_bn
    paths = make_folder(tmp_path / "in", [(20, 24)] * 3)
    broken = tmp_path / "in" / "img01b.png"
    broken.write_bytes(Path(paths[0]).read_bytes()[:100])
    with_broken = sorted([*paths, str(broken)])
    got = dataset_bn_stats(with_broken, spec, names=[Path(p).name for p in with_broken])
    clean = dataset_bn_stats(paths, spec)
    assert [name for name, _ in got.failures] == ["img01b.png"]
    assert "img01b.png" in got.failures[0][1] and got.images == 3
    for name in clean.layers:
        np.testing.assert_array_equal(got.layers[name].mean, clean.layers[name].mean)


def test_a_pipeline_without_batch_bn_has_nothing_to_calibrate(tmp_path):
    spec = build_spec(None, LayerFlags(bn="running"))
    with pytest.raises(CbrError, match="nothing to calibrate"):
        dataset_bn_stats(make_folder(tmp_path, [(8, 8)]), spec)


# -- momentum ----------------------------------------------------------------------------


def test_momentum_mimics_train_mode_with_batch_size_one(tmp_path, two_bn):
    _, spec = two_bn
    paths = make_folder(tmp_path / "in", [(20, 24), (17, 19), (20, 24)])
    got = momentum_bn_stats(paths, spec, 0.3)
    layers = build_layers(spec, 3)
    buffers = {
        layer.spec.name: (np.zeros(layer.weight.shape[0]), np.ones(layer.weight.shape[0]))
        for layer in layers
    }
    for x in load_stack(paths):  # DataLoader(batch_size=1) in model.train()
        x = x[None]
        for layer in layers:
            c = layer.spec.conv
            y = ops.conv2d(x, layer.weight, layer.bias, c.stride, c.padding)
            rm, rv = buffers[layer.spec.name]
            y = ops.batch_norm(
                y, rm, rv, layer.bn_weight, layer.bn_bias, training=True, momentum=0.3
            )
            x = ops.relu(y) if layer.spec.activation == "relu" else ops.leaky_relu(y)
    for name, (rm, rv) in buffers.items():
        np.testing.assert_allclose(got.running[name][0], rm, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got.running[name][1], rv, rtol=1e-6)


# -- the calibrated file -----------------------------------------------------------------


def test_calibrated_file_loads_back_in_running_mode(tmp_path, two_bn):
    _, spec = two_bn
    paths = make_folder(tmp_path / "in", [(20, 24)] * 3)
    stats = dataset_bn_stats(paths, spec)
    out = tmp_path / "calibrated.yaml"
    write_pipeline_yaml(out, calibrated_plain(spec, stats.running()), "a header\nline two")
    text = out.read_text()
    assert text.startswith("# a header\n# line two\n")
    loaded = build_spec(out, LayerFlags())
    for layer in loaded.layers:
        m = stats.layers[layer.name]
        assert layer.bn.mode == "running"
        assert layer.bn.running_mean.value == tuple(m.mean)  # YAML floats round-trip exactly
        assert layer.bn.running_var.value == tuple(m.m2 / (m.count - 1))
    assert loaded.layers[0].bn.weight.value == (1.0, 2.0, 0.5, 1.5)  # the rest is kept
    assert loaded.layers[0].bn.bias.value == 0.25 and loaded.layers[0].conv.seed == 3


def test_cli_calibrate_then_apply_reproduces_batch_mode(tmp_path):
    """One BN layer: eval with the calibrated file = train mode over the folder, up to
    PyTorch's n/(n-1) on the variance (checked exactly, not with a loose tolerance)."""
    config = tmp_path / "one.yaml"
    config.write_text(
        "layers:\n  - conv: {out_channels: 5, kernel_size: 3, seed: 1}\n    bn: batch\n"
        "    activation: none\n"
    )
    make_folder(tmp_path / "in", [(20, 24)] * 4)
    cal = tmp_path / "cal.yaml"
    result = runner.invoke(
        app, ["calibrate", str(tmp_path / "in"), "-c", str(config), "-o", str(cal)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and cal.exists()
    batch = runner.invoke(
        app,
        ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "B"), "-c", str(config),
         "--save-npy", "--no-channel-pngs", "-j", "1"],
    )  # fmt: skip
    assert batch.exit_code == 0, batch.output
    applied = runner.invoke(
        app,
        ["apply", str(tmp_path / "in" / "img02.png"), "-c", str(cal), "-o", str(tmp_path / "A"),
         "--save-npy", "--no-channel-pngs"],
    )  # fmt: skip
    assert applied.exit_code == 0, applied.output

    import json

    info = json.loads((tmp_path / "B" / "bn_stats.json").read_text())["layers"]["layer1"]
    n, var = info["count"], np.array(info["var"])
    running_var = np.array(yaml.safe_load(cal.read_text())["layers"][0]["bn"]["running_var"])
    np.testing.assert_allclose(running_var, var * n / (n - 1), rtol=1e-15)
    want = np.load(tmp_path / "B" / "img02" / "layer1_bn.npy")
    got = np.load(tmp_path / "A" / "img02" / "layer1_bn.npy")
    eps = 1e-5
    bessel = np.sqrt((var + eps) / (var * n / (n - 1) + eps)).astype(np.float32)
    np.testing.assert_allclose(got, want * bessel[:, None, None], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(got, want)  # the n/(n-1) is really there


def test_cli_calibrate_with_momentum_writes_exponential_stats(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(16, 16)] * 3)
    cal = tmp_path / "cal.yaml"
    result = runner.invoke(
        app,
        ["calibrate", str(tmp_path / "in"), "-c", str(config), "-o", str(cal), "--momentum", "0.5"],
    )
    assert result.exit_code == 0, result.output
    text = cal.read_text()
    assert "momentum 0.5" in text.splitlines()[2]
    assert all(layer["bn"]["mode"] == "running" for layer in yaml.safe_load(text)["layers"])


def test_cli_calibrate_reports_broken_images_and_exits_1(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(16, 16)] * 2)
    (tmp_path / "in" / "zz.png").write_bytes(b"")
    cal = tmp_path / "cal.yaml"
    result = runner.invoke(
        app, ["calibrate", str(tmp_path / "in"), "-c", str(config), "-o", str(cal)]
    )
    assert result.exit_code == 1
    assert "zz.png" in result.stdout and "file is empty" in result.stdout
    assert "from 2 images" in cal.read_text() and "(1 failed)" in cal.read_text()


def test_cli_calibrate_without_batch_bn_is_a_usage_error(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("layers:\n  - conv: {out_channels: 2}\n    bn: running\n")
    make_folder(tmp_path / "in", [(8, 8)])
    result = runner.invoke(
        app, ["calibrate", str(tmp_path / "in"), "-c", str(config), "-o", str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "nothing to calibrate" in result.stderr
    assert not (tmp_path / "c.yaml").exists()


# -- checked before any work -------------------------------------------------------------


def calibrate(tmp_path: Path, config: Path, out: Path | str, *extra: str):
    return runner.invoke(
        app, ["calibrate", str(tmp_path / "in"), "-c", str(config), "-o", str(out), *extra]
    )


def assert_one_line_error(result, message: str, code: int = 2) -> None:
    """The shared one-line check, and the line is exactly ``error: message``."""
    assert one_line_error(result, exit_code=code) == f"error: {message}"


def test_an_output_folder_that_does_not_exist_is_refused_before_any_work(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)] * 2)
    out = tmp_path / "missing" / "cal.yaml"
    result = calibrate(tmp_path, config, out)
    assert_one_line_error(result, f"--out {out}: the folder {out.parent} does not exist")


def test_an_output_path_that_is_a_folder_is_refused(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)] * 2)
    result = calibrate(tmp_path, config, tmp_path)
    assert_one_line_error(result, f"--out {tmp_path}: is a folder; give the YAML file to write")


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path, two_bn, monkeypatch):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)] * 2)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write anywhere: deny it as the mode would deny others
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode, **kw: path != str(locked) and real_access(path, mode)
        )
    result = calibrate(tmp_path, config, locked / "cal.yaml")
    assert_one_line_error(
        result,
        f"--out {locked / 'cal.yaml'}: cannot write in the folder {locked} (permission denied)",
    )


def test_the_config_itself_is_never_overwritten(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)] * 2)
    (tmp_path / "sub").mkdir()
    before = config.read_bytes()
    for out in (config, tmp_path / "sub" / ".." / config.name):  # another spelling of it
        result = calibrate(tmp_path, config, out)
        assert_one_line_error(
            result,
            f"--out {out}: is the pipeline config given with -c; write the calibrated "
            "pipeline to another file",
        )
    assert config.read_bytes() == before


@pytest.mark.parametrize(("value", "shown"), [("2", "2.0"), ("-0.1", "-0.1"), ("nan", "nan"),
                                              ("fast", "'fast'")])  # fmt: skip
def test_momentum_out_of_range_is_a_one_line_error(tmp_path, two_bn, value, shown):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)] * 2)
    result = calibrate(tmp_path, config, tmp_path / "cal.yaml", "--momentum", value)
    assert_one_line_error(result, f"--momentum: expected a number in [0, 1] (got {shown})")
    assert not (tmp_path / "cal.yaml").exists()


def test_jobs_zero_is_a_one_line_error(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)] * 2)
    result = calibrate(tmp_path, config, tmp_path / "cal.yaml", "-j", "0")
    assert_one_line_error(result, "--jobs: expected a positive integer (got 0)")


def test_no_images_is_the_same_message_as_cbr_batch(tmp_path, two_bn):
    config, _ = two_bn
    make_folder(tmp_path / "in", [(8, 8)])
    args = [str(tmp_path / "in"), "--glob", "*.xyz"]
    calibrated = runner.invoke(
        app, ["calibrate", *args, "-c", str(config), "-o", str(tmp_path / "c.yaml")]
    )
    batched = runner.invoke(app, ["batch", *args, "-o", str(tmp_path / "out")])
    assert calibrated.exit_code == batched.exit_code == 2
    assert calibrated.stderr == batched.stderr
    assert calibrated.stderr.startswith(f"error: no images in {tmp_path / 'in'} (.png, ")
    assert calibrated.stderr.endswith(" matching '*.xyz'\n")


LARGE_SECOND_KERNEL = """
layers:
  - conv: {out_channels: 2, kernel_size: 3}
    bn: batch
  - conv: {out_channels: 2, kernel_size: 5}
    bn: batch
"""


def test_a_shape_error_for_every_image_is_one_error_before_any_work(tmp_path):
    config = tmp_path / "b.yaml"
    config.write_text(LARGE_SECOND_KERNEL)
    make_folder(tmp_path / "in", [(16, 16), (20, 24)])
    result = calibrate(tmp_path, config, tmp_path / "m.yaml", "--resize", "3x3")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr  # no progress, no per-image failures
    assert result.stderr.startswith(f"error: {config}:5:")
    assert "layer 'layer2'" in result.stderr and "larger than the padded input 1x1" in result.stderr
    assert result.stderr.endswith("(with --resize 3x3)\n")
    assert not (tmp_path / "m.yaml").exists()


def test_when_every_image_fails_in_the_pipeline_the_summary_says_so(tmp_path):
    """Sizes differ, so no up-front check; each image fails on its own."""
    config = tmp_path / "b.yaml"
    config.write_text(LARGE_SECOND_KERNEL)
    make_folder(tmp_path / "in", [(5, 5), (6, 6)])  # layer2 sees 3x3 and 4x4: too small
    result = calibrate(tmp_path, config, tmp_path / "m.yaml", "-j", "1")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("failed ")] == [
        "failed img00.png",
        "failed img01.png",
    ]
    assert lines[-1] == "error: no image could be processed (2 failed); nothing written"
    assert not (tmp_path / "m.yaml").exists()


# -- the library entry point -------------------------------------------------------------


def test_run_calibrate_writes_a_mixed_folder_as_rgb(tmp_path, two_bn):
    from cbr_cli.batch.calibrate import CalibrateOptions, run_calibrate
    from cbr_cli.batch.pool import Progress

    _, spec = two_bn
    make_folder(tmp_path / "in", [(12, 12)] * 2)
    gray = np.random.default_rng(1).random((12, 12)) * 255
    (tmp_path / "in" / "sub").mkdir()
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "in" / "sub" / "g.png")
    (tmp_path / "in" / "zz.png").write_bytes(b"")
    seen: list[Progress] = []
    out = tmp_path / "cal.yaml"
    options = CalibrateOptions(out=str(out), recursive=True, jobs=1)
    result = run_calibrate(tmp_path / "in", spec, options, on_progress=seen.append)
    assert result.out == str(out) and not result.stopped
    assert result.images == 3
    assert [name for name, _ in result.failures] == ["zz.png"]
    assert "file is empty" in result.failures[0][1]
    assert list(result.running) == ["first", "second"]
    assert {p.phase for p in seen} == {"BN statistics first (1/2)", "BN statistics second (2/2)"}
    written = yaml.safe_load(out.read_text())
    assert next(iter(written)) == "input" and written["input"] == {"color": "rgb"}
    np.testing.assert_array_equal(written["layers"][0]["bn"]["running_mean"],
                                  result.running["first"][0])  # fmt: skip
    assert "from 3 images" in out.read_text().splitlines()[0]
    assert "(1 failed)" in out.read_text().splitlines()[0]
