"""Read ``.npy`` files named in a pipeline: the shape from the header, or the data checked.

Errors name where the path was given (``FILE:LINE:COL: key.path`` or a flag).  The file
must be a regular file (:func:`cbr_cli.io.readfile.open_regular`: a FIFO or a device is
refused, not read), and its header is checked -- dtype, and the expected shape when one
is given -- before any data is read, so at most the bytes that shape needs are read.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.io.readfile import open_regular

MAX_HEADER_BYTES = 10_000
"""Longest ``.npy`` header read (NumPy's own default limit for untrusted files)."""


def _open(path: str, where: str) -> BinaryIO:
    def error(reason: str) -> CbrError:
        if reason.startswith("is "):  # "is a FIFO, not a regular file"
            return CbrError(f"{where}: {path} {reason} (expected a .npy file)")
        return CbrError(f"{where}: cannot read {path} ({reason})")

    return open_regular(path, error)


def _header(handle: BinaryIO, path: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header; the handle is left at the start of the data."""
    fmt = np.lib.format
    try:
        magic = handle.read(6)
        if magic != b"\x93NUMPY":
            raise CbrError(f"{where}: {path} is not a .npy file (no NumPy header)")
        handle.seek(0)
        version = fmt.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        # Version 3.0 only allows UTF-8 in field names (structured dtypes, refused by the
        # callers); its header is laid out as 2.0's.
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(handle, max_header_size=MAX_HEADER_BYTES)
    except OSError as exc:
        raise CbrError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    except (ValueError, SyntaxError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise CbrError(f"{where}: {path} is not a .npy file ({reason})") from None
    return tuple(int(n) for n in shape), dtype


def npy_shape(path: str, where: str) -> tuple[int, ...]:
    """The array shape stored in ``path``'s header, without reading the data."""
    with _open(path, where) as handle:
        return _header(handle, path, where)[0]


def load_npy(path: str, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Load a real, finite array from ``path`` (no pickles), optionally of a given shape.

    Returns
    -------
    ndarray
        float32 for anything but float64 (kept), per :func:`cbr_cli.core.ops.as_float`.
    """
    with _open(path, where) as handle:
        found, dtype = _header(handle, path, where)
        if dtype.hasobject:
            raise CbrError(
                f"{where}: {path} holds Python objects (a pickle), which cbr never loads"
            )
        if dtype.kind not in "biuf":
            raise CbrError(f"{where}: {path} must hold a real numeric array (got dtype {dtype})")
        if shape is not None and found != shape:
            raise CbrError(f"{where}: {path} must have shape {shape} (got {found})")
        handle.seek(0)
        try:
            # Reads exactly the bytes the (checked) header's shape needs, no more.
            array = np.lib.format.read_array(
                handle, allow_pickle=False, max_header_size=MAX_HEADER_BYTES
            )
        except OSError as exc:
            raise CbrError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
        except ValueError as exc:
            reason = " ".join(str(exc).split())
            raise CbrError(f"{where}: {path} is not a readable .npy array ({reason})") from None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CbrError(f"{where}: {path} contains NaN or inf values")
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
