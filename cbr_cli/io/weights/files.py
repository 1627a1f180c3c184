"""Bounded reads of weight files: regular files only, every size checked before it is used.

Every message starts with the file's path as the user gave it, so the CLI can print it as
``error: model.pth: ...`` on one line.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from cbr_cli.errors import CbrError

CHUNK = 1 << 20  # bytes per read(): memory grows only with data that really is there


def open_regular(path: str) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a non-empty regular file.

    Returns
    -------
    (file, size)
        The open binary file (caller closes it) and its size in bytes.

    Raises
    ------
    CbrError
        For a missing file, a directory, a FIFO/socket/device (reading one could block or
        never end), an empty file, or an OS error -- one line naming ``path``.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CbrError(f"{path}: no such file") from None
    except OSError as exc:
        raise CbrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    _check_regular(path, info)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since stat(), open() must not hang.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CbrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        _check_regular(path, info)
    except CbrError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), info.st_size


def _check_regular(path: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise CbrError(f"{path}: is a directory, not a weight file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
        raise CbrError(f"{path}: is {kind}, not a regular file")
    if info.st_size == 0:
        raise CbrError(f"{path}: file is empty")


def read_exact(handle: BinaryIO, nbytes: int, path: str, what: str) -> bytes:
    """Read exactly ``nbytes`` from ``handle`` in chunks, or raise naming ``what``.

    Reading in chunks means a header that declares more data than the file holds costs
    only the bytes that exist before the error, never an allocation of the declared size.
    """
    parts = []
    left = nbytes
    while left > 0:
        try:
            chunk = handle.read(min(CHUNK, left))
        except OSError as exc:
            raise CbrError(f"{path}: {what}: cannot read ({exc.strerror or exc})") from None
        if not chunk:
            got = nbytes - left
            raise CbrError(f"{path}: {what}: truncated (expected {nbytes} bytes, got {got})")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_file(path: str, limit: int, what: str = "file") -> bytes:
    """The whole of ``path`` (a regular file of at most ``limit`` bytes)."""
    handle, size = open_regular(path)
    with handle:
        if size > limit:
            raise CbrError(f"{path}: {what} is {size} bytes, more than the limit of {limit}")
        return read_exact(handle, size, path, what)
