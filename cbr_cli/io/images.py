"""Decoding image files into float32 arrays of shape (C, H, W).

This is the only module that decodes images; it uses Pillow and numpy only.
Files are opened read-only and never modified.

Formats
-------
PNG, JPEG (incl. MPO), TIFF, BMP, WebP and GIF (``IMAGE_SUFFIXES`` lists their
file suffixes). Other formats Pillow knows (EPS, PPM, ICO, ...) are rejected on
purpose, so that what cbr reads is what is tested. Animated GIF/WebP and
multi-page TIFF: the first frame is used (and a note says so).

Value conventions
-----------------
``pixels = samples / max_value``, with ``max_value`` fixed by the stored sample
type, never by the data (so every image of a batch is scaled alike):

* 8-bit (``L``, ``RGB``, ``P``, ...): ``/ 255``. Bilevel ``1``: 0 or 1.
* 16-bit (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; 16-bit gray PNG): ``/ 65535``.
  A TIFF with BitsPerSample < 16 in a 16-bit container (12-bit) uses
  ``2**bits - 1``.
* 32-bit integer ``I``: scaled by the full range of the stored type as the TIFF
  header declares it (BitsPerSample, SampleFormat): unsigned n-bit by
  ``2**n - 1``, signed n-bit by ``2**(n-1) - 1`` with negative samples clipped
  to 0 (a note counts them). ``I`` from a PNG holds 16-bit samples
  (``/ 65535``); from anything else it is taken as signed 32-bit.
* Float ``F`` (32-bit float TIFF): taken as-is, assumed to be in [0, 1]; values
  outside are kept, with a note. NaN or infinity is an error naming the file.

So ``pixels`` is in [0, 1] for every integer source.

Channels
--------
``color=None`` picks ``"gray"`` when the source mode is one of ``1, L, LA, La, I,
I;16*, F`` and ``"rgb"`` otherwise (P, RGB, RGBA, CMYK, YCbCr, LAB, HSV, ...).

* gray -> rgb replicates the channel.
* rgb -> gray is ITU-R 601-2 luma, ``0.299 R + 0.587 G + 0.114 B``, the weights
  of Pillow's ``convert("L")`` but computed in floating point from the scaled
  samples, not rounded to 8 bits.
* Alpha (RGBA, LA, PA, palette transparency) is dropped: the colour channels are
  used as stored, not composited over any background (what most tools do); a
  note says so.
* CMYK, YCbCr, LAB and HSV are converted to RGB by Pillow (CMYK without colour
  management).
* 16-bit RGB(A) and gray+alpha PNGs are reduced to 8 bits by Pillow itself; a
  note says so and ``bit_depth`` is 8.

Orientation
-----------
The EXIF Orientation tag (2-8) is applied exactly as ``PIL.ImageOps.exif_transpose``
applies it, so ``H, W`` are those of the image as displayed.

Errors
------
Every failure (missing file, directory, empty file, not an image, truncated or
corrupt data, decompression bomb, permission denied, unsupported mode) raises
:class:`~cbr_cli.errors.CbrError` with one line: ``cannot read image 'PATH': reason``.
The decompression-bomb limit is Pillow's ``Image.MAX_IMAGE_PIXELS``; exceeding
it at all (not only twice, as Pillow's own hard error does) is an error.
Truncated data is an error as long as ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` keeps
its default, False; this module never sets it.

Pillow warnings raised while decoding (e.g. corrupt EXIF) become notes instead
of being printed. Capturing them uses ``warnings.catch_warnings``, which is not
thread-safe before Python 3.14: decode in worker processes, not threads.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from cbr_cli.errors import CbrError
from cbr_cli.io.readfile import open_regular

__all__ = [
    "IMAGE_SUFFIXES",
    "Color",
    "LoadedImage",
    "list_supported_suffixes",
    "load_image",
    "read_image_size",
]

Color = Literal["gray", "rgb"]

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".gif",
)

# Pillow plugin IDs tried by Image.open; MPO (multi-picture JPEG from cameras)
# is returned by the JPEG plugin.
_PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"}) | _SIXTEEN_BIT_MODES
# Modes Pillow converts to RGB for us.
_CONVERTED_TO_RGB = frozenset({"RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"})
_SUPPORTED_MODES = _GRAY_MODES | _CONVERTED_TO_RGB | {"P", "PA", "RGB", "RGBA"}

_ORIENTATION_TAG = 0x0112
# Same table as PIL.ImageOps.exif_transpose.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# ITU-R 601-2 luma weights, as in Pillow's convert("L").
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def list_supported_suffixes() -> tuple[str, ...]:
    """File suffixes (lower case, with the dot) of the formats cbr reads."""
    return IMAGE_SUFFIXES


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image and how it was decoded.

    Attributes
    ----------
    pixels : ndarray of shape (C, H, W), float32
        C is 1 (gray) or 3 (RGB); values in [0, 1] for integer sources.
    path : str
        The file it was read from.
    format : str
        Pillow's format name (``"PNG"``, ``"JPEG"``, ``"MPO"``, ``"TIFF"``, ...).
    source_mode : str
        Pillow's mode of the file (``"RGB"``, ``"I;16"``, ``"P"``, ...).
    bit_depth : int
        Bits per decoded sample (1, 8, 12, 16 or 32).
    max_value : float
        The decoded sample value that maps to 1.0 (255, 65535, ...; 1.0 for
        bilevel and float sources).
    notes : tuple of str
        What was done beyond plain scaling ("alpha channel dropped", ...).
    """

    pixels: np.ndarray
    path: str
    format: str
    source_mode: str
    bit_depth: int
    max_value: float
    notes: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])

    def __repr__(self) -> str:
        return (
            f"LoadedImage({self.path!r}, {self.format} {self.source_mode} "
            f"{self.bit_depth}-bit, pixels {self.pixels.shape} {self.pixels.dtype}, "
            f"notes={self.notes!r})"
        )


