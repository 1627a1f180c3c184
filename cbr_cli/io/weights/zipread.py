"""Zip archives (``.npz``, ``torch.save``, ``.keras``) opened and read with bounded sizes.

A member is read in chunks, so a central directory that lies about sizes costs at most the
bytes that are really there; a truncated or corrupt archive is a one-line error.
"""

from __future__ import annotations

import zipfile
from typing import BinaryIO

from cbr_cli.errors import CbrError
from cbr_cli.io.readfile import CHUNK

ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError)


def open_zip(path: str, handle: BinaryIO) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(handle)
    except ZIP_ERRORS as exc:
        raise CbrError(
            f"{path}: not a readable zip archive, truncated? ({_one_line(exc)})"
        ) from None


def read_member(
    path: str, archive: zipfile.ZipFile, member: str, limit: int, what: str | None = None
) -> bytes:
    """The bytes of ``member``, at most ``limit`` of them (more is an error, not a read)."""
    what = what or member
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise CbrError(f"{path}: {what}: missing from the archive ({member})") from None
    if info.file_size > limit:
        raise CbrError(
            f"{path}: {what}: {info.file_size} bytes declared, more than the {limit} allowed"
        )
    parts = []
    total = 0
    try:
        with archive.open(info) as stream:
            while True:
                chunk = stream.read(min(CHUNK, limit + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise CbrError(f"{path}: {what}: more than the {limit} bytes allowed")
                parts.append(chunk)
    except NotImplementedError as exc:  # compression methods zipfile lacks
        raise CbrError(f"{path}: {what}: {exc}") from None
    except ZIP_ERRORS as exc:
        raise CbrError(f"{path}: {what}: corrupt or truncated ({_one_line(exc)})") from None
    return b"".join(parts)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_head(path: str, archive: zipfile.ZipFile, member: str, nbytes: int, what: str) -> bytes:
    """The first (at most) ``nbytes`` of ``member`` -- enough for a header."""
    try:
        with archive.open(member) as stream:
            return stream.read(nbytes)
    except NotImplementedError as exc:
        raise CbrError(f"{path}: {what}: {exc}") from None
    except ZIP_ERRORS as exc:
        raise CbrError(f"{path}: {what}: corrupt or truncated ({_one_line(exc)})") from None
