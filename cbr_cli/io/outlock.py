"""One cbr run at a time per output folder: an exclusive lock on ``OUT/.cbr-lock``.

Two runs writing into one ``OUT`` would clear each other's files, report each
other's images as failed and write reports from a mix of both. So every command that
writes into ``OUT`` (``cbr batch``, ``cbr apply``) holds :func:`out_lock` for as long
as it reads or writes anything there; a second run is refused at once, before it
touches a file, with a one-line error naming the first run's pid.

How
---
``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``OUT/.cbr-lock``, a name cbr owns. The kernel
drops the lock when the holder's last descriptor closes, so a run that is killed
(SIGKILL, OOM, power loss) never leaves a stale lock behind: no pid checks, no
timeouts. Worker processes forked by :mod:`cbr_cli.batch.pool` inherit the descriptor
(they die with the parent); programs cbr executes do not (``O_CLOEXEC``).

The file is opened with ``O_NOFOLLOW`` (a symlink planted in ``OUT`` is refused, not
followed) and must be a regular file. While held it contains ``<pid> <command>``, for
the error message of a second run and for a curious user.

The holder deletes the file when it is done, *before* it lets go of the lock, so a
finished run leaves only its outputs in OUT. Deleting a lock file is safe only with
a check on the other side, and cbr makes it: after ``flock`` succeeds, a run checks
that the path still names the very file it locked (same device and inode) and
otherwise starts again. Without that check a run that opened the file just before
the holder deleted it would lock a file no longer in OUT while a third run creates
and locks a new one -- two runs at once. A run that is killed leaves the file (with
its dead pid): the next run simply locks and reuses it.

``flock`` works on local file systems and on NFS (Linux >= 2.6.12 emulates it with
POSIX byte-range locks). Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import time
from collections.abc import Iterator

from cbr_cli.errors import CbrError

LOCK_FILE = ".cbr-lock"
_PID_WAIT = 0.5
"""Seconds a refused run waits for the holder to write its pid (it does so at once)."""


def _holder(fd: int) -> int | None:
    """The pid written in the lock file by the run that holds it, if it can be read."""
    deadline = time.monotonic() + _PID_WAIT
    while True:
        with contextlib.suppress(OSError):
            words = os.pread(fd, 64, 0).split()
            if words and words[0].isdigit():
                return int(words[0])
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)  # the holder has the lock but not written its pid yet


def _command() -> str:
    """This process's command line, on one line."""
    words = [os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]]
    return " ".join(words).replace("\n", " ").replace("\r", " ")


_ATTEMPTS = 100
"""Times to retry when the lock file is replaced between opening and locking it."""


def _same_file(fd: int, path: str) -> bool:
    """True if ``path`` still names the file open as ``fd`` (not deleted, not replaced)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _open(path: str, where: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CbrError(f"{where}: {LOCK_FILE} is a symbolic link; remove it", 1) from None
        raise CbrError(f"{where}: cannot open {path}: {exc.strerror or exc}", 1) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device planted there
        os.close(fd)
        raise CbrError(f"{where}: {path} is not a regular file; remove it", 1)
    return fd


@contextlib.contextmanager
def out_lock(out_dir: str | os.PathLike[str], flag: str = "--out") -> Iterator[None]:
    """Hold the exclusive lock on the output folder ``out_dir`` (which must exist).

    Parameters
    ----------
    out_dir : str or PathLike
        The folder the run writes into.
    flag : str
        How the user named it, for messages (``--out``).

    Raises
    ------
    CbrError
        Exit code 2: another cbr run holds the lock (nothing is touched). Exit code 1:
        the lock file cannot be created, opened or locked, or is not a regular file.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not serialised
        yield
        return
    where = f"{flag} {os.fspath(out_dir)}"
    path = os.path.join(out_dir, LOCK_FILE)
    for _ in range(_ATTEMPTS):
        fd = _open(path, where)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            who = "another cbr run" + (f" (pid {pid})" if pid is not None else "")
            raise CbrError(
                f"{where}: {who} is writing here; wait for it or choose another {flag}"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise CbrError(f"{where}: cannot lock {path}: {exc.strerror or exc}", 1) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder deleted it between our open and flock: start again
    else:
        raise CbrError(f"{where}: cannot lock {path}: it keeps being replaced", 1)
    try:
        note = f"{os.getpid()} {_command()}\n".encode("utf-8", "replace")
        with contextlib.suppress(OSError):  # the note is informative; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked (see the module docstring)
        os.close(fd)  # releases the lock (forked workers are gone by now)
