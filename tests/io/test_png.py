"""cbr's PNG encoder, checked against Pillow's decoder: pixels, palette, text, valid chunks."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cbr_cli.io import png
from cbr_cli.io.render import COLORMAPS, color_index
from cbr_cli.io.writers import write_png

TEXT = {"Software": "cbr", "cbr:vmin": repr(-0.1 + 0.2), "cbr:label": "3:sobel_x", "k": "σ – ✓"}


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with each deflate cbr can ship: ISA-L, and zlib when isal is missing."""
    if request.param == "isal":
        pytest.importorskip("isal")
    else:
        monkeypatch.setattr(png, "_isal", lambda: None)
    yield request.param


def decode(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # structure and every chunk's CRC
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking lengths and CRCs with zlib independently."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    return out


def random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("row_filter", [*png.FILTERS, None])
@pytest.mark.parametrize("shape", [(23, 31, 3), (23, 31), (1, 1, 3), (1, 1), (5, 1), (1, 7, 3)])
def test_every_filter_round_trips_rgb_and_grey(backend: str, row_filter: str | None, shape) -> None:
    image = random_image(shape)
    im = decode(png.encode_png(image, TEXT, row_filter=row_filter))
    assert im.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(im), image)
    assert im.text == TEXT


@pytest.mark.parametrize("row_filter", [*png.FILTERS, None])
@pytest.mark.parametrize("colors", [256, 1, 17])
def test_every_filter_round_trips_palette_images(
    backend: str, row_filter: str | None, colors
) -> None:
    rng = np.random.default_rng(colors)
    lut = rng.integers(0, 256, size=(colors, 3), dtype=np.uint8)
    index = rng.integers(0, colors, size=(19, 29), dtype=np.uint8)
    im = decode(png.encode_png(index, TEXT, lut, row_filter=row_filter))
    assert im.mode == "P"
    np.testing.assert_array_equal(np.asarray(im), index)
    np.testing.assert_array_equal(np.asarray(im.getpalette(), np.uint8).reshape(-1, 3), lut)
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), lut[index])
    assert im.text == TEXT


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    rgb=st.booleans(),
    row_filter=st.sampled_from(list(png.FILTERS)),
    seed=st.integers(0, 2**16),
    smooth=st.booleans(),
)
def test_filters_round_trip_any_small_image(h, w, rgb, row_filter, seed, smooth) -> None:
    shape = (h, w, 3) if rgb else (h, w)
    image = random_image(shape, seed)
    if smooth:  # small differences: Paeth's ties and the a/b/c choices all occur
        image = np.cumsum(image % 3, axis=0).astype(np.uint8)
    np.testing.assert_array_equal(
        np.asarray(decode(png.encode_png(image, row_filter=row_filter))), image
    )


def test_filters_match_the_specification_on_known_bytes() -> None:
    # One RGB row pair written out by hand from section 9.2 of the PNG specification.
    rows = np.array([[10, 20, 30, 12, 25, 28], [11, 19, 35, 200, 0, 255]], dtype=np.uint8)
    lines = {m: png.filter_rows(rows, 3, m) for m in png.FILTERS}
    assert lines["none"].tolist() == [[0, 10, 20, 30, 12, 25, 28], [0, 11, 19, 35, 200, 0, 255]]
    assert lines["sub"].tolist() == [[1, 10, 20, 30, 2, 5, 254], [1, 11, 19, 35, 189, 237, 220]]
    assert lines["up"].tolist() == [[2, 10, 20, 30, 12, 25, 28], [2, 1, 255, 5, 188, 231, 227]]
    # average: x - (a + b) // 2; row 1 byte 3: 200 - (11 + 12) // 2 = 189
    assert lines["average"].tolist() == [
        [3, 10, 20, 30, 7, 15, 13],
        [3, 6, 9, 20, 189, 234, 224],
    ]
    # paeth, row 1: byte 3 a=11 b=12 c=10, p=13 -> b; byte 5 a=35 b=28 c=30, p=33 -> a
    assert lines["paeth"].tolist() == [
        [4, 10, 20, 30, 2, 5, 254],
        [4, 1, 255, 5, 188, 231, 220],
    ]


def test_chunk_layout_text_and_palette_before_the_data(backend: str) -> None:
    lut = COLORMAPS["viridis"].lut
    data = png.encode_png(np.zeros((4, 4), np.uint8), {"a": "1", "b": "é"}, lut)
    kinds = [kind for kind, _ in chunks(data)]
    assert kinds == [b"IHDR", b"PLTE", b"tEXt", b"tEXt", b"IDAT", b"IEND"]
    ihdr = dict(chunks(data))[b"IHDR"]
    assert struct.unpack(">IIBBBBB", ihdr) == (4, 4, 8, 3, 0, 0, 0)
    assert dict(chunks(data))[b"PLTE"] == lut.tobytes()


