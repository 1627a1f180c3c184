"""glibc's malloc told to keep the memory cbr frees, so each image reuses pages, not faults.

Per image, cbr allocates and frees many blocks of 1-30 MB: each channel's colour index and
its float32 scratch, Pillow's RGB image per grid tile, the filtered rows and deflate
buffers of each PNG (on the encoder threads, each with its own malloc arena). glibc
serves blocks above its ``mmap`` threshold (128 KiB, raised dynamically) with a fresh
``mmap`` and unmaps them on ``free``, and gives the top of a heap back to the kernel once
128 KiB of it is free; every reuse then faults each 4 KiB page in again, zeroed by the
kernel. Measured on the 2-core VM (``cbr apply`` of a 1024² RGB image through one
16-channel block, ``--no-report``, 5 rounds interleaved with the previous commit): 197 000
page faults, 0.5-1.2 s of system time, 1.13 s end to end (median; 1.07-1.76) before;
17 700 faults, 0.13-0.39 s, 0.80 s (0.78-1.10) with the settings below. A ``cbr batch``
worker (288² crops) took 3 900 faults, 15 MB, per image; now next to none.

The settings (``mallopt``, glibc's ``malloc.h``):

* ``M_MMAP_THRESHOLD`` 32 MiB, glibc's maximum: smaller blocks come from the heaps and
  are reused; larger ones (whole stage arrays of big images) are still mapped;
* ``M_TRIM_THRESHOLD`` 1 GiB: freed memory at the top of a heap is kept for the next
  image, not returned (the process keeps its high-water mark, which the memory check
  already counts as the peak: :mod:`cbr_cli.run.memory`);
* ``M_TOP_PAD`` 64 MiB: heaps grow and shrink in steps of 64 MiB (measured: with the
  two settings above alone, 150 000 of the 200 000 faults remained).

Before these, ``cbr apply`` fixed the threshold at 128 KiB, so that freed arrays left
the process: glibc's dynamic threshold alone (no trim setting) had grown the peak RSS by
up to 40% over the memory check's model. With these settings the peaks measured by
``tests/run/test_memory_peak.py`` (six runs, 221-390 MiB) stay where they were with the
fixed threshold (within 7% either way, the spread between runs of either), and
:data:`~cbr_cli.run.memory.LATE_IMPORTS` covers the engine and encoder threads' arenas.

They are set once per process that runs images (``cbr apply``, every ``cbr batch`` and
``cbr calibrate`` worker, the calling process with ``-j 1``), and only with glibc. A
user's own ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
``GLIBC_TUNABLES`` take precedence: then nothing is changed. So do a Dask cluster's:
its nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the system,
which the cluster's memory monitor counts on.
"""

from __future__ import annotations

import os

__all__ = ["SETTINGS", "USER_SETTINGS", "keep_freed_memory"]

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
"""``mallopt`` parameter -> value, as described in the module docstring."""

USER_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)
"""Environment variables through which a user (or a Dask nanny) sets malloc's parameters."""
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` to this process's malloc, once; whether they are in force.

    False, and nothing changed, when the C library is not glibc or the user set malloc's
    parameters through the environment.
    """
    global _done
    if _done is None:
        _done = False
        if not any(name in os.environ for name in USER_SETTINGS):
            try:
                import ctypes

                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version"):  # glibc, not musl or macOS
                    results = [libc.mallopt(k, v) for k, v in SETTINGS.items()]
                    _done = all(r == 1 for r in results)
            except (OSError, TypeError, AttributeError):  # no C library to load by name
                pass
    return _done
