"""Conv -> BN blocks of a state_dict, found by name and shape alone.

A conv is a ``<prefix>.weight`` of 4 dimensions ``(C_out, C_in/groups, kH, kW)``; a BN is a
prefix with ``weight``, ``bias``, ``running_mean`` and ``running_var`` of one shape
``(C,)``.  A conv and a BN form a block when they share a parent module, ``C == C_out``,
and the BN's last name part follows from the conv's:

* ``conv`` -> ``bn`` / ``norm`` / ``batchnorm`` with the rest kept (``conv1`` + ``bn1``,
  ``layer1.0.conv2`` + ``layer1.0.bn2``, ``stem.conv`` + ``stem.bn``, ``conv_1`` + ``bn_1``);
* or a number followed by the next one (``features.0`` + ``features.1``,
  ``downsample.0`` + ``downsample.1``, ``features.3.conv.0.0`` + ``features.3.conv.0.1``);
* or, failing both, the BN is the next module after the conv in file order
  (``conv_stem`` + ``bn1`` in timm's EfficientNet; safetensors sorts names, so this
  fallback works only for ``.pth``/``.npz``).

Each conv and each BN is used once; convs with no BN are returned with ``bn=None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BN_PARTS = ("weight", "bias", "running_mean", "running_var")
NORM_WORDS = ("bn", "norm", "batchnorm", "batch_norm")


@dataclass(frozen=True)
class DetectedBlock:
    """A conv (tensor-name prefix) and the BN that follows it, with the conv's shape."""

    conv: str
    bn: str | None
    out_channels: int
    in_channels_per_group: int
    kernel_size: tuple[int, int]
    has_bias: bool


def _split(prefix: str) -> tuple[str, str]:
    parent, _, leaf = prefix.rpartition(".")
    return parent, leaf


def _bn_leaves(conv_leaf: str) -> list[str]:
    """Names a BN right after a conv named ``conv_leaf`` would have."""
    out = []
    if "conv" in conv_leaf:
        out += [conv_leaf.replace("conv", word, 1) for word in NORM_WORDS]
    if conv_leaf.isdigit():
        out.append(str(int(conv_leaf) + 1))
    return out


def detect_blocks(shapes: Mapping[str, tuple[int, ...]]) -> list[DetectedBlock]:
    """Conv -> BN blocks of a state_dict, in file order.

    Parameters
    ----------
    shapes : mapping of tensor name to shape
        E.g. :meth:`TensorFile.shapes`; order matters only for the file-order fallback.

    Returns
    -------
    list of DetectedBlock
        One per conv (4-D ``.weight``), ``bn`` the matched BN prefix or None.
    """
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        prefix, _, part = name.rpartition(".")
        if prefix:
            modules.setdefault(prefix, {})[part] = tuple(shape)
    order = list(modules)
    convs = [p for p in order if len(modules[p].get("weight", ())) == 4]
    bns = {
        p: parts["running_mean"][0]
        for p, parts in modules.items()
        if all(k in parts for k in ("running_mean", "running_var"))
        and len(parts["running_mean"]) == 1
        and all(parts.get(k, parts["running_mean"]) == parts["running_mean"] for k in BN_PARTS)
    }
    used: set[str] = set()
    pairs: dict[str, str] = {}
    for conv in convs:  # by name
        parent, leaf = _split(conv)
        channels = modules[conv]["weight"][0]
        for candidate_leaf in _bn_leaves(leaf):
            candidate = f"{parent}.{candidate_leaf}" if parent else candidate_leaf
            if bns.get(candidate) == channels and candidate not in used:
                pairs[conv] = candidate
                used.add(candidate)
                break
    for conv in convs:  # by file order
        if conv in pairs:
            continue
        index = order.index(conv)
        following = order[index + 1] if index + 1 < len(order) else None
        if (
            following in bns
            and following not in used
            and _split(following)[0] == _split(conv)[0]
            and bns[following] == modules[conv]["weight"][0]
        ):
            pairs[conv] = following
            used.add(following)
    blocks = []
    for conv in convs:
        weight = modules[conv]["weight"]
        blocks.append(
            DetectedBlock(
                conv=conv,
                bn=pairs.get(conv),
                out_channels=weight[0],
                in_channels_per_group=weight[1],
                kernel_size=(weight[2], weight[3]),
                has_bias="bias" in modules[conv],
            )
        )
    return blocks
