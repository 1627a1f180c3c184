"""An image's preprocessing before the first layer: ``input.resize`` and ``input.crop``.

They reproduce torchvision's evaluation transform ``Resize(256)`` + ``CenterCrop(224)``
(the ``imagenet-eval`` preset), on cbr's float pixels in [0, 1]:

* ``resize: S`` -- the shorter side becomes ``S``, the longer ``int(S * long / short)``
  (:func:`cbr_cli.spec.pipeline_spec.resized_size`), bilinear with Pillow's antialiasing
  filter: the filter torchvision applies to PIL images.  torchvision resizes the 8-bit
  image, which Pillow rounds to whole grey levels after each of its two passes; cbr
  resizes the float values, so the two differ by at most one grey level (1/255) per
  pixel, plus float32 rounding (tests/run/test_inputs.py).
* ``crop: [h, w]`` -- the centre ``h x w`` window, its top-left corner at
  ``round((H - h) / 2), round((W - w) / 2)`` (Python's ``round``, as torchvision); an image
  smaller than the crop is first padded with zeros on both sides, the odd pixel at the
  bottom/right, as ``CenterCrop`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.spec.pipeline_types import InputSpec, resized_size


def prepare(pixels: np.ndarray, spec: InputSpec, path: str) -> np.ndarray:
    """``pixels`` (C, H, W) float32 after ``spec.resize`` then ``spec.crop`` (a new array or
    ``pixels`` itself when neither applies)."""
    if spec.resize is not None:
        height, width = resized_size(pixels.shape[1], pixels.shape[2], spec.resize)
        pixels = resize(pixels, (height, width), path, "input.resize")
    if spec.crop is not None:
        pixels = center_crop(pixels, spec.crop)
    return pixels


def resize(pixels: np.ndarray, size: tuple[int, int], path: str, what: str) -> np.ndarray:
    """Bilinear (antialiased) resize of every channel of ``pixels`` to ``size`` ``(H, W)``."""
    from PIL import Image

    height, width = size
    if height * width > Image.MAX_IMAGE_PIXELS:
        raise CbrError(
            f"{path}: {what} makes it {height}x{width}, more than the "
            f"{Image.MAX_IMAGE_PIXELS} pixels an image may have"
        )
    if pixels.shape[1:] == (height, width):
        return pixels
    out = np.empty((pixels.shape[0], height, width), dtype=np.float32)
    for c in range(pixels.shape[0]):  # Pillow resamples float32 ("F") images per channel
        image = Image.fromarray(np.ascontiguousarray(pixels[c], dtype=np.float32), mode="F")
        out[c] = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return out


def center_crop(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision's ``CenterCrop(size)`` of (C, H, W) ``pixels`` (zero-padded if smaller)."""
    crop_h, crop_w = size
    _, height, width = pixels.shape
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        pixels = np.pad(
            pixels, ((0, 0), (pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2))
        )
        _, height, width = pixels.shape
    top = round((height - crop_h) / 2.0)
    left = round((width - crop_w) / 2.0)
    return np.ascontiguousarray(pixels[:, top : top + crop_h, left : left + crop_w])


def load_batch(
    paths: Sequence[str],
    color: str | None,
    resize: tuple[int, int] | None,
    inputs: InputSpec | None = None,
) -> tuple[np.ndarray | list[np.ndarray], list[dict[str, Any]]]:
    """Decode images; returns pixel arrays (C, H, W) and a description of each source.

    Without an explicit colour, a mix of gray and RGB images is promoted to RGB (a gray
    image's channel is repeated), so every image feeds the same first layer. ``inputs``'
    ``resize``/``crop`` (:mod:`cbr_cli.run.inputs`) apply after ``resize`` (``--resize``).
    """
    from cbr_cli.io.images import load_image

    loaded = [load_image(p, color) for p in paths]  # type: ignore[arg-type]
    pixels = [im.pixels for im in loaded]
    if color is None and len({p.shape[0] for p in pixels}) > 1:
        pixels = [np.repeat(p, 3, axis=0) if p.shape[0] == 1 else p for p in pixels]
    if resize is not None:
        pixels = [_resize(p, resize) for p in pixels]
    if inputs is not None and (inputs.resize is not None or inputs.crop is not None):
        from cbr_cli.run.inputs import prepare

        pixels = [prepare(p, inputs, path) for p, path in zip(pixels, paths, strict=True)]
    sources = [
        {
            "format": im.format,
            "mode": im.source_mode,
            "bit_depth": im.bit_depth,
            "max_value": im.max_value,
            "size": [im.height, im.width],
            "channels": int(p.shape[0]),
            "notes": list(im.notes),
        }
        for im, p in zip(loaded, pixels, strict=True)
    ]
    return pixels, sources


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = size
    if height * width > Image.MAX_IMAGE_PIXELS:  # the decompression-bomb limit, as for files
        raise CbrError(
            f"--resize {height}x{width}: {height * width} pixels is more than the "
            f"{Image.MAX_IMAGE_PIXELS} an image may have"
        )
    if pixels.shape[1:] == (height, width):
        return pixels
    out = np.empty((pixels.shape[0], height, width), dtype=np.float32)
    for c in range(pixels.shape[0]):  # per channel: Pillow resamples float32 ("F") images
        image = Image.fromarray(np.ascontiguousarray(pixels[c]), mode="F")
        out[c] = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    return out