def test_text_outside_latin1_is_itxt() -> None:
    data = png.encode_png(np.zeros((1, 1), np.uint8), {"a": "é", "b": "日本"})
    kinds = [kind for kind, _ in chunks(data)]
    assert kinds == [b"IHDR", b"tEXt", b"iTXt", b"IDAT", b"IEND"]
    assert decode(data).text == {"a": "é", "b": "日本"}


def test_a_real_feature_map_through_write_png(tmp_path: Path, backend: str) -> None:
    # The files `cbr apply` writes: a coloured map as palette indices, a montage as RGB.
    y, x = np.mgrid[-1:1:97j, -1:1:131j]
    feature = np.sin(5 * x) * np.cos(3 * y) * np.exp(-(x**2))
    index, nan = color_index(feature, -1.0, 1.0)
    assert nan is None
    lut = COLORMAPS["rdbu"].lut
    write_png(tmp_path / "c00.png", index, TEXT, lut)
    rgb = lut[index]
    write_png(tmp_path / "grid.png", rgb, TEXT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c00.png", "grid.png"]
    for name, mode in (("c00.png", "P"), ("grid.png", "RGB")):
        with Image.open(tmp_path / name) as im:
            im.verify()
        with Image.open(tmp_path / name) as im:
            assert im.mode == mode and im.text == TEXT
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)


def test_isal_and_zlib_streams_decode_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("isal")
    image = random_image((40, 50), 3) // 32  # compressible
    with_isal = png.encode_png(image)
    monkeypatch.setattr(png, "_isal", lambda: None)
    with_zlib = png.encode_png(image)
    assert with_isal != with_zlib  # really two encoders
    for data in (with_isal, with_zlib):
        np.testing.assert_array_equal(np.asarray(decode(data)), image)


@pytest.mark.parametrize(
    ("image", "palette", "message"),
    [
        (np.zeros((2, 2), np.uint8), np.zeros((257, 3), np.uint8), "1 to 256 colours"),
        (np.zeros((2, 2), np.uint8), np.zeros((0, 3), np.uint8), "1 to 256 colours"),
        (np.full((2, 2), 4, np.uint8), np.zeros((4, 3), np.uint8), "index 4 is past"),
        (np.zeros((2, 2, 3), np.uint8), np.zeros((256, 3), np.uint8), "palette needs"),
        (np.zeros((2, 2), np.uint8), np.zeros((256, 3), np.float32), "palette needs"),
        (np.zeros((0, 2), np.uint8), None, "1 to 2\\*\\*31-1"),
    ],
)
def test_bad_palettes_and_sizes_are_refused(tmp_path: Path, image, palette, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_png(tmp_path / "p.png", image, None, palette)
    assert list(tmp_path.iterdir()) == []


def test_unknown_filter_is_refused() -> None:
    with pytest.raises(ValueError, match="filter must be one of"):
        png.encode_png(np.zeros((2, 2), np.uint8), row_filter="best")


def row_filters(data: bytes) -> set[int]:
    """The filter-type bytes of a PNG's rows (8-bit, non-interlaced)."""
    kinds = dict(chunks(data))
    w, h, _, color_type = struct.unpack(">IIBB", kinds[b"IHDR"][:10])
    raw = zlib.decompress(b"".join(body for kind, body in chunks(data) if kind == b"IDAT"))
    stride = 1 + w * (3 if color_type == 2 else 1)
    assert len(raw) == h * stride
    return set(raw[::stride])


def test_write_png_filters_by_kind_or_as_asked(tmp_path: Path) -> None:
    lut = COLORMAPS["viridis"].lut
    index = random_image((6, 5))
    write_png(tmp_path / "map.png", index, None, lut)
    write_png(tmp_path / "grid.png", lut[index])
    write_png(tmp_path / "photo.png", lut[index], None, row_filter="up")
    found = {p.name: row_filters(p.read_bytes()) for p in tmp_path.iterdir()}
    assert found == {"map.png": {2}, "grid.png": {0}, "photo.png": {2}}


def test_apply_writes_input_up_grids_unfiltered_maps_up(tmp_path: Path) -> None:
    from cbr_cli.run.apply import run_apply
    from cbr_cli.run.records import ApplyOptions
    from cbr_cli.spec.flags import LayerFlags, build_spec

    photo = tmp_path / "photo.png"
    Image.fromarray(random_image((20, 24, 3))).save(photo)
    spec = build_spec(None, LayerFlags(out_channels=2, padding="same", bn="batch"))
    run_apply([str(photo)], spec, ApplyOptions(out_dir=str(tmp_path / "out")))
    folder = tmp_path / "out" / "photo"
    assert row_filters((folder / "input.png").read_bytes()) == {2}
    grids = sorted(folder.glob("*_grid.png"))
    maps = sorted(folder.glob("*_c0?.png"))
    assert len(grids) == 3 and len(maps) == 6
    assert all(row_filters(p.read_bytes()) == {0} for p in grids)
    assert all(row_filters(p.read_bytes()) == {2} for p in maps)
