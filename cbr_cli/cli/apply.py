"""``cbr apply``: images in, feature maps, PNGs, arrays and statistics out.

Registered on the app by :func:`register` (called at the bottom of :mod:`cbr_cli.cli.app`).
numpy, Pillow and the pipeline are imported inside the command.
"""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cbr_cli.cli import options as opt
from cbr_cli.cli.common import run as _run

if TYPE_CHECKING:
    from cbr_cli.spec.flags import LayerFlags

WIDE = 160  # columns for tables when stdout is not a terminal


def register(app: typer.Typer) -> None:
    """Add the ``apply`` command to ``app``."""
    app.command("apply")(apply)


Images = Annotated[
    list[Path],
    typer.Argument(help="Image files (PNG, JPEG, TIFF, BMP, WebP, GIF). Several form a batch."),
]


@opt.with_layer_flags
def apply(
    images: Images,
    config: opt.Config = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("cbr-out"),
    colormap: opt.Colormap = None,
    normalize: opt.Normalize = "auto",
    view_range: opt.ViewRange = "p99.5",
    save_npy: opt.SaveNpy = False,
    channel_pngs: opt.ChannelPngs = True,
    report: opt.Report = True,
    resize: opt.Resize = None,
    pngs: opt.Pngs = True,
    dtype: opt.Dtype = "float32",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print statistics and written paths as JSON on stdout.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Print a statistics table per stage with a row per channel (default: one "
            "summary table per image, a row per stage).",
        ),
    ] = False,
    *,
    flags: "LayerFlags",  # the layer flags, gathered by with_layer_flags
) -> None:
    """Run images through Conv -> BN -> activation; write feature-map PNGs and statistics.

    With no -c and no layer flags, runs a demonstration: the 'demo' kernel bank
    (identity, blur, sharpen, emboss, Sobel, Laplacian, LoG) -> batch-stat BN -> ReLU.
    """

    def body() -> None:
        from cbr_cli.errors import CbrError
        from cbr_cli.run.apply import run_apply
        from cbr_cli.spec.flags import build_spec

        folders = [p for p in images if p.is_dir()]
        if folders:
            raise CbrError(
                f"cannot read image '{folders[0]}': is a directory; for a folder of images "
                f"use `cbr batch {folders[0]} -o OUT`"
            )
        spec = build_spec(config, flags)
        options = opt.output_options(
            out, colormap, normalize, save_npy, channel_pngs, resize,
            range_rule=view_range, report=report, command=opt.command_line(),
            pngs=pngs, dtype=dtype,
        )  # fmt: skip
        _print_apply(run_apply([str(p) for p in images], spec, options), json_output, verbose)

    _run(body)


def _print_apply(result: object, json_output: bool, verbose: bool = False) -> None:
    import json
    import os

    from rich.console import Console

    from cbr_cli.cli.stats_tables import stats_tables, summary_table
    from cbr_cli.io.writers import to_jsonable

    data = result.to_dict()  # type: ignore[attr-defined]
    for note in data["notes"]:  # a model's chain, the weight file's conversions
        sys.stderr.write(f"note: {note}\n")
    for warning in data["warnings"]:  # as `cbr shape` says them; stderr, also with --json
        sys.stderr.write(f"warning: {warning}\n")
    if json_output:
        sys.stdout.write(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")
        console = Console(stderr=True, emoji=False)
        if not console.is_terminal:
            return
    else:
        console = Console(emoji=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=WIDE, emoji=False)  # piped: no width to fit (COLUMNS wins)
    width = console.width
    for image in data["images"]:
        tables = stats_tables(image, width=width) if verbose else [summary_table(image, width)]
        for table in tables:
            console.print(table)
    console.print(f"wrote {len(data['images'])} image folder(s) and {data['manifest']}")
    if data.get("report"):
        console.print(f"report: {data['report']} (open it in a browser)")
