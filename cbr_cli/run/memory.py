"""How much memory a new allocation may use: checked before cbr allocates anything large.

Linux does not make numpy raise MemoryError for an array larger than memory: it lets
the allocation succeed and kills the process when the pages are touched.  So sizes are
estimated and compared with this before the arrays are made.
"""

from __future__ import annotations

import os


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), if known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