def load_image(path: str | os.PathLike[str], color: Color | None = None) -> LoadedImage:
    """Decode the first frame of an image file into float32 (C, H, W).

    Parameters
    ----------
    path : str or path-like
        The image file; opened read-only.
    color : {"gray", "rgb"} or None
        Output channels: "gray" gives C = 1, "rgb" gives C = 3; None chooses
        from the source mode (see the module docstring).

    Returns
    -------
    LoadedImage
        ``pixels`` of shape (C, H, W) with H, W after EXIF orientation.

    Raises
    ------
    CbrError
        If the file cannot be read or decoded, naming the file.
    """
    name = os.fspath(path)
    _check_color(color)
    decoded = _decode(name)
    samples = decoded.samples
    notes = list(decoded.notes)

    if decoded.orientation in _ORIENTATION_TRANSPOSE:
        samples = _orient(samples, decoded.orientation)
        notes.append(f"EXIF orientation {decoded.orientation} applied")

    pixels = _scale(name, samples, decoded, notes)

    target = color or _default_color(decoded.mode)
    if target == "gray" and pixels.shape[2] == 3:
        pixels = (pixels @ _LUMA_WEIGHTS).astype(np.float32)[:, :, np.newaxis]
    elif target == "rgb" and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)

    return LoadedImage(
        pixels=np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32),
        path=name,
        format=decoded.format,
        source_mode=decoded.mode,
        bit_depth=decoded.bit_depth,
        max_value=decoded.max_value,
        notes=tuple(notes),
    )


def read_image_size(
    path: str | os.PathLike[str], color: Color | None = None
) -> tuple[int, int, int]:
    """The (C, H, W) that :func:`load_image` would return, from the header only.

    No pixel data is decoded, so a file truncated inside its pixel data is not
    detected here. H and W are swapped for EXIF orientations 5-8 found in the
    header (a PNG eXIf chunk placed after the image data is only seen by
    :func:`load_image`).

    Raises
    ------
    CbrError
        If the file is missing, unreadable, not an image, too large or of an
        unsupported mode, naming the file.
    """
    name = os.fspath(path)
    _check_color(color)
    with _opened(name) as (im, _):
        mode = im.mode
        _check_mode(name, mode)
        width, height = im.size
        # The base-class getexif reads header metadata only; PngImageFile's
        # override would decode the whole image to look for a late eXIf chunk.
        orientation = Image.Image.getexif(im).get(_ORIENTATION_TAG, 1)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    channels = 1 if (color or _default_color(mode)) == "gray" else 3
    return channels, height, width


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, eq=False)
class _Decoded:
    samples: np.ndarray  # (H, W, k), k in {1, 3}, the stored sample type
    format: str
    mode: str
    bit_depth: int
    max_value: float
    signed: bool
    orientation: int
    notes: tuple[str, ...]


