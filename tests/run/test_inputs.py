"""Input presets and torchvision's Resize(256) + CenterCrop(224), through ``cbr apply``.

The reference is computed independently: Pillow resizing the 8-bit image (what
torchvision's ``Resize`` does to a PIL image: bilinear with antialiasing, then rounding
to whole levels), the crop window by torchvision's formula, then ``(x - mean) / std`` in
float64.  cbr resizes the float values instead of the 8-bit ones; Pillow's 8-bit
resize rounds to whole levels after each of its two passes (horizontal, vertical), so
the two differ by at most one level before normalisation: ``atol = 1/255 / min(std)``
plus float32 rounding.  Without resizing the presets are exact up to float32 rounding
(``atol=1e-6``).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cbr_cli.errors import CbrError
from cbr_cli.run.inputs import center_crop
from cbr_cli.spec.pipeline_types import resized_size
from tests.cli.wcli import apply_json, invoke, one_line_error

TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406])  # torchvision.models' ImageNet weights
TORCHVISION_STD = np.array([0.229, 0.224, 0.225])


def _image(tmp_path, size=(173, 236)):
    rng = np.random.default_rng(0)
    smooth = rng.uniform(0, 255, (size[0] // 8 + 2, size[1] // 8 + 2, 3))
    big = Image.fromarray(smooth.astype(np.uint8)).resize((size[1], size[0]), Image.BICUBIC)
    path = tmp_path / "img.png"
    big.save(path)
    return path


def _identity_config(tmp_path, input_text: str) -> str:
    """A 1x1 identity conv (3 -> 3) from an .npz: its output is the prepared input."""
    np.savez(tmp_path / "id.npz", **{"id.weight": np.eye(3, dtype=np.float32)[:, :, None, None]})
    config = tmp_path / "net.yaml"
    config.write_text(
        f"weights: id.npz\ninput: {input_text}\nlayers:\n"
        "  - {name: id, conv: {from: id}, activation: none}\n"
    )
    return config


def _prepared(tmp_path, input_text: str, image) -> np.ndarray:
    config = _identity_config(tmp_path, input_text)
    data = apply_json([image, "-c", config, "-o", tmp_path / "out"])
    return np.load(data["images"][0]["stages"][0]["files"]["npy"])


def test_imagenet_preset_is_torchvision_normalize(tmp_path):
    image = _image(tmp_path)
    got = _prepared(tmp_path, "{preset: imagenet}", image)
    x = np.asarray(Image.open(image)).astype(np.float64).transpose(2, 0, 1) / 255
    expected = (x - TORCHVISION_MEAN[:, None, None]) / TORCHVISION_STD[:, None, None]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_minus1to1_preset_is_2x_minus_1(tmp_path):
    image = _image(tmp_path)
    got = _prepared(tmp_path, "{preset: minus1to1}", image)
    x = np.asarray(Image.open(image)).astype(np.float64).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(got, 2 * x - 1, rtol=0, atol=1e-6)
    assert got.min() < -0.5 and got.max() > 0.5


@pytest.mark.parametrize("size", [(173, 236), (300, 250), (200, 200)])
def test_imagenet_eval_is_resize_256_center_crop_224(tmp_path, size):
    image = _image(tmp_path, size)
    got = _prepared(tmp_path, "{preset: imagenet-eval}", image)
    assert got.shape == (3, 224, 224)
    pil = Image.open(image)
    w, h = pil.size
    short, long = min(w, h), max(w, h)
    new = (256, int(256 * long / short)) if w <= h else (int(256 * long / short), 256)
    resized = np.asarray(pil.resize(new, Image.BILINEAR)).astype(np.float64) / 255
    top = round((resized.shape[0] - 224) / 2.0)
    left = round((resized.shape[1] - 224) / 2.0)
    x = resized[top : top + 224, left : left + 224].transpose(2, 0, 1)
    expected = (x - TORCHVISION_MEAN[:, None, None]) / TORCHVISION_STD[:, None, None]
    atol = 1.0 / 255 / TORCHVISION_STD.min() + 1e-5
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    # Not merely close by chance: the same image without the crop's offset is much further.
    shifted = np.roll(expected, 3, axis=2)
    assert np.abs(got - shifted).max() > 10 * atol


def test_explicit_keys_win_over_the_preset(tmp_path):
    image = _image(tmp_path)
    got = _prepared(
        tmp_path, "{preset: imagenet-eval, crop: [100, 120], mean: 0.0, std: 1.0}", image
    )
    assert got.shape == (3, 100, 120)
    assert got.min() >= 0 and got.max() <= 1


def test_resized_size_is_torchvisions():
    # torchvision: short side = size, long side = int(size * long / short)
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(7, 3, 256) == (597, 256)


def test_center_crop_pads_a_small_image_like_torchvision():
    pixels = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
    out = center_crop(pixels, (6, 5))  # torchvision: pad (5-4)//2=0 left, 1 right; 1 top, 2 bottom
    assert out.shape == (2, 6, 5)
    np.testing.assert_array_equal(out[:, 1:4, 0:4], pixels)
    assert out[:, 0].sum() == 0 and out[:, 4:].sum() == 0 and out[:, :, 4].sum() == 0


def test_bad_preset_is_one_line(tmp_path):
    image = _image(tmp_path)
    result = invoke(["apply", image, "--preset", "imagenett", "-o", tmp_path / "out"])
    one_line_error(result, "--preset: expected one of", "did you mean 'imagenet'?")


def test_resize_too_big_is_an_error(tmp_path):
    from cbr_cli.run.inputs import prepare
    from cbr_cli.spec.pipeline_types import InputSpec

    with pytest.raises(CbrError, match=r"input\.resize makes it"):
        prepare(np.zeros((1, 2, 60000), np.float32), InputSpec(resize=60000), "x.png")
