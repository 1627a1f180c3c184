"""Per-channel statistics as compact, exact columns (the statistics of a done-marker).

A stage's statistics are the six columns of :data:`STAT_KEYS`, one value per channel.
Each column is stored as ``[dtype, payload]``: ``dtype`` a little-endian numpy type
string, ``payload`` the base64 text of the zlib-compressed values, byte-shuffled (all
first bytes, then all second bytes, ...: HDF5's shuffle filter). The dtype is the
smallest that gives back *exactly* the float64 numbers cbr computed, so reports built
from a marker (``stats.csv`` writes floats with ``repr``) have the bytes they would have
from the numbers themselves:

* ``min``, ``max``: ``<f4`` when every value is a float32 (the maps are float32),
  else ``<f8``;
* ``mean``, ``std``: ``<f8`` (float64 accumulations: there is no shorter exact form);
* ``frac_zero``, ``frac_negative``: ``<u4`` (``<u8`` past 2**32) counts of the stage's
  ``H*W`` values when ``count / (H*W)`` gives back every fraction exactly (as
  :func:`cbr_cli.core.stats.channel_stats` computes them, always), else ``<f8``.

Decoded values are floats, and ``None`` for a non-finite value: what the JSON markers
of earlier versions held (``null``) and what ``stats.csv`` writes as an empty cell.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

STAT_KEYS = ("min", "max", "mean", "std", "frac_zero", "frac_negative")
FRACTIONS = ("frac_zero", "frac_negative")
DTYPES = ("<f4", "<f8", "<u4", "<u8")
_COUNTS = ("<u4", "<u8")


class ColumnError(ValueError):
    """A column that is not one as :func:`encode_column` writes it (the message says why)."""


def _pack(values: np.ndarray) -> list[str]:
    # Byte-shuffled first (HDF5's shuffle filter: every value's first byte, then every
    # second byte, ...): exponents and high bytes alike across channels compress well.
    shuffled = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), -1).T
    payload = zlib.compress(shuffled.tobytes(), 9)
    return [values.dtype.str, base64.b64encode(payload).decode("ascii")]


def encode_column(key: str, values: Sequence[float | None], count: int) -> list[str]:
    """One column of :data:`STAT_KEYS` (``None`` meaning a non-finite value) over a stage
    of ``count`` values per channel, as ``[dtype, payload]`` (see the module docstring)."""
    column = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if key in FRACTIONS and np.isfinite(column).all():
        with np.errstate(over="ignore"):  # a "fraction" of 1e308: no count, fractions below
            counts = np.rint(column * count)
        if np.array_equal(counts / count, column) and ((counts >= 0) & (counts <= count)).all():
            return _pack(counts.astype("<u4" if count < 2**32 else "<u8"))
    if key in ("min", "max"):
        with np.errstate(over="ignore"):
            narrow = column.astype("<f4")
        if np.array_equal(narrow.astype(np.float64), column, equal_nan=True):
            return _pack(narrow)
    return _pack(column.astype("<f8"))


def encode_stats(stats: Mapping[str, Sequence[float | None]], count: int) -> dict[str, list[str]]:
    """Every column of :data:`STAT_KEYS` from ``{key: values}``."""
    return {key: encode_column(key, stats[key], count) for key in STAT_KEYS}


def decode_column(entry: object, key: str, channels: int, count: int) -> list[float | None]:
    """The values of a column written by :func:`encode_column` (``None``: non-finite).

    Raises
    ------
    ColumnError
        Not ``[dtype, payload]``, an unknown dtype, a payload that is not base64 of
        zlib data of exactly ``channels`` values, or values out of their range
        (fractions in [0, 1], counts at most ``count``, ``std`` >= 0).
    """
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
        raise ColumnError("expected [dtype, payload], two strings")
    dtype, text = entry
    if dtype not in DTYPES or (dtype in _COUNTS and key not in FRACTIONS):
        raise ColumnError(f"unknown dtype {dtype!r}")
    expected = channels * np.dtype(dtype).itemsize
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, expected + 1)  # bounded: no zlib bomb
    except (binascii.Error, UnicodeEncodeError, zlib.error):
        raise ColumnError("payload: not base64 text of zlib data") from None
    if len(raw) != expected or not inflate.eof or inflate.unused_data:
        raise ColumnError(f"expected {channels} values of {dtype}")
    array = np.frombuffer(raw, dtype=np.uint8).reshape(-1, channels).T.copy().view(dtype)[:, 0]
    if dtype in _COUNTS:
        if (array > count).any():
            raise ColumnError(f"expected counts of at most {count}")
        return [k / count for k in array.tolist()]  # Python ints: exact int / int
    wide = array.astype(np.float64)
    finite = np.isfinite(wide)
    checked = wide[finite]
    if key in FRACTIONS and ((checked < 0) | (checked > 1)).any():
        raise ColumnError("expected fractions in [0, 1]")
    if key == "std" and (checked < 0).any():
        raise ColumnError("expected numbers >= 0")
    # Whole arrays to Python floats at once (a numpy scalar per channel cost 1 us each).
    return [v if ok else None for v, ok in zip(wide.tolist(), finite.tolist(), strict=True)]