def _default_color(mode: str) -> Color:
    return "gray" if mode in _GRAY_MODES else "rgb"


def _check_color(color: object) -> None:
    if color not in (None, "gray", "rgb"):
        raise CbrError(f"color must be one of ['gray', 'rgb'] or None, but got color={color!r}")


def _check_mode(name: str, mode: str) -> None:
    if mode not in _SUPPORTED_MODES:
        raise CbrError(_message(name, f"unsupported image mode {mode!r}"))


def _message(name: str, reason: str) -> str:
    return f"cannot read image {name!r}: {' '.join(reason.split())}"


@contextmanager
def _opened(name: str) -> Iterator[tuple[Image.Image, list[warnings.WarningMessage]]]:
    """``with _opened(name) as (im, caught):`` -- Image.open with cbr's error policy.

    The exceptions Pillow raises for a bad file anywhere inside the block
    (opening, loading, converting) become a one-line CbrError; anything else
    propagates. Pillow warnings are collected in ``caught`` instead of being
    printed; DecompressionBombWarning is raised instead.
    """

    def error(reason: str) -> CbrError:
        return CbrError(_message(name, "no such file" if reason == "file not found" else reason))

    # A regular file only: a FIFO or a device would block or never end (cbr_cli.io.readfile).
    file = open_regular(name, error)
    if os.fstat(file.fileno()).st_size == 0:
        file.close()
        raise CbrError(_message(name, "file is empty"))

    with file, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(file, formats=_PILLOW_FORMATS) as im:
                yield im, caught
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found[1])} pixels" if found else "the image size"
            reason = (
                f"{size} exceeds the decompression-bomb limit of "
                f"{Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
            )
            raise CbrError(_message(name, reason)) from None
        except UnidentifiedImageError:
            reason = "not an image, or not one of PNG, JPEG, TIFF, BMP, WebP, GIF"
            raise CbrError(_message(name, reason)) from None
        # OSError: truncated data, decoder errors. ValueError, SyntaxError, EOFError:
        # malformed headers and chunks in several plugins (seen fuzzing Pillow 13).
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            reason = f"corrupt or truncated image data ({exc})"
            raise CbrError(_message(name, reason)) from None


def _decode(name: str) -> _Decoded:
    """Open, load the first frame and read its samples as (H, W, k)."""
    with _opened(name) as (im, caught):
        notes: list[str] = []
        mode = im.mode
        _check_mode(name, mode)
        fmt = im.format or "?"
        if getattr(im, "is_animated", False):
            notes.append("first frame of a multi-frame file used")
        reduced = _png_reduced_from_16_bit(im)
        im.load()
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        samples, bit_depth, max_value, signed = _samples(im, notes)
        if reduced:
            notes.append("16-bit samples reduced to 8 bits by Pillow")
    notes.extend(f"Pillow warning: {' '.join(str(w.message).split())}" for w in caught)
    return _Decoded(
        samples=samples,
        format=fmt,
        mode=mode,
        bit_depth=bit_depth,
        max_value=max_value,
        signed=signed,
        orientation=orientation if isinstance(orientation, int) else 1,
        notes=tuple(notes),
    )


def _png_reduced_from_16_bit(im: Image.Image) -> bool:
    """True if Pillow will decode 16-bit PNG samples into an 8-bit mode."""
    if im.format != "PNG" or im.mode in _SIXTEEN_BIT_MODES or im.mode == "I":
        return False
    return any(isinstance(tile.args, str) and tile.args.endswith(";16B") for tile in im.tile)


