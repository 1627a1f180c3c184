"""The ``cbr`` command line: parse, call the library, print, map CbrError to an exit code.

Start-up matters (``cbr --help`` must stay close to ``import typer, rich.console``):
numpy, SciPy, Pillow and the YAML machinery are imported inside the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from cbr_cli import __version__
from cbr_cli.errors import CbrError

app = typer.Typer(
    name="cbr",
    help="See what Conv -> BatchNorm -> ReLU does to a real image: PyTorch-exact feature maps "
    "and statistics, without PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")


def _run(action: Callable[[], T]) -> T:
    """Run a command body; turn CbrError into ``error: ...`` on stderr and its exit code."""
    try:
        return action()
    except CbrError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        raise typer.Exit(exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cbr {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """See what Conv -> BatchNorm -> ReLU does to a real image."""


def main() -> None:
    """Console-script entry point."""
    app()
