"""Tests for cbr_cli.io.images: every mode and format generated in tmp_path with Pillow.

Expected values come from the documented scaling (``samples / max_value``) computed
independently here, or from Pillow itself (``convert``, ``ImageOps.exif_transpose``)
where cbr delegates to it.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps

from cbr_cli.errors import CbrError
from cbr_cli.io import images, readfile
from cbr_cli.io.images import IMAGE_SUFFIXES, LoadedImage, load_image, read_image_size
from tests.helpers import REPO

SAMPLES = REPO / "samples"


def save(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def scaled(values: np.ndarray, max_value: float) -> np.ndarray:
    """The documented convention, computed in float64 and rounded once to float32."""
    return (np.asarray(values, dtype=np.float64) / max_value).astype(np.float32)


def write_tiff(path: Path, width: int, height: int, bits: int, sample_format: int, data: bytes):
    """A minimal little-endian, uncompressed, one-strip gray TIFF (for types Pillow won't write).

    sample_format: 1 unsigned integer, 2 signed integer (TIFF tag 339).
    """
    short, long_ = 3, 4
    entries = [
        (256, short, width),  # ImageWidth
        (257, short, height),  # ImageLength
        (258, short, bits),  # BitsPerSample
        (259, short, 1),  # Compression: none
        (262, short, 1),  # PhotometricInterpretation: BlackIsZero
        (273, long_, None),  # StripOffsets, filled in below
        (277, short, 1),  # SamplesPerPixel
        (278, short, height),  # RowsPerStrip
        (279, long_, len(data)),  # StripByteCounts
        (339, short, sample_format),  # SampleFormat
    ]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if value is None else value
        if kind == short:
            ifd += struct.pack("<HHIHH", tag, kind, 1, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, 1, value)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data)
    return path


def write_png(path: Path, width: int, height: int, bit_depth: int, color_type: int, rows):
    """A minimal PNG from raw big-endian sample rows (for 16-bit RGB, which Pillow won't write)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def rgb8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 10, 3), dtype=np.uint8)


# ----------------------------------------------------------------- sample photos


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("astronaut.png", (3, 512, 512)),
        ("camera.png", (1, 512, 512)),
        ("chelsea.png", (3, 300, 451)),
    ],
)
def test_sample_photos_shape_dtype_range(name: str, shape: tuple[int, int, int]) -> None:
    loaded = load_image(SAMPLES / name)
    assert loaded.pixels.shape == shape
    assert loaded.pixels.dtype == np.float32
    assert loaded.pixels.flags.c_contiguous
    assert 0.0 <= loaded.pixels.min() < loaded.pixels.max() <= 1.0
    assert (loaded.format, loaded.bit_depth, loaded.max_value) == ("PNG", 8, 255.0)
    assert read_image_size(SAMPLES / name) == shape


def test_sample_photo_gray_matches_pillow_luma_before_rounding() -> None:
    loaded = load_image(SAMPLES / "astronaut.png", color="gray")
    with Image.open(SAMPLES / "astronaut.png") as im:
        pillow_l = np.asarray(im.convert("L"), dtype=np.float64) / 255
    assert loaded.pixels.shape == (1, 512, 512)
    # Pillow rounds luma to the nearest 8-bit value; cbr does not.
    np.testing.assert_allclose(loaded.pixels[0], pillow_l, rtol=0, atol=0.5 / 255 + 1e-6)
    assert read_image_size(SAMPLES / "astronaut.png", color="gray") == (1, 512, 512)


def test_sample_gray_photo_as_rgb_replicates_the_channel() -> None:
    gray = load_image(SAMPLES / "camera.png").pixels
    rgb = load_image(SAMPLES / "camera.png", color="rgb").pixels
    assert rgb.shape == (3, 512, 512)
    for channel in rgb:
        np.testing.assert_array_equal(channel, gray[0])


# ----------------------------------------------------------------- 8-bit and bilevel


