"""The per-layer histogram figure (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from cbr_cli.io.render.histograms import _note, layer_histograms


def layer(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((3, 64, 64)).astype(np.float32) * np.float32([[[0.1]], [[1]], [[5]]])
    mean = conv.mean(axis=(1, 2), keepdims=True)
    bn = (conv - mean) / conv.std(axis=(1, 2), keepdims=True)
    act = np.maximum(bn, 0)
    act[2] = 0.0
    return {"conv": conv, "bn": bn, "act": act}


def test_figure_is_written_as_a_png_of_the_asked_size(tmp_path) -> None:
    image = layer_histograms(layer(), ["a", "b", "c"], layer="layer1", width=900, height=300)
    assert image.shape == (300, 900, 3) and image.dtype == np.uint8
    path = tmp_path / "hist.png"
    Image.fromarray(image).save(path)
    with Image.open(path) as png:
        assert png.size == (900, 300) and png.mode == "RGB"
        pixels = np.asarray(png)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # axes, curves, text: not blank


def test_panels_follow_the_stages() -> None:
    stages = layer()
    one = layer_histograms({"conv": stages["conv"]}, width=400, height=300)
    three = layer_histograms(stages, width=400, height=300)
    assert one.shape == three.shape and not np.array_equal(one, three)


def test_notes_state_what_each_stage_does() -> None:
    stages = layer()
    labels = ["a", "b", "c"]
    act = _note("act", stages["act"], labels, "relu")
    zeroed = np.count_nonzero(stages["act"] == 0) / stages["act"].size
    assert f"{zeroed:.1%} of pixels are 0" in act
    assert "dead channels: 1/3 (c)" in act
    bn = _note("bn", stages["bn"], labels, "relu")
    assert bn.startswith("centred: |channel mean| <= ") and "scaled: channel stds 1..1" in bn


def test_rejects_no_stages() -> None:
    with pytest.raises(ValueError, match="no stages"):
        layer_histograms({})
