"""Weight files read without PyTorch and without running code (issue 11).

Public API (numpy at import; ``safetensors``, ``onnx`` and ``h5py`` only inside the reads
that need them)::

    read_tensors(path, names=None, *, max_bytes=DEFAULT_MAX_BYTES) -> TensorFile
    read_model(path, *, until=None, pools=False, max_bytes=DEFAULT_MAX_BYTES) -> ModelChain
    detect_blocks(shapes) -> list[DetectedBlock]
    tensor_error(path, name, message) / shape_mismatch(path, name, expected, got) -> CbrError
"""

from __future__ import annotations

from collections.abc import Iterable

from cbr_cli.errors import CbrError
from cbr_cli.io.weights.blocks import DetectedBlock, detect_blocks
from cbr_cli.io.weights.chain import (
    ActLayer,
    Block,
    BNLayer,
    ConvLayer,
    ModelChain,
    PoolLayer,
)
from cbr_cli.io.weights.tensorfile import (
    DEFAULT_MAX_BYTES,
    TensorFile,
    TensorInfo,
    missing_tensor,
    open_weights,
    shape_mismatch,
    tensor_error,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MODEL_SUFFIXES",
    "TENSOR_SUFFIXES",
    "ActLayer",
    "BNLayer",
    "Block",
    "ConvLayer",
    "DetectedBlock",
    "ModelChain",
    "PoolLayer",
    "TensorFile",
    "TensorInfo",
    "detect_blocks",
    "file_format",
    "missing_tensor",
    "read_model",
    "read_tensors",
    "shape_mismatch",
    "tensor_error",
]

TENSOR_SUFFIXES = (".safetensors", ".npz", ".pt", ".pth", ".bin", ".ckpt")
MODEL_SUFFIXES = (".onnx", ".keras", ".h5", ".hdf5")
FORMATS = ("safetensors", "npz", "torch", "onnx", "keras")


def file_format(path: str) -> str:
    """The format of ``path`` from its first bytes (the suffix only breaks ties).

    Returns one of :data:`FORMATS`.  A legacy (non-zip) ``torch.save`` pickle is an error
    with a conversion hint; so is anything unrecognised.
    """
    handle, size = open_weights(path)
    with handle:
        head = handle.read(64)
        if head.startswith(b"PK"):
            from cbr_cli.io.weights.zipread import open_zip

            handle.seek(0)
            with open_zip(path, handle) as archive:
                names = archive.namelist()
            if any(n.endswith("/data.pkl") for n in names):
                return "torch"
            if "config.json" in names and "model.weights.h5" in names:
                return "keras"
            if names and all(n.endswith(".npy") for n in names if not n.endswith("/")):
                return "npz"
            raise CbrError(
                f"{path}: a zip archive, but not a torch.save file, an .npz or a .keras model"
            )
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle's PROTO opcode: torch.save before the zip format
        from cbr_cli.io.weights.fmt_torch import LEGACY_HINT

        raise CbrError(f"{path}: a legacy (non-zip) torch.save pickle; {LEGACY_HINT}")
    if path.lower().endswith(".onnx"):
        return "onnx"
    raise CbrError(
        f"{path}: not a weight file cbr reads (safetensors, .npz, torch.save zip, ONNX, "
        "Keras .keras/.h5)"
    )


def read_tensors(
    path: str, names: Iterable[str] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> TensorFile:
    """Read the named tensors of a weight file (``names=None``: all; ``()``: shapes only).

    Parameters
    ----------
    path : str
        A ``.safetensors``, ``.npz`` or ``torch.save`` zip (``.pt``/``.pth``/``.bin``)
        state_dict, or an ``.onnx``/``.keras``/``.h5`` model (its initializers/weights, in the
        file's own layout).  The format is detected from the content.
    names : iterable of str, optional
        Tensors to load; all are still listed in :attr:`TensorFile.info`.  Unknown names are
        an error (``model.pth: conv9.weight: no such tensor (did you mean ...)``).
    max_bytes : int
        Bound on the bytes the read may allocate; more is an error before any allocation.

    Returns
    -------
    TensorFile
        float32/float64 arrays (float16, bfloat16 and integers converted to float32 and
        noted in :attr:`TensorFile.notes`).

    Raises
    ------
    CbrError
        One line naming the file (and the tensor): missing/irregular file, truncated or
        hostile content, a refused pickle global, a missing optional package.
    """
    fmt = file_format(path)
    if fmt == "safetensors":
        from cbr_cli.io.weights import fmt_safetensors as reader
    elif fmt == "npz":
        from cbr_cli.io.weights import fmt_npz as reader
    elif fmt == "torch":
        from cbr_cli.io.weights import fmt_torch as reader
    elif fmt == "onnx":
        from cbr_cli.io.weights import fmt_onnx

        return fmt_onnx.read_tensors(path, names, max_bytes)
    else:
        from cbr_cli.io.weights import fmt_keras

        return fmt_keras.read_tensors(path, names, max_bytes)
    return reader.read(path, names, max_bytes)


def read_model(
    path: str,
    *,
    until: str | None = None,
    pools: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ModelChain:
    """The leading Conv -> BN -> activation chain of an ONNX or Keras model.

    Parameters
    ----------
    path : str
        ``.onnx``, ``.keras`` (Keras 3) or ``.h5`` (Keras 2 / legacy full-model save).
    until : str, optional
        Stop after this node (ONNX node name or output name) or Keras layer name; one that
        is not in the leading chain is an error listing the chain's nodes.
    pools : bool
        Include MaxPool/AveragePool layers (:class:`PoolLayer`) instead of stopping there.
    max_bytes : int
        As in :func:`read_tensors`.

    Returns
    -------
    ModelChain
        With ``stopped_at``/``stop_reason`` saying where and why it ended, and ``notes``
        (e.g. a conv with no BN after it: BN probably folded).
    """
    fmt = file_format(path)
    if fmt == "onnx":
        from cbr_cli.io.weights import fmt_onnx

        return fmt_onnx.read_model(path, until, pools, max_bytes)
    if fmt == "keras":
        from cbr_cli.io.weights import fmt_keras

        return fmt_keras.read_model(path, until, pools, max_bytes)
    raise CbrError(
        f"{path}: a {fmt} file holds tensors but no layer geometry; use it as weights "
        "(geometry from the pipeline) or give an .onnx/.keras model"
    )
