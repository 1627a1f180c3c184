"""Read ``.npy`` files named in a pipeline: the shape from the header, or the data checked.

Errors name where the path was given (``FILE:LINE:COL: key.path`` or a flag).
"""

from __future__ import annotations

import numpy as np

from cbr_cli.errors import CbrError


def _check_magic(path: str, where: str) -> None:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise CbrError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    if magic != b"\x93NUMPY":
        raise CbrError(f"{where}: {path} is not a .npy file (no NumPy header)")


def npy_shape(path: str, where: str) -> tuple[int, ...]:
    """The array shape stored in ``path``'s header, without reading the data."""
    _check_magic(path, where)
    try:
        # A memory map reads the header only; the data stays on disk.
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except OSError as exc:
        raise CbrError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CbrError(f"{where}: {path} is not a .npy file ({exc})") from None
    return tuple(int(n) for n in shape)


def load_npy(path: str, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Load a real, finite array from ``path`` (no pickles), optionally of a given shape.

    Returns
    -------
    ndarray
        float32 for anything but float64 (kept), per :func:`cbr_cli.core.ops.as_float`.
    """
    _check_magic(path, where)
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise CbrError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CbrError(f"{where}: {path} is not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise CbrError(f"{where}: {path} must hold a real numeric array (got dtype {array.dtype})")
    if shape is not None and array.shape != shape:
        raise CbrError(f"{where}: {path} must have shape {shape} (got {array.shape})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CbrError(f"{where}: {path} contains NaN or inf values")
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