def test_gray_8_bit_scaling_is_exact(tmp_path: Path) -> None:
    values = np.array([[0, 1, 128, 254, 255]], dtype=np.uint8)
    loaded = load_image(save(Image.fromarray(values), tmp_path / "g.png"))
    assert loaded.source_mode == "L"
    np.testing.assert_array_equal(loaded.pixels, scaled(values, 255)[np.newaxis])
    assert loaded.pixels[0, 0, 0] == 0.0
    assert loaded.pixels[0, 0, -1] == 1.0


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_rgb_lossless_formats_keep_channel_order(tmp_path: Path, rgb8, suffix: str) -> None:
    params = {"lossless": True} if suffix == ".webp" else {}
    loaded = load_image(save(Image.fromarray(rgb8), tmp_path / f"c{suffix}", **params))
    assert loaded.source_mode == "RGB"
    np.testing.assert_array_equal(loaded.pixels, scaled(rgb8, 255).transpose(2, 0, 1))
    assert loaded.notes == ()


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_bilevel_is_zero_or_one(tmp_path: Path, suffix: str) -> None:
    checker = np.indices((4, 6)).sum(axis=0) % 2 == 1
    loaded = load_image(save(Image.fromarray(checker), tmp_path / f"b{suffix}"))
    assert (loaded.source_mode, loaded.bit_depth, loaded.max_value) == ("1", 1, 1.0)
    np.testing.assert_array_equal(loaded.pixels, checker[np.newaxis].astype(np.float32))


def test_jpeg_rgb_is_close_to_the_source(tmp_path: Path) -> None:
    smooth = np.zeros((16, 16, 3), dtype=np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, 100, 30
    loaded = load_image(save(Image.fromarray(smooth), tmp_path / "c.jpg", quality=95))
    assert loaded.format == "JPEG"
    np.testing.assert_allclose(loaded.pixels, smooth.transpose(2, 0, 1) / 255, atol=3 / 255)


# ----------------------------------------------------------------- 16-bit


def test_png_16_bit_gray_scaling_is_exact(tmp_path: Path) -> None:
    values = np.array([[0, 1, 32768, 65534, 65535]], dtype=np.uint16)
    loaded = load_image(save(Image.fromarray(values), tmp_path / "g16.png"))
    assert loaded.source_mode in ("I;16", "I")  # Pillow < 11 opened 16-bit PNGs as "I"
    assert (loaded.bit_depth, loaded.max_value) == (16, 65535.0)
    np.testing.assert_array_equal(loaded.pixels, scaled(values, 65535)[np.newaxis])
    assert loaded.pixels[0, 0, 2] == np.float32(32768 / 65535)
    assert loaded.pixels[0, 0, -1] == 1.0


@pytest.mark.parametrize(("dtype", "mode"), [("<u2", "I;16"), (">u2", "I;16B")])
def test_tiff_16_bit_both_byte_orders(tmp_path: Path, dtype: str, mode: str) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=dtype)
    loaded = load_image(save(Image.fromarray(values), tmp_path / "g16.tif"))
    assert loaded.source_mode == mode
    np.testing.assert_array_equal(loaded.pixels, scaled(values, 65535)[np.newaxis])
    rgb = load_image(tmp_path / "g16.tif", color="rgb").pixels
    np.testing.assert_array_equal(rgb, np.repeat(loaded.pixels, 3, axis=0))


def test_tiff_12_bit_is_scaled_by_its_own_range(tmp_path: Path) -> None:
    values = [0, 1, 2048, 4095]  # two pairs, each packed MSB-first into 3 bytes
    data = bytearray()
    for a, b in zip(values[::2], values[1::2], strict=True):
        data += bytes([a >> 4, ((a & 0xF) << 4) | (b >> 8), b & 0xFF])
    path = write_tiff(tmp_path / "g12.tif", 4, 1, 12, 1, bytes(data))
    loaded = load_image(path)
    assert (loaded.bit_depth, loaded.max_value) == (12, 4095.0)
    np.testing.assert_array_equal(loaded.pixels, scaled([[values]], 4095))


