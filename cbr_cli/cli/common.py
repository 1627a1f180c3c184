"""What every ``cbr`` command module shares: running a command body.

A module of its own, so that command modules (``cli_batch``, ``cli_shape``, ...) need
not import :mod:`cbr_cli.cli.app`, which imports them to register their commands.
"""

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from cbr_cli.errors import CbrError

T = TypeVar("T")


def run(action: Callable[[], T]) -> T:
    """Run a command body; turn CbrError into ``error: ...`` on stderr and its exit code."""
    try:
        return action()
    except CbrError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        raise typer.Exit(exc.exit_code) from None


def shown_path(path: str | os.PathLike[str], given: str | os.PathLike[str]) -> str:
    """``path`` as messages show it: relative (to the working directory) when the user
    gave ``given`` relative, absolute when they gave it absolute."""
    if os.path.isabs(given):
        return os.path.abspath(path)
    return os.path.relpath(path)
