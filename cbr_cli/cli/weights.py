"""``cbr weights``: what a weight file holds, and a pipeline YAML to run it.

Registered on the app by :func:`register` (called at the bottom of :mod:`cbr_cli.cli.app`).
The readers (numpy, and ``safetensors``/``onnx``/``h5py`` for their formats) are imported
inside the command.
"""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cbr_cli.cli.common import run as _run

WIDE = 120  # columns when stdout is not a terminal and COLUMNS is not set


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command to ``app``."""
    app.command("weights")(weights)


def weights(
    file: Annotated[
        Path,
        typer.Argument(
            help="A state_dict (.safetensors, .npz, .pt/.pth/.bin) or a model (.onnx, .keras, .h5)."
        ),
    ],
    yaml: Annotated[
        bool,
        typer.Option(
            "--yaml",
            help="Print a pipeline YAML for the blocks found (geometry from the graph for "
            "ONNX/Keras; marked placeholders for a state_dict) instead of the tables.",
        ),
    ] = False,
    until: Annotated[
        Optional[str],
        typer.Option("--until", metavar="NODE", help="ONNX/Keras: stop the chain after this node."),
    ] = None,
) -> None:
    """List every tensor of a weight file and the Conv -> BN blocks it holds.

    Reads no code and runs none (pickles are read with an allow-list). For ONNX and
    Keras models the blocks are the graph's leading chain, with its geometry, and the
    table says where and why the chain stops (cbr runs Conv, BatchNorm, ReLU and
    LeakyReLU; pooling ends it). For a state_dict the blocks are found by name and
    shape (conv1+bn1, layer1.0.conv1+layer1.0.bn1, features.0+features.1, ...): run
    them with `cbr apply --weights FILE --layers conv1+bn1,...` or from the --yaml.
    """
    _run(lambda: _weights(os.fspath(file), yaml, until))


def _weights(path: str, yaml: bool, until: Optional[str]) -> None:
    from cbr_cli.errors import CbrError
    from cbr_cli.io.weights import detect_blocks, file_format, read_model, read_tensors

    fmt = file_format(path)
    is_model = fmt in ("onnx", "keras")
    if until is not None and not is_model:
        raise CbrError(f"--until: only for ONNX/Keras models ({path} is a {fmt} state_dict)")
    chain = read_model(path, until=until) if is_model else None
    if yaml:
        from cbr_cli.spec import weights_yaml

        if chain is not None:
            text = weights_yaml.model_yaml(chain, path)
        else:
            read = read_tensors(path, ())
            shapes = read.shapes()
            text = weights_yaml.state_dict_yaml(detect_blocks(shapes), shapes, path, fmt)
        sys.stdout.write(text)
        return
    from rich.console import Console

    from cbr_cli.cli.weights_table import chain_table, detected_table, tensors_table

    read = read_tensors(path, ())
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    console = Console(width=WIDE if wide else None, emoji=False, highlight=False)
    console.print(tensors_table(read))
    for note in read.notes:
        console.print(f"note: {note}", markup=False)
    if chain is not None:
        console.print(chain_table(chain.blocks()))
        where = (
            "the whole graph" if chain.stopped_at is None else f"stops before {chain.stopped_at!r}"
        )
        console.print(f"The chain {where}: {chain.stop_reason}.", markup=False)
        for note in chain.notes:
            console.print(f"note: {note}", markup=False)
        console.print(f"Run it: cbr apply IMAGE --model {path}", markup=False)
    else:
        blocks = detect_blocks(read.shapes())
        console.print(detected_table(blocks))
        pairs = ",".join(f"{b.conv}+{b.bn}" if b.bn else b.conv for b in blocks[:2])
        if blocks:
            console.print(
                f"Run them: cbr apply IMAGE --weights {path} --layers {pairs} --stride ... "
                f"(or: cbr weights {path} --yaml > net.yaml, edit, cbr apply IMAGE -c net.yaml)",
                markup=False,
            )