def test_png_16_bit_rgb_is_reduced_to_8_bits_by_pillow_with_a_note(tmp_path: Path) -> None:
    samples = np.array([[[65535, 32768, 0], [257, 255, 0]]], dtype=">u2")
    path = write_png(tmp_path / "rgb16.png", 2, 1, 16, 2, [row.tobytes() for row in samples])
    loaded = load_image(path)
    assert (loaded.source_mode, loaded.bit_depth, loaded.max_value) == ("RGB", 8, 255.0)
    assert "16-bit samples reduced to 8 bits by Pillow" in loaded.notes
    np.testing.assert_array_equal(loaded.pixels, scaled(samples >> 8, 255).transpose(2, 0, 1))


# ----------------------------------------------------------------- 32-bit int and float TIFF


def test_tiff_signed_32_bit_is_scaled_by_int32_max_and_negatives_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1, 2**30, 2**31 - 1, -5]], dtype=np.int32)
    loaded = load_image(save(Image.fromarray(values), tmp_path / "i32.tif"))
    assert (loaded.source_mode, loaded.bit_depth, loaded.max_value) == ("I", 32, 2**31 - 1)
    expected = scaled(np.maximum(values, 0), 2**31 - 1)[np.newaxis]
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert loaded.pixels[0, 0, 3] == 1.0
    assert "1 negative samples clipped to 0" in loaded.notes


def test_tiff_unsigned_32_bit_uses_the_full_uint32_range(tmp_path: Path) -> None:
    values = np.array([0, 2**31, 2**32 - 1], dtype="<u4")
    path = write_tiff(tmp_path / "u32.tif", 3, 1, 32, 1, values.tobytes())
    loaded = load_image(path)
    assert (loaded.source_mode, loaded.max_value) == ("I", 2**32 - 1)
    np.testing.assert_array_equal(loaded.pixels, scaled([[values]], 2**32 - 1))
    assert loaded.pixels[0, 0, -1] == 1.0
    assert loaded.notes == ()


def test_tiff_signed_16_bit_is_scaled_by_int16_max(tmp_path: Path) -> None:
    values = np.array([-32768, 0, 16384, 32767], dtype="<i2")
    loaded = load_image(write_tiff(tmp_path / "s16.tif", 4, 1, 16, 2, values.tobytes()))
    assert (loaded.source_mode, loaded.bit_depth, loaded.max_value) == ("I", 16, 32767.0)
    np.testing.assert_array_equal(loaded.pixels, scaled([[[0, 0, 16384, 32767]]], 32767))
    assert "1 negative samples clipped to 0" in loaded.notes


def test_float_tiff_is_taken_as_is(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25, 1 / 3, 1.0]], dtype=np.float32)
    loaded = load_image(save(Image.fromarray(values), tmp_path / "f.tif"))
    assert (loaded.source_mode, loaded.bit_depth, loaded.max_value) == ("F", 32, 1.0)
    np.testing.assert_array_equal(loaded.pixels, values[np.newaxis])
    assert loaded.notes == ()


