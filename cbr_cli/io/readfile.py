"""Open a file cbr reads: a regular file only, and never more of it than a size limit.

Every reader (configs, ``.npy`` weights and statistics, images, digests) opens its file
through :func:`open_regular`, so a FIFO, a device such as ``/dev/zero`` or a directory
given where a file is expected is a one-line error saying what it is, instead of an
``open`` that blocks forever (a FIFO with no writer) or a read that never ends (a
device).  The path is checked with ``os.stat`` before it is opened (a device is never
opened at all), opened with ``O_NONBLOCK`` (so a FIFO swapped in between cannot block
the ``open`` itself) and checked again on the open descriptor (``os.fstat``), which is
what the reads then use.

Imports only :mod:`cbr_cli.errors`, so that the lowest layers can use it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import BinaryIO

from cbr_cli.errors import CbrError

CHUNK = 1 << 20
"""Bytes per ``read()`` of :func:`read_exact`: memory grows only with data that is there."""

ErrorFactory = Callable[[str], CbrError]
"""Builds the CbrError for a reason such as ``"is a FIFO, not a regular file"``."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind(mode: int) -> str:
    """What a non-regular file is, in words (``"a FIFO"``), from ``st_mode``."""
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def not_regular_reason(mode: int) -> str | None:
    """None for a regular file, else ``"is a FIFO, not a regular file"`` and the like."""
    if stat.S_ISREG(mode):
        return None
    return f"is {kind(mode)}, not a regular file"


def os_reason(exc: OSError) -> str:
    """A few words for why ``open``/``stat`` failed (``"file not found"``, ...)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, NotADirectoryError):
        return "a folder on its path is not a directory"
    return exc.strerror or str(exc)


def _default_error(path: str) -> ErrorFactory:
    return lambda reason: CbrError(f"{path}: {reason}")


def open_regular(path: str | os.PathLike[str], error: ErrorFactory | None = None) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file.

    Parameters
    ----------
    path : str or path-like
    error : callable, optional
        ``error(reason)`` returns the CbrError to raise (default: ``"PATH: reason"``);
        ``reason`` is e.g. ``"file not found"`` or ``"is a FIFO, not a regular file"``.

    Returns
    -------
    file object
        A binary reader on the checked descriptor (``O_NONBLOCK`` changes nothing for a
        regular file); the caller closes it (``with open_regular(...) as handle:``).

    Raises
    ------
    CbrError
        From ``error``: missing, unreadable, or not a regular file.
    """
    name = os.fspath(path)
    make = error or _default_error(name)
    try:
        reason = not_regular_reason(os.stat(name).st_mode)
    except OSError as exc:
        raise make(os_reason(exc)) from None
    if reason is not None:
        raise make(reason)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise make(os_reason(exc)) from None
    try:
        reason = not_regular_reason(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise make(os_reason(exc)) from None
    if reason is not None:
        os.close(fd)
        raise make(reason)
    return os.fdopen(fd, "rb")


def read_regular(
    path: str | os.PathLike[str], limit: int, error: ErrorFactory | None = None
) -> bytes:
    """The bytes of the regular file ``path``, refused if it holds more than ``limit``.

    At most ``limit + 1`` bytes are read, whatever the file claims its size is (a file
    that grows while it is read is still bounded).

    Raises
    ------
    CbrError
        As :func:`open_regular`, or ``"larger than LIMIT bytes"``.
    """
    make = error or _default_error(os.fspath(path))
    with open_regular(path, make) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise make(f"cannot read ({os_reason(exc)})") from None
    if len(data) > limit:
        raise make(f"larger than {limit} bytes")
    return data


def open_sized(
    path: str | os.PathLike[str], error: ErrorFactory | None = None
) -> tuple[BinaryIO, int]:
    """:func:`open_regular`, refusing an empty file too (reason ``"file is empty"``).

    Returns
    -------
    (file, size)
        The open binary reader (the caller closes it) and the size of the checked
        descriptor in bytes.
    """
    make = error or _default_error(os.fspath(path))
    handle = open_regular(path, make)
    try:
        size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        handle.close()
        raise make(f"cannot read ({os_reason(exc)})") from None
    if size == 0:
        handle.close()
        raise make("file is empty")
    return handle, size


def read_exact(handle: BinaryIO, nbytes: int, path: str, what: str) -> bytes:
    """Read exactly ``nbytes`` from ``handle`` in chunks, or raise naming ``path`` and ``what``.

    Reading in chunks means a header that declares more data than the file holds costs
    only the bytes that exist before the error, never an allocation of the declared size.

    Raises
    ------
    CbrError
        ``"PATH: WHAT: truncated (expected N bytes, got M)"``, or ``cannot read (...)``.
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
