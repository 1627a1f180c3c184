"""``--model FILE``: the leading Conv -> BN -> activation chain of an ONNX or Keras model as
a :class:`~cbr_cli.spec.pipeline_spec.PipelineSpec`.

The chain (:func:`cbr_cli.io.weights.read_model`, ``--until NODE`` to stop after a node)
becomes one layer per :class:`~cbr_cli.io.weights.Block` (``Block.to_plain``: geometry from
the graph, tensors by name), validated by the same parser as a YAML pipeline, with the
chain's tensors (already read, OIHW) as its weight file.  Pooling is not run: the chain
stops before a MaxPool/AveragePool and the spec's notes say so, as they say where else it
stopped and why, and which convs look like they have a BN folded in.

The input colour follows the first conv: 3 input channels read images as RGB, 1 as gray
(``--color`` wins).
"""

from __future__ import annotations

import os

from cbr_cli.errors import CbrError
from cbr_cli.spec.weights_source import WeightsFile, chain_notes, from_chain
from cbr_cli.spec.yaml_reader import Value, from_flag, from_plain


def model_tree(display: str, until: str | None) -> tuple[Value, WeightsFile, tuple[str, ...]]:
    """The pipeline of the model at ``display`` as a config tree, its weights and notes.

    ``parse_pipeline(tree, display, weights, notes)`` makes the spec (after ``--color`` /
    ``--preset`` are applied to the tree).
    """
    from cbr_cli.io.weights import read_model

    chain = read_model(display, until=until)
    blocks = chain.blocks()
    if not blocks:
        raise CbrError(f"{display}: no Conv at the start of the graph ({chain.stop_reason})")
    weights = from_chain(chain, display)
    weights.path = os.path.abspath(display)
    cwd = os.getcwd()
    root = from_plain({"layers": [b.to_plain() for b in blocks]}, f"--model {display}", "", cwd)
    color = {1: "gray", 3: "rgb"}.get(blocks[0].conv.in_channels)
    if color is not None:
        root.data["input"] = Value({"color": from_flag(color, "--model")}, "--model", "input", cwd)
    return root, weights, chain_notes(chain, display)