def test_float_tiff_outside_unit_range_is_kept_with_a_note(tmp_path: Path) -> None:
    values = np.array([[-0.5, 0.5, 2.0]], dtype=np.float32)
    loaded = load_image(save(Image.fromarray(values), tmp_path / "f.tif"))
    np.testing.assert_array_equal(loaded.pixels, values[np.newaxis])
    assert loaded.notes == ("float samples outside [0, 1] kept as-is (min -0.5, max 2)",)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_nan_or_inf_is_an_error_naming_the_file(tmp_path: Path, bad) -> None:
    path = save(Image.fromarray(np.array([[0.5, bad]], dtype=np.float32)), tmp_path / "f.tif")
    with pytest.raises(CbrError, match="NaN or infinity") as info:
        load_image(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------- palette, alpha, colour spaces


def test_palette_without_transparency_gives_palette_colours(tmp_path: Path) -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    image.putdata([0, 1, 2])
    loaded = load_image(save(image, tmp_path / "p.png"))
    assert loaded.source_mode == "P"
    assert loaded.pixels.shape == (3, 1, 3)
    np.testing.assert_array_equal(loaded.pixels[:, 0, :], np.eye(3, dtype=np.float32))
    assert loaded.notes == ()


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparency_is_dropped_keeping_the_stored_colour(tmp_path: Path, suffix) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50])
    image.putdata([0, 1])
    loaded = load_image(save(image, tmp_path / f"p{suffix}", transparency=1))
    assert loaded.source_mode == "P"
    np.testing.assert_array_equal(
        loaded.pixels[:, 0, :], scaled([[10, 200], [20, 100], [30, 50]], 255)
    )
    assert "palette transparency dropped" in loaded.notes


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_rgba_alpha_is_dropped_not_composited(tmp_path: Path, suffix: str) -> None:
    rgba = np.array([[[200, 100, 50, 0], [10, 20, 30, 255], [90, 80, 70, 128]]], dtype=np.uint8)
    params = {"lossless": True, "exact": True} if suffix == ".webp" else {}
    loaded = load_image(save(Image.fromarray(rgba), tmp_path / f"a{suffix}", **params))
    assert loaded.source_mode == "RGBA"
    np.testing.assert_array_equal(loaded.pixels, scaled(rgba[..., :3], 255).transpose(2, 0, 1))
    assert "alpha channel dropped" in loaded.notes


def test_gray_alpha_is_dropped(tmp_path: Path) -> None:
    la = np.array([[[40, 0], [250, 255]]], dtype=np.uint8)
    loaded = load_image(save(Image.fromarray(la, mode="LA"), tmp_path / "la.png"))
    assert (loaded.source_mode, loaded.channels) == ("LA", 1)
    np.testing.assert_array_equal(loaded.pixels, scaled([[[40, 250]]], 255))
    assert "alpha channel dropped" in loaded.notes


