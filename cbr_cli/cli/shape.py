"""``cbr shape``: every layer's output size, parameters, MACs and receptive field, no image.

Registered on the app by :func:`register` (called at the bottom of :mod:`cbr_cli.cli.app`).
Start-up is kept close to ``import typer, rich.console``: the layer arithmetic, rich's
table, YAML (only with ``-c``), numpy (only for ``.npy`` headers and built-in kernels)
and Pillow (only with ``--image``) are imported inside the command.
"""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cbr_cli.cli import options as opt

if TYPE_CHECKING:
    from cbr_cli.spec.flags import LayerFlags

WIDE = 220

InputSize = Annotated[
    Optional[str],
    typer.Option(
        "--input",
        metavar="CxHxW",
        help="Input size CxHxW, or HxW with C from the colour (input.color or --color: "
        "gray 1, rgb 3; default 3).",
    ),
]
ImageFile = Annotated[
    Optional[Path],
    typer.Option(
        "--image",
        metavar="FILE",
        help="Take the input size from this image's header (no pixels decoded).",
    ),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also print each layer's output-size formula, filled in, when the terminal "
        "is too narrow for its column.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``shape`` command to ``app``."""
    app.command("shape")(shape)


@opt.with_layer_flags
def shape(
    config: opt.Config = None,
    input_size: InputSize = None,
    image: ImageFile = None,
    json_output: JsonOutput = False,
    verbose: Verbose = False,
    *,
    flags: "LayerFlags",  # the layer flags, gathered by with_layer_flags
) -> None:
    """Output size, parameters, MACs and receptive field of every layer, without an image.

    The layers come from -c (the YAML `cbr apply` uses) or from the same layer flags as
    `cbr apply`; the input size from --input or an image header (--image). Prints a
    table (or JSON with --json) on stdout and warnings on stderr: stride dropping input
    rows/columns, asymmetric 'same' padding of even kernels, 'same' with stride > 1
    (TensorFlow's rule), batch-statistics BN on a 1x1 output. An empty output, or
    reflect padding larger than the input, is an error, as in PyTorch. The layer
    flags that only choose weight values (--init, --seed, --eps, ...) are accepted so
    that an `apply` command line works unchanged; they do not change any shape.
    """
    from cbr_cli.cli.common import run as _run

    _run(lambda: _shape(config, input_size, image, json_output, verbose, flags))


def _shape(
    config: Path | None,
    input_size: str | None,
    image: Path | None,
    json_output: bool,
    verbose: bool,
    flags: "LayerFlags",
) -> None:
    from dataclasses import replace

    from cbr_cli.errors import CbrError
    from cbr_cli.spec.flags import build_spec
    from cbr_cli.spec.layerstack import analyze, parse_input_size

    if input_size is not None and image is not None:
        raise CbrError("give the input size with either --input CxHxW or --image FILE")
    spec = build_spec(config, flags)
    declared = spec.weights.input_shape if spec.weights is not None else None
    if image is not None:
        from cbr_cli.io.images import read_image_size

        input_shape = read_image_size(image, spec.input.color)  # type: ignore[arg-type]
    elif input_size is not None:
        input_shape = parse_input_size(input_size, spec.input.color)
    elif declared is not None:  # --model: the graph's declared input
        input_shape = declared
        spec = replace(
            spec,
            notes=(
                *spec.notes,
                f"input {'x'.join(map(str, declared))} as the "
                f"model declares it (--input or --image for another)",
            ),
        )
    else:
        raise CbrError("give the input size with either --input CxHxW or --image FILE")
    # The image's size before input.resize/crop (as `cbr apply` prepares it).
    input_shape = (input_shape[0], *spec.input.prepared_size(*input_shape[1:]))
    result = analyze(spec, input_shape)

    for note in spec.notes:
        sys.stderr.write(f"note: {note}\n")
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning.message}\n")
    if json_output:
        import json

        plain = {**result.to_plain(), "notes": list(spec.notes)}
        sys.stdout.write(json.dumps(plain, indent=2) + "\n")
        return
    from rich.console import Console

    from cbr_cli.cli.shape_table import FORMULA, formula_lines, shape_table

    # Piped output is not wrapped to rich's 80-column default (COLUMNS still wins).
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(width=WIDE if wide else None, emoji=False)  # no emoji table import
    table = shape_table(result, console.width)
    console.print(table)
    formula_shown = any(c.header == "Output size" for c in table.columns)
    if verbose and not formula_shown and FORMULA is not None:
        console.print("output size, filled in:")
        for line in formula_lines(result):
            console.print("  " + line, highlight=False, soft_wrap=True)
