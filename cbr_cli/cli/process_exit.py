"""Ending the ``cbr`` process: everything the interpreter does at exit but its teardown.

When a Python program ends, the interpreter joins its non-daemon threads, runs the
``atexit`` callbacks, flushes stdout and stderr, and then tears itself down: every
module's namespace cleared, every object freed, in dependency order. For cbr (numpy,
Pillow, typer, rich and cbr's own modules loaded) that last part took 50-85 ms
per command -- about what ``cbr --help`` takes in all -- and nothing of cbr's depends on it:
files are closed (and fsync-ed where they must be) by the code that writes them,
worker pools are shut down before a command returns. :func:`leave` does the rest, in
the interpreter's order, and ends the process with :func:`os._exit`.
"""

import atexit
import errno
import os
import sys
import threading
from typing import NoReturn


def _status(code: object) -> int:
    """``SystemExit.code`` as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")  # sys.exit("message"): printed, status 1
    return 1


def output_failed(exc: OSError) -> int:
    """Say (on stderr, if it still takes it) that the output could not be written; the
    exit status, 1. A reader that has gone away (``EPIPE``: ``cbr kernels | head -1``)
    is no error to report: silent, as Click is for such a pipe."""
    if exc.errno != errno.EPIPE:
        reason = exc.strerror or str(exc)
        # No file name: a write to an open stream (stdout); else a file the code missed.
        line = (
            f"cannot write the output: {reason}"
            if exc.filename is None
            else f"{exc.filename}: {reason}"
        )
        try:
            sys.stderr.write(f"error: {line}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr is gone too: the exit status says it
    return 1


def leave(code: object = 0) -> NoReturn:
    """End the process with ``code`` (a ``SystemExit.code``), skipping the teardown.

    In the interpreter's own order: non-daemon threads joined (``threading._shutdown``,
    which also shuts down idle ``concurrent.futures`` pools), ``atexit`` callbacks run
    (multiprocessing's, ``weakref.finalize``'s), stdout and stderr flushed: output that
    cannot be written (a full disk, a closed pipe) makes the status 1
    (:func:`output_failed`). Where this interpreter lacks the private hooks, a plain
    :func:`sys.exit`.
    """
    status = _status(code)
    shutdown = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exitfuncs is None:
        sys.exit(status)
    shutdown()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except OSError as exc:
            status = status or output_failed(exc)
        except ValueError:  # a stream closed under us
            status = status or 1
    os._exit(status)