def test_cmyk_tiff_is_converted_like_pillow(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    loaded = load_image(save(Image.fromarray(cmyk, mode="CMYK"), tmp_path / "k.tif"))
    assert loaded.source_mode == "CMYK"
    # white, cyan, black
    np.testing.assert_array_equal(loaded.pixels[:, 0, :], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    assert any("CMYK" in note for note in loaded.notes)


@pytest.mark.parametrize(("mode", "suffix"), [("CMYK", ".jpg"), ("LAB", ".tif"), ("YCbCr", ".tif")])
def test_other_colour_spaces_match_pillow_convert_rgb(tmp_path: Path, rgb8, mode, suffix) -> None:
    path = save(Image.fromarray(rgb8).convert(mode), tmp_path / f"x{suffix}")
    with Image.open(path) as im:
        assert im.mode == mode
        expected = scaled(np.asarray(im.convert("RGB")), 255).transpose(2, 0, 1)
    loaded = load_image(path)
    assert loaded.source_mode == mode
    np.testing.assert_array_equal(loaded.pixels, expected)


# ----------------------------------------------------------------- colour choice


@pytest.mark.parametrize(
    ("mode", "channels"),
    [
        *[("1", 1), ("L", 1), ("LA", 1), ("I", 1), ("I;16", 1), ("F", 1)],
        *[("P", 3), ("RGB", 3), ("RGBA", 3), ("CMYK", 3)],
    ],
)
def test_default_colour_follows_the_source_mode(tmp_path: Path, mode: str, channels: int) -> None:
    suffix = ".jpg" if mode == "CMYK" else ".tif"
    path = save(Image.new(mode, (5, 4)), tmp_path / f"x{suffix}")
    assert load_image(path).pixels.shape == (channels, 4, 5)
    assert read_image_size(path) == (channels, 4, 5)
    assert load_image(path, color="gray").pixels.shape == (1, 4, 5)
    assert load_image(path, color="rgb").pixels.shape == (3, 4, 5)
    assert read_image_size(path, color="rgb") == (3, 4, 5)


def test_gray_from_rgb_is_float_luma(tmp_path: Path, rgb8) -> None:
    loaded = load_image(save(Image.fromarray(rgb8), tmp_path / "c.png"), color="gray")
    r, g, b = (rgb8[..., i].astype(np.float64) / 255 for i in range(3))
    expected = 0.299 * r + 0.587 * g + 0.114 * b
    np.testing.assert_allclose(loaded.pixels[0], expected, rtol=0, atol=1e-6)
    white = load_image(save(Image.new("RGB", (2, 2), "white"), tmp_path / "w.png"), "gray")
    assert (white.pixels == 1.0).all()


def test_gray_from_16_bit_is_not_rounded_to_8_bits(tmp_path: Path) -> None:
    values = np.array([[1, 2, 3]], dtype=np.uint16)  # all 0 in 8 bits
    loaded = load_image(save(Image.fromarray(values), tmp_path / "g.png"), color="rgb")
    np.testing.assert_array_equal(loaded.pixels[1], scaled(values, 65535))


@pytest.mark.parametrize("bad", ["grey", "RGB", 3])
def test_invalid_colour_is_rejected(bad: object) -> None:
    with pytest.raises(CbrError, match=r"color must be one of \['gray', 'rgb'\]"):
        load_image(SAMPLES / "camera.png", color=bad)  # type: ignore[arg-type]
    with pytest.raises(CbrError, match="but got color="):
        read_image_size(SAMPLES / "camera.png", color=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------- EXIF orientation


def orientation_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path: Path, rgb8, orientation) -> None:
    path = save(Image.fromarray(rgb8), tmp_path / "o.png", exif=orientation_exif(orientation))
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im))
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.pixels, scaled(reference, 255).transpose(2, 0, 1))
    assert ("EXIF orientation" in " ".join(loaded.notes)) == (orientation != 1)
    assert read_image_size(path) == (3, *reference.shape[:2])


def test_jpeg_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    stored = np.zeros((16, 32), dtype=np.uint8)  # H=16, W=32
    stored[:8] = 255  # top half white
    path = save(Image.fromarray(stored), tmp_path / "o.jpg", exif=orientation_exif(6))
    loaded = load_image(path)
    # Displayed 90 degrees clockwise: H and W swap, the stored top edge is on the right.
    assert loaded.pixels.shape == (1, 32, 16)
    assert read_image_size(path) == (1, 32, 16)
    assert loaded.pixels[0, 2:-2, 10:].min() > 0.9
    assert loaded.pixels[0, 2:-2, :6].max() < 0.1
    assert "EXIF orientation 6 applied" in loaded.notes


def test_corrupt_exif_becomes_a_note_not_printed_warning(tmp_path: Path, rgb8) -> None:
    truncated_ifd = b"Exif\x00\x00II*\x00\xff\xff\xff\xff"
    path = save(Image.fromarray(rgb8), tmp_path / "e.jpg", exif=truncated_ifd)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(path)
    assert loaded.pixels.shape == (3, 6, 10)
    assert any(note.startswith("Pillow warning: Corrupt EXIF") for note in loaded.notes)


# ----------------------------------------------------------------- frames and formats


def two_frames(size=(5, 4)) -> list[Image.Image]:
    return [Image.new("RGB", size, colour) for colour in ("red", "lime")]


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".tif"])
def test_multi_frame_files_use_the_first_frame(tmp_path: Path, suffix: str) -> None:
    first, second = two_frames()
    params = {"lossless": True} if suffix == ".webp" else {}
    path = save(first, tmp_path / f"anim{suffix}", save_all=True, append_images=[second], **params)
    loaded = load_image(path)
    assert loaded.pixels.shape == (3, 4, 5)
    np.testing.assert_array_equal(loaded.pixels[:, 0, 0], [1.0, 0.0, 0.0])
    assert (loaded.pixels == loaded.pixels[:, :1, :1]).all()
    assert "first frame of a multi-frame file used" in loaded.notes
    assert read_image_size(path) == (3, 4, 5)


