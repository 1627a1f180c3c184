"""The file-writing floor of a batch run: write a finished output tree again, and nothing else.

Usage::

    python benchmarks/io_floor.py SOURCE OUT [-j 2]

Every image folder of ``SOURCE`` (a ``cbr batch`` output) is written into ``OUT`` by a pool
of ``-j`` processes, file by file as cbr writes them: a temporary file created next to the
destination, the bytes written, renamed into place. The bytes come from memory (``SOURCE`` is
read in the parent before the clock starts), so what is timed, and printed, is what any
program writing the same files pays: a process pool, creating, filling and renaming the
files (not the interpreter's start, ~20 ms). ``benchmarks/bench_batch.py`` runs it beside
cbr and the reference: its images/s over the reference's is the most any program writing
these files can reach on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

_TREE: dict[str, list[tuple[str, bytes]]] = {}


def _write_folder(args: tuple[str, str]) -> int:
    name, out = args
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, data in _TREE[name]:
        tmp = folder / f".{file}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, folder / file)
    return len(_TREE[name])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    for folder in sorted(p for p in args.source.iterdir() if p.is_dir()):
        _TREE[folder.name] = [(f.name, f.read_bytes()) for f in sorted(folder.iterdir())]
    tasks = [(name, str(args.out)) for name in _TREE]
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        count = sum(pool.imap_unordered(_write_folder, tasks))
    print(f"{time.perf_counter() - start:.4f} s: {count} files in {len(tasks)} folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
