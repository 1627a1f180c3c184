"""Benchmarks time cbr as users run it: with its modules' bytecode cached.

A pip install compiles ``.pyc`` files, and an editable one writes them on first import --
unless ``PYTHONDONTWRITEBYTECODE`` is set, as it is on some CI machines and sandboxes
(this one): then every fresh interpreter compiles each cbr module it imports from source,
~0.1 s per ``cbr batch`` parent and again in workers for the modules they import late.
:func:`cache_bytecode` lets the benchmark's child processes (cbr and the references
alike) cache bytecode in a folder of the benchmark's, so nothing is written into the
checkout; the first, untimed run of each command fills it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_bytecode(folder: str | os.PathLike[str]) -> None:
    """Child processes started from now on cache bytecode under ``folder``."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "pycache")