def test_single_frame_gif(tmp_path: Path) -> None:
    loaded = load_image(save(two_frames()[1], tmp_path / "g.gif"))
    assert (loaded.format, loaded.source_mode) == ("GIF", "P")
    np.testing.assert_array_equal(loaded.pixels[:, 3, 4], [0.0, 1.0, 0.0])
    assert loaded.notes == ()


def test_suffixes() -> None:
    assert images.list_supported_suffixes() == IMAGE_SUFFIXES
    assert set(IMAGE_SUFFIXES) == {
        ".png",
        ".jpg",
        ".jpeg",
        ".tif",
        ".tiff",
        ".bmp",
        ".webp",
        ".gif",
    }


def test_loaded_image_properties_and_repr() -> None:
    loaded = load_image(SAMPLES / "chelsea.png")
    assert isinstance(loaded, LoadedImage)
    assert (loaded.channels, loaded.height, loaded.width) == (3, 300, 451)
    assert loaded.path == str(SAMPLES / "chelsea.png")
    assert repr(loaded) == (
        f"LoadedImage({loaded.path!r}, PNG RGB 8-bit, pixels (3, 300, 451) float32, notes=())"
    )


def test_inputs_are_not_modified(tmp_path: Path, rgb8) -> None:
    path = save(Image.fromarray(rgb8), tmp_path / "c.jpg", exif=orientation_exif(6))
    before, stat_before = path.read_bytes(), path.stat()
    load_image(path)
    read_image_size(path)
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat_before.st_mtime_ns


def test_read_image_size_decodes_no_pixels(tmp_path: Path, rgb8, monkeypatch) -> None:
    png = save(Image.fromarray(rgb8), tmp_path / "c.png")
    jpeg = save(Image.fromarray(rgb8), tmp_path / "c.jpg", exif=orientation_exif(8))

    def no_decoding(self):
        raise AssertionError("read_image_size decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert read_image_size(png) == (3, 6, 10)
    assert read_image_size(jpeg) == (3, 10, 6)


# ----------------------------------------------------------------- broken inputs

READERS = [load_image, read_image_size]


def assert_one_line_error(error: CbrError, path: Path, reason: str) -> None:
    message = str(error)
    assert message.startswith(f"cannot read image {str(path)!r}: ")
    assert reason in message
    assert "\n" not in message
    # No chained Pillow/OS exception to print under it.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize("read", READERS)
def test_missing_file(tmp_path: Path, read) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "no such file")


@pytest.mark.parametrize("read", READERS)
def test_directory(tmp_path: Path, read) -> None:
    with pytest.raises(CbrError) as info:
        read(tmp_path)
    assert_one_line_error(info.value, tmp_path, "is a directory")


@pytest.mark.parametrize("read", READERS)
def test_empty_file(tmp_path: Path, read) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "file is empty")


@pytest.mark.parametrize("read", READERS)
def test_text_file(tmp_path: Path, read) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "not an image")


