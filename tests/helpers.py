"""Helpers shared by several test modules."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the checkout (so its ``cbr_cli`` is used),
    assert it exited 0, and return the finished process (text stdout/stderr)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return result


def cbr(*args: object, env: dict[str, str] | None = None):
    """``cbr ARGS`` in-process (typer's CliRunner: stdout and stderr apart)."""
    import os

    from typer.testing import CliRunner

    from cbr_cli.cli.app import app

    return CliRunner().invoke(app, [os.fspath(a) for a in args], env=env)  # type: ignore[arg-type]


def ok(result) -> None:
    """The command exited 0 (the assertion shows stderr and the exception if not)."""
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)


def one_line_error(result, *fragments: str, exit_code: int = 2, stdout_empty: bool = True) -> str:
    """``exit_code``, empty stdout, exactly one ``error: ...`` line on stderr holding every
    fragment, and no traceback; returns that line (the house rule for user errors)."""
    assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.exception)
    if stdout_empty:
        assert result.stdout == "", result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
