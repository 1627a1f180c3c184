"""keep_freed_memory: blocks freed by one image are reused by the next, not faulted in again.

Each check runs in a fresh interpreter: malloc's parameters are per process and stay set.
The churn loop is what cbr does per channel (a float32 scratch and a uint8 index of a
1024² map, Pillow's RGB image of it, shrunk); page faults are the kernel's count for the
thread (``RUSAGE_THREAD``), over the loop's second pass.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from cbr_cli.run.allocator import USER_SETTINGS

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt's parameters are glibc's",
)

CHURN = """
import json, resource, sys
import numpy as np
from PIL import Image
from cbr_cli.run.allocator import keep_freed_memory

kept = keep_freed_memory() if sys.argv[1] == "keep" else None
index = np.zeros((1024, 1024), np.uint8)

def churn():
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(20):
        scratch = np.ones((1024, 1024), np.float32)
        scratch *= 2
        small = scratch.astype(np.uint8)
        tile = Image.frombytes("P", (1024, 1024), index.tobytes()).convert("RGB").reduce(4)
        del scratch, small, tile
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

churn()
print(json.dumps({"kept": kept, "faults": churn()}))
"""


def _environ(**extra: str) -> dict[str, str]:
    """This environment without malloc settings (a Dask cluster started in this process
    leaves ``MALLOC_TRIM_THRESHOLD_`` in it), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in USER_SETTINGS}, **extra}


def _churn(mode: str, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        env=_environ(**env),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    plain = _churn("plain")
    kept = _churn("keep")
    # 20 rounds of ~10 MB: glibc's defaults map and unmap them, ~2 500 faults a round
    # (measured 45 000 in all); kept, the second pass reuses the first's pages (measured 0).
    assert plain["faults"] > 5000
    assert kept["kept"] is True
    assert kept["faults"] < plain["faults"] / 20


@glibc
@pytest.mark.parametrize("variable", ["MALLOC_TOP_PAD_", "GLIBC_TUNABLES"])
def test_the_users_own_malloc_settings_are_left_alone(variable):
    value = "glibc.malloc.top_pad=0" if variable == "GLIBC_TUNABLES" else "0"
    assert _churn("keep", **{variable: value})["kept"] is False


POOL = """
import json, sys
from cbr_cli.batch.pool import WorkerPool
from cbr_cli.run import allocator

def kept(_):
    from cbr_cli.run import allocator
    return allocator._done

if __name__ == "__main__":
    with WorkerPool(int(sys.argv[1]), None) as pool:
        workers = sorted({str(k) for _, k in pool.run(kept, range(4))})
    print(json.dumps({"parent": allocator._done, "workers": workers}))
"""


@glibc
@pytest.mark.parametrize(("jobs", "parent"), [(1, True), (2, None)])
def test_processes_that_run_images_keep_freed_memory(tmp_path, jobs, parent):
    # In a fresh interpreter whose parent process never set them: each worker does,
    # and with -j 1 the calling process, which runs the tasks itself.
    script = tmp_path / "pool.py"
    script.write_text(POOL, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script), str(jobs)],
        env=_environ(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == {"parent": parent, "workers": ["True"]}