def _samples(im: Image.Image, notes: list[str]) -> tuple[np.ndarray, int, float, bool]:
    """Stored samples as (H, W, k) plus bit depth, full-scale value and signedness."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im)[:, :, np.newaxis], 1, 1.0, False
    if mode == "L":
        return np.asarray(im)[:, :, np.newaxis], 8, 255.0, False
    if mode in ("LA", "La"):
        notes.append("alpha channel dropped")
        return np.asarray(im.convert("LA"))[:, :, :1], 8, 255.0, False
    if mode in _SIXTEEN_BIT_MODES:
        bits = _tiff_bits(im, default=16)
        return np.asarray(im)[:, :, np.newaxis], bits, float(2**bits - 1), False
    if mode == "I":
        return _int32_samples(im)
    if mode == "F":
        return np.asarray(im)[:, :, np.newaxis], 32, 1.0, False
    if mode == "RGB":
        return np.asarray(im), 8, 255.0, False
    if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in im.info):
        notes.append("alpha channel dropped" if mode != "P" else "palette transparency dropped")
        return np.asarray(im.convert("RGBA"))[:, :, :3], 8, 255.0, False
    if mode == "CMYK":
        notes.append("CMYK converted to RGB by Pillow (no colour management)")
    # P without transparency, CMYK, YCbCr, LAB, HSV, RGBX, RGBa.
    return np.asarray(im.convert("RGB")), 8, 255.0, False


def _tiff_bits(im: Image.Image, default: int) -> int:
    if im.format != "TIFF":
        return default
    bits = im.tag_v2.get(258, default)  # type: ignore[attr-defined]
    return int(bits[0] if isinstance(bits, tuple) else bits)


def _int32_samples(im: Image.Image) -> tuple[np.ndarray, int, float, bool]:
    """Mode "I": 32-bit signed container; see the module docstring."""
    samples = np.asarray(im)[:, :, np.newaxis]
    if im.format == "PNG":
        return samples, 16, 65535.0, False
    if im.format == "TIFF":
        bits = _tiff_bits(im, default=32)
        sample_format = im.tag_v2.get(339, 1)  # type: ignore[attr-defined]
        if isinstance(sample_format, tuple):
            sample_format = sample_format[0]
        if sample_format != 2:  # unsigned: Pillow reads it into int32 ("I;32N")
            if bits == 32:
                samples = samples.view(np.uint32)
            return samples, bits, float(2**bits - 1), False
        return samples, bits, float(2 ** (bits - 1) - 1), True
    return samples, 32, float(2**31 - 1), True


def _orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to (H, W, k) like PIL.ImageOps.exif_transpose."""
    method = _ORIENTATION_TRANSPOSE[orientation]
    T = Image.Transpose
    if method == T.FLIP_LEFT_RIGHT:
        return samples[:, ::-1]
    if method == T.FLIP_TOP_BOTTOM:
        return samples[::-1]
    if method == T.ROTATE_90:  # counter-clockwise
        return np.rot90(samples, 1)
    if method == T.ROTATE_180:
        return np.rot90(samples, 2)
    if method == T.ROTATE_270:
        return np.rot90(samples, 3)
    if method == T.TRANSPOSE:
        return samples.transpose(1, 0, 2)
    return samples.transpose(1, 0, 2)[::-1, ::-1]  # TRANSVERSE


def _scale(name: str, samples: np.ndarray, decoded: _Decoded, notes: list[str]) -> np.ndarray:
    """(H, W, k) samples -> float32 (H, W, k) by the documented conventions."""
    if samples.dtype.kind == "f":
        pixels = samples.astype(np.float32)
        if not np.isfinite(pixels).all():
            raise CbrError(_message(name, "float samples contain NaN or infinity"))
        low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
        if low < 0.0 or high > 1.0:
            notes.append(f"float samples outside [0, 1] kept as-is (min {low:g}, max {high:g})")
        return pixels
    if decoded.signed:
        negative = int(np.count_nonzero(samples < 0))
        if negative:
            notes.append(f"{negative} negative samples clipped to 0")
            samples = np.maximum(samples, 0)
    if decoded.bit_depth <= 16:
        # Exact in float32: integers below 2**24 and one correctly rounded division.
        return samples.astype(np.float32) / np.float32(decoded.max_value)
    return (samples.astype(np.float64) / decoded.max_value).astype(np.float32)
