"""The ``cbr`` command line: parse, call the library, print, map CbrError to an exit code.

Start-up matters (``cbr --help`` must stay close to ``import typer, rich.console``):
numpy, SciPy, Pillow and the YAML machinery are imported inside the commands.
"""

import copy
import sys

import typer

from cbr_cli import __version__
from cbr_cli.cli.process_exit import leave, output_failed

app = typer.Typer(
    name="cbr",
    help="See what Conv -> BatchNorm -> ReLU does to a real image: PyTorch-exact feature maps "
    "and statistics, without PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # -h as --help, every command
)


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


from cbr_cli.cli import apply as cli_apply  # noqa: E402  (registers on `app`, defined above)
from cbr_cli.cli import kernels as cli_kernels  # noqa: E402

cli_apply.register(app)
cli_kernels.register(app)

from cbr_cli.cli import shape as cli_shape  # noqa: E402  (registers on `app`, defined above)

cli_shape.register(app)

from cbr_cli.cli import batch as cli_batch  # noqa: E402  (registers `batch` and `calibrate` on `app`)

cli_batch.register(app)

from cbr_cli.cli import weights as cli_weights  # noqa: E402  (registers `weights` on `app`)

cli_weights.register(app)


def _only(name: str) -> typer.Typer:
    """``app`` with just the command ``name`` (or all of them if there is no such command).

    Typer builds the Click objects of every registered command on each run (~10 ms per
    command with many options); the console script builds only the one it runs.
    """
    chosen = [
        info
        for info in app.registered_commands
        if (info.name or info.callback.__name__.lower().replace("_", "-")) == name
    ]
    if not chosen:
        return app
    slim = copy.copy(app)
    slim.registered_commands = chosen
    return slim


def main() -> None:
    """Console-script entry point (``cbr`` and ``python -m cbr_cli``).

    Ends the process itself (:func:`cbr_cli.cli.process_exit.leave`): the interpreter's
    teardown is skipped, ~60 ms per command.
    """
    args = sys.argv[1:]
    try:
        (_only(args[0]) if args else app)()  # standalone Click: ends in SystemExit
    except SystemExit as exc:
        leave(exc.code)
    except OSError as exc:  # stdout/stderr unwritable (a full disk): one line, no traceback
        leave(output_failed(exc))
    leave(0)
