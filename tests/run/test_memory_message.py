"""What ``cbr apply`` says when a run does not fit: the estimate and what would fit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbr_cli.cli.app import app
from cbr_cli.errors import CbrError
from cbr_cli.run import memory as run_memory
from cbr_cli.run.memory import ENCODE_QUEUE, apply_peak, too_big
from cbr_cli.spec.flags import LayerFlags, build_spec
from cbr_cli.spec.layerstack import analyze

runner = CliRunner()


def stack(channels: int, height: int, width: int, out_channels: int = 64):
    return analyze(
        build_spec(None, LayerFlags(out_channels=out_channels)), (channels, height, width)
    )


def test_the_message_gives_the_estimate_and_a_resize_that_fits() -> None:
    big = stack(3, 3000, 2000)
    peak = apply_peak(big)
    available = peak.total // 3
    message = too_big(big, 1, peak, available).message
    assert message.startswith(f"this run needs about {peak.total / 2**30:.1f} GiB (1 image(s) of")
    assert f"more than the {available / 2**30:.1f} GiB available" in message
    assert "fewer channels" in message
    assert "cbr batch" not in message  # one image: a batch of one is no smaller
    height, width = map(int, re.search(r"--resize (\d+)x(\d+)", message).groups())
    assert 0.4 * 3000 < height < 0.6 * 3000 and 0.4 * 2000 < width < 0.6 * 2000
    assert apply_peak(stack(3, height, width)).total <= available  # the suggestion fits


def test_when_only_fewer_channels_can_help_the_message_says_just_that() -> None:
    # Less available than the fixed part (weights, late imports): no size would fit.
    s = stack(3, 64, 64)
    message = too_big(s, 1, apply_peak(s), 2**20, channel_pngs=False).message
    assert message.endswith("): to fit, use fewer channels")


def test_no_channel_pngs_is_offered_only_when_it_fits() -> None:
    # Large maps, few channels: the per-channel PNG encoders' buffers are what tip it.
    s = stack(1, 1500, 1500, out_channels=8)
    with_pngs = apply_peak(s, channel_pngs=True).total
    without = apply_peak(s, channel_pngs=False).total
    assert without < with_pngs
    fits = too_big(s, 1, apply_peak(s), without).message
    assert f"--no-channel-pngs (about {without / 2**30:.1f} GiB)" in fits
    assert "--no-channel-pngs" not in too_big(s, 1, apply_peak(s), without - 1).message


def test_several_images_in_one_batch_point_to_cbr_batch() -> None:
    s = stack(3, 512, 512)
    peak = apply_peak(s, 4)
    assert peak.total > apply_peak(s, 1).total
    assert "cbr batch (one image per worker)" in too_big(s, 4, peak, peak.total // 2).message


def test_the_estimate_counts_every_stage_and_the_encoders() -> None:
    s = stack(1, 1000, 1000, out_channels=10)
    peak = apply_peak(s)
    assert peak.stage_outputs == 3 * 4 * 10 * 998 * 998  # conv, bn, act (3x3, no padding)
    # the writes in flight: ENCODE_QUEUE channel PNGs plus what each encoder holds
    queued = apply_peak(s).write - apply_peak(s, channel_pngs=False).write
    assert queued >= ENCODE_QUEUE * 1000 * 1000


def test_apply_refuses_with_one_line_before_writing(tmp_path: Path, monkeypatch) -> None:
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((300, 200), np.uint8)).save(image)
    monkeypatch.setattr(run_memory, "available_memory", lambda: 48 * 2**20)
    result = runner.invoke(
        app, ["apply", str(image), "-o", str(tmp_path / "out"), "--out-channels", "64"]
    )
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this run needs about 0.")
    assert "(1 image(s) of 300x200)" in lines[0]
    assert "--resize " in lines[0] and "fewer channels" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_fitting_run_is_not_refused(monkeypatch) -> None:
    s = stack(3, 64, 64)
    monkeypatch.setattr(run_memory, "available_memory", lambda: apply_peak(s).total)
    run_memory.check_memory(s, (3, 64, 64), 1)
    monkeypatch.setattr(run_memory, "available_memory", lambda: apply_peak(s).total - 1)
    with pytest.raises(CbrError):
        run_memory.check_memory(s, (3, 64, 64), 1)
