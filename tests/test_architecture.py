"""The layering errors <- core <- io <- spec <- run <- batch <- cli holds (import-linter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def _lint_imports() -> list[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports (import-linter, in the test extras) is not installed")
    return [found]


def test_import_contracts_are_kept() -> None:
    """Both contracts in pyproject.toml: the layers, and no cycle between siblings."""
    result = subprocess.run(
        [*_lint_imports(), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
