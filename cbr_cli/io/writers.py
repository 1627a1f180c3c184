"""Writing files: PNG, ``.npy`` and JSON, every one atomically.

This is the only module that writes files. It decides how bytes reach the disk, never
names or layout.

Atomicity: data goes to a new temporary file in the destination's directory (named
``.<name>.<random>.tmp``), is flushed and ``fsync``-ed, and then ``os.replace``-d over
the destination. A reader sees the old file or the complete new one, never a partial one; on
any failure (including an exception raised by the caller inside :func:`atomic_writer`) the
temporary file is removed and an existing destination is left untouched. The new file
gets the permissions an ordinary ``open()`` would give it (``0o666`` minus the umask), or
keeps those of the file it replaces.

Errors from the operating system (missing or non-directory parent, permission denied,
disk full, destination is a directory) become :class:`~cbr_cli.errors.CbrError` naming
the path, with exit code 1.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from cbr_cli.errors import CbrError

__all__ = [
    "atomic_write_bytes",
    "atomic_writer",
    "ensure_dir",
    "to_jsonable",
    "write_json",
    "write_npy",
    "write_png",
]

PathLike = str | os.PathLike[str]


def _os_error(action: str, path: Path, exc: OSError) -> CbrError:
    reason = exc.strerror or str(exc)
    return CbrError(f"cannot {action} {path}: {reason}", exit_code=1)


def _create_temp(dest: Path) -> tuple[int, str]:
    """Create ``.<name>.<random>.tmp`` next to ``dest``; return its descriptor and path.

    Unlike ``tempfile.mkstemp`` (always mode 0o600) this creates the file as ``open()``
    would, 0o666 minus the umask, without reading the process-wide umask.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(dest.parent, f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(dest.parent))


def _existing_mode(path: Path) -> int | None:
    """Permission bits of the regular file at ``path``, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _remove_quietly(path: str) -> None:
    # Cleanup after a failure that is already being reported: a second error here
    # (the file is already gone, the directory became unwritable) must not mask it.
    with contextlib.suppress(OSError):
        os.unlink(path)


def ensure_dir(path: PathLike) -> Path:
    """Create directory ``path`` and its parents if missing; return it as a Path.

    Raises
    ------
    CbrError
        ``path`` or one of its parents exists and is not a directory, or permission denied.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CbrError(f"cannot create directory {p}: a file is in the way", exit_code=1) from None
    except OSError as exc:
        raise _os_error("create directory", p, exc) from exc
    return p


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "wb", *, durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : str or PathLike
        The destination; its directory must exist.
    mode : {"wb", "w"}
        Binary, or text (UTF-8, ``\\n`` line endings).
    durable : bool
        fsync before the rename, so the new content survives a power loss too. The
        rename alone already guarantees that a killed process leaves the old file or
        the new one, never a partial one.

    Raises
    ------
    CbrError
        Any OS error while creating, writing or replacing (naming ``path``). Other
        exceptions from the block propagate unchanged; the destination is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', but got mode={mode!r}")
    dest = Path(path)
    try:
        fd, tmp = _create_temp(dest)
    except OSError as exc:
        raise _os_error("write", dest, exc) from exc
    text_options = {} if mode == "wb" else {"encoding": "utf-8", "newline": "\n"}
    done = False
    try:
        with os.fdopen(fd, mode, **text_options) as handle:
            existing_mode = _existing_mode(dest)
            if existing_mode is not None and hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), existing_mode)  # a replaced file keeps its mode
            yield handle
            handle.flush()
            if durable:  # survive power loss, not only a killed process
                os.fsync(handle.fileno())
        os.replace(tmp, dest)
        done = True
    except OSError as exc:
        raise _os_error("write", dest, exc) from exc
    finally:
        if not done:
            _remove_quietly(tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def write_png(
    path: PathLike,
    image: np.ndarray,
    text: Mapping[str, str | int | float] | None = None,
    palette: np.ndarray | None = None,
    *,
    row_filter: str | None = None,
) -> None:
    """Encode ``image`` as PNG at ``path``, with ``text`` as metadata chunks.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3) or (H, W), uint8
        RGB, or greyscale.
    text : mapping of str to str, int or float, optional
        Stored as ``tEXt`` chunks (``iTXt`` when a value is not Latin-1); numbers are
        written with ``str()``, which round-trips floats. Keys: 1-79 printable ASCII characters.
        Pillow reads them back as ``Image.open(path).text``.
    palette : ndarray of shape (N, 3), uint8, optional
        With a 2-D ``image`` of indices below ``N <= 256``: an indexed-colour PNG (one byte
        per pixel, a third of the bytes of RGB to compress; viewers show the same colours).
    row_filter : {"none", "sub", "up", "average", "paeth"}, optional
        The PNG filter of every row. Default: "up" for palette and greyscale images, "none"
        for RGB, which suits colour-mapped montages; pass "up" for photographs (a third
        smaller than "none", as fast).

    Notes
    -----
    Encoded by :func:`cbr_cli.io.png.encode_png` (ISA-L's deflate when ``isal`` is
    installed, zlib's level 1 otherwise); the default filters are the ones
    ``benchmarks/bench_png.py`` measured fastest and smallest on cbr's feature maps and
    montages. The deflate runs without the GIL, so threads encode in parallel.
    """
    from cbr_cli.io.png import png_parts

    parts = png_parts(image, text, palette, row_filter=row_filter)
    # Feature maps are bulk output: no fsync (a killed process still leaves old or new).
    with atomic_writer(path, "wb", durable=False) as f:
        f.writelines(parts)


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """Save ``array`` in NumPy ``.npy`` format at ``path`` (no pickled objects)."""
    with atomic_writer(path, "wb", durable=False) as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def to_jsonable(obj: object) -> object:
    """``obj`` with numpy scalars/arrays and tuples made plain, and NaN/inf made ``None``.

    JSON has no NaN or infinity (``json.dumps`` would write the invalid tokens ``NaN`` and
    ``Infinity``); statistics of a map with non-finite values therefore read ``null``.

    Raises
    ------
    TypeError
        A value that JSON cannot represent, or a non-string dict key.
    """
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, but got {key!r}")
            out[key] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def write_json(path: PathLike, obj: object, *, compact: bool = False, durable: bool = True) -> None:
    """Write ``obj`` as JSON at ``path``: UTF-8, sorted keys, indent 2, trailing newline.

    NaN and infinities are written as ``null`` (see :func:`to_jsonable`). ``compact``:
    no indentation or spaces, for machine-read state (done-markers: a third of the size).
    ``durable``: fsync-ed before the rename (see :func:`atomic_writer`).
    """
    layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 2}
    text = json.dumps(
        to_jsonable(obj), sort_keys=True, allow_nan=False, ensure_ascii=False, **layout
    )
    with atomic_writer(path, "w", durable=durable) as f:
        f.write(text + "\n")
