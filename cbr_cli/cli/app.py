"""The ``cbr`` command line: parse, call the library, print, map CbrError to an exit code.

Start-up matters (``cbr --help`` must stay close to ``import typer, rich.console``):
numpy, SciPy, Pillow and the YAML machinery are imported inside the commands.
"""

import copy
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cbr_cli import __version__
from cbr_cli.cli import options as opt
from cbr_cli.cli.common import run as _run

if TYPE_CHECKING:
    from cbr_cli.spec.flags import LayerFlags

app = typer.Typer(
    name="cbr",
    help="See what Conv -> BatchNorm -> ReLU does to a real image: PyTorch-exact feature maps "
    "and statistics, without PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

WIDE = 160  # columns for tables when stdout is not a terminal


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


# ------------------------------------------------------------------------ apply

Images = Annotated[
    list[Path],
    typer.Argument(help="Image files (PNG, JPEG, TIFF, BMP, WebP, GIF). Several form a batch."),
]


@app.command()
@opt.with_layer_flags
def apply(
    images: Images,
    config: opt.Config = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("cbr-out"),
    colormap: opt.Colormap = None,
    normalize: opt.Normalize = "per-stage",
    save_npy: opt.SaveNpy = False,
    channel_pngs: opt.ChannelPngs = True,
    resize: opt.Resize = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print statistics and written paths as JSON on stdout.")
    ] = False,
    *,
    flags: "LayerFlags",  # the layer flags, gathered by with_layer_flags
) -> None:
    """Run images through Conv -> BN -> activation; write feature-map PNGs and statistics.

    With no -c and no layer flags, runs a demonstration: the 'demo' kernel bank
    (identity, blur, sharpen, emboss, Sobel, Laplacian, LoG) -> batch-stat BN -> ReLU.
    """

    def body() -> None:
        from cbr_cli.run.apply import run_apply
        from cbr_cli.spec.flags import build_spec

        spec = build_spec(config, flags)
        options = opt.output_options(out, colormap, normalize, save_npy, channel_pngs, resize)
        _print_apply(run_apply([str(p) for p in images], spec, options), json_output)

    _run(body)


def _print_apply(result: object, json_output: bool) -> None:
    import json

    from rich.console import Console

    from cbr_cli.cli.stats_tables import stats_tables
    from cbr_cli.io.writers import to_jsonable

    data = result.to_dict()  # type: ignore[attr-defined]
    for warning in data["warnings"]:  # as `cbr shape` says them; stderr, also with --json
        sys.stderr.write(f"warning: {warning}\n")
    if json_output:
        sys.stdout.write(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")
        console = Console(stderr=True)
        if not console.is_terminal:
            return
    else:
        console = Console()
        if not console.is_terminal:  # piped: no terminal width to fit, do not cut numbers
            console = Console(width=WIDE)
    for image in data["images"]:
        for table in stats_tables(image):
            console.print(table)
    console.print(f"wrote {len(data['images'])} image folder(s) and {data['manifest']}")


# ---------------------------------------------------------------------- kernels


@app.command()
def kernels(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Kernels or sets to show (default: all).")
    ] = None,
) -> None:
    """List the built-in kernel bank (cross-correlation kernels) with a small preview."""

    def body() -> None:
        from rich.console import Console

        from cbr_cli.cli.stats_tables import kernels_table
        from cbr_cli.core import kernels as bank

        specs = bank.expand_names(names) if names else bank.kernel_names()
        rows = []
        for spec in specs:
            k = bank.get_kernel(spec)
            rows.append(
                (
                    spec,
                    f"{k.shape[0]}x{k.shape[1]}",
                    bank.describe(spec),
                    bank.preview_ascii(k, max_size=5, decimals=2),
                )
            )
        console = Console()
        console.print(kernels_table(rows))
        if not names:
            sets = ", ".join(f"{s} ({len(bank.kernel_set(s))})" for s in bank.set_names())
            console.print(
                f"Sets: {sets}. Use a name with -k/--kernel or in a config's kernels: list."
            )

    _run(body)


from cbr_cli.cli import shape as cli_shape  # noqa: E402  (registers on `app`, defined above)

cli_shape.register(app)

from cbr_cli.cli import batch as cli_batch  # noqa: E402  (registers `batch` and `calibrate` on `app`)

cli_batch.register(app)


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
    """Console-script entry point."""
    args = sys.argv[1:]
    (_only(args[0]) if args else app)()