@pytest.mark.parametrize("read", READERS)
def test_formats_other_than_the_six_are_rejected(tmp_path: Path, read) -> None:
    path = save(Image.new("RGB", (4, 4)), tmp_path / "x.ppm")
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "not one of PNG, JPEG, TIFF, BMP, WebP, GIF")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_pixel_data(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    whole = save(Image.fromarray(noise), tmp_path / f"whole{suffix}")
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(CbrError) as info:
        load_image(path)
    assert_one_line_error(info.value, path, "truncated")
    # The header is intact: sizing without decoding still works (documented).
    assert read_image_size(path) == (3, 64, 64)


@pytest.mark.parametrize("read", READERS)
def test_truncated_header(tmp_path: Path, read) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes((SAMPLES / "camera.png").read_bytes()[:20])
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "corrupt or truncated")


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize(("side", "pixels"), [(40, 1600), (100, 10000)])
def test_decompression_bomb(tmp_path: Path, monkeypatch, read, side: int, pixels: int) -> None:
    # 1600 pixels: Pillow only warns (cbr makes it an error); 10000: Pillow's own error.
    path = save(Image.new("L", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(
        info.value, path, f"{pixels} pixels exceeds the decompression-bomb limit of 1000 pixels"
    )


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
@pytest.mark.parametrize("read", READERS)
def test_permission_denied(tmp_path: Path, read) -> None:
    path = save(Image.new("L", (2, 2)), tmp_path / "secret.png")
    path.chmod(0)
    try:
        with pytest.raises(CbrError) as info:
            read(path)
    finally:
        path.chmod(0o600)
    assert_one_line_error(info.value, path, "permission denied")


@pytest.mark.parametrize("read", READERS)
def test_permission_denied_simulated(tmp_path: Path, monkeypatch, read) -> None:
    # Runs even as root, where chmod 0 does not stop reading.
    path = save(Image.new("L", (2, 2)), tmp_path / "secret.png")

    def denied(file, flags, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(readfile.os, "open", denied)  # the one open of every reader
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "permission denied")


@pytest.mark.parametrize("read", READERS)
def test_unsupported_mode(tmp_path: Path, monkeypatch, read) -> None:
    # No mode Pillow 13 decodes from the six formats is unsupported; pretend one is.
    path = save(Image.new("YCbCr", (2, 2)), tmp_path / "y.tif")
    monkeypatch.setattr(images, "_SUPPORTED_MODES", images._SUPPORTED_MODES - {"YCbCr"})
    with pytest.raises(CbrError) as info:
        read(path)
    assert_one_line_error(info.value, path, "unsupported image mode 'YCbCr'")


def test_error_message_names_a_path_like_argument_as_given(tmp_path: Path) -> None:
    with pytest.raises(CbrError, match=r"^cannot read image '.*nope\.tif': no such file$"):
        load_image(os.fspath(tmp_path / "nope.tif"))


# ----------------------------------------------------------------- properties


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.integers(0, 65535), min_size=1, max_size=24),
    sixteen=st.booleans(),
)
def test_png_round_trip_scaling_is_exact(tmp_path: Path, values: list[int], sixteen: bool) -> None:
    dtype, top = (np.uint16, 65535) if sixteen else (np.uint8, 255)
    samples = np.array([values], dtype=np.int64).clip(0, top).astype(dtype)
    loaded = load_image(save(Image.fromarray(samples), tmp_path / "p.png"))
    np.testing.assert_array_equal(loaded.pixels, scaled(samples, top)[np.newaxis])
    assert loaded.pixels.min() >= 0.0
    assert loaded.pixels.max() <= 1.0


def small_files() -> dict[str, bytes]:
    noise = np.random.default_rng(2).integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    files = {}
    for fmt, params in [("PNG", {}), ("JPEG", {}), ("TIFF", {}), ("BMP", {}), ("GIF", {})]:
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, format=fmt, **params)
        files[fmt] = buffer.getvalue()
    return files


SMALL_FILES = small_files()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(sorted(SMALL_FILES)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    keep=st.floats(0.0, 1.0),
)
def test_corrupted_files_load_or_raise_cbr_error(tmp_path: Path, fmt, edits, keep) -> None:
    data = bytearray(SMALL_FILES[fmt])
    for position, value in edits:
        data[position % len(data)] = value
    path = tmp_path / "fuzz.bin"
    path.write_bytes(bytes(data[: max(1, int(len(data) * keep))]))
    for read in READERS:
        try:
            read(path)
        except CbrError as error:
            assert_one_line_error(error, path, "")
