"""What a weight file holds: named tensors, their original dtypes, and notes on conversions.

The dtype policy (cbr's, :func:`cbr_cli.ops.as_float`): float32 and float64 are kept;
float16, bfloat16, integers and booleans become float32, and every such conversion is
noted (``bn1.weight: float16 converted to float32``) -- except BatchNorm's integer
``num_batches_tracked`` counter, which is no parameter.  float16 and bfloat16 convert
exactly (every value is representable in float32).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from cbr_cli.errors import CbrError

#: Default bound on the tensor bytes one read may produce (storages plus converted copies).
DEFAULT_MAX_BYTES = 2 << 30

COUNTER_SUFFIX = "num_batches_tracked"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the file declares it (known before any data is read)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the file's dtype, numpy/torch spelling: float32, float16, bfloat16, int64, ...

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class TensorFile:
    """The tensors of one weight file.

    Attributes
    ----------
    path : str
        As given by the caller; every error message starts with it.
    format : str
        ``safetensors``, ``npz``, ``torch``, ``onnx`` or ``keras``.
    info : dict of str to TensorInfo
        Every tensor in the file, in file order (safetensors stores them sorted by name).
    tensors : dict of str to ndarray
        The loaded ones (all, unless :func:`read_tensors` was given ``names``), float32 or
        float64, read-only copies independent of the file.
    notes : tuple of str
        Conversions and choices made while reading, one line each.
    """

    path: str
    format: str
    info: dict[str, TensorInfo]
    tensors: dict[str, np.ndarray]
    notes: tuple[str, ...] = field(default=())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``name -> shape`` for every tensor in the file (what :func:`detect_blocks` takes)."""
        return {name: t.shape for name, t in self.info.items()}

    def has(self, name: str) -> bool:
        return name in self.info

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The loaded tensor ``name``, optionally checked to have ``shape``.

        Raises
        ------
        CbrError
            ``model.pth: conv9.weight: no such tensor (did you mean 'conv1.weight'?)``,
            ``model.pth: bn1.running_var: expected shape (64,), got (32,)``, or a tensor
            that exists but was not loaded.
        """
        if name not in self.info:
            raise missing_tensor(self.path, name, self.info)
        if name not in self.tensors:
            raise tensor_error(self.path, name, "not loaded (not among the names requested)")
        array = self.tensors[name]
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise shape_mismatch(self.path, name, shape, array.shape)
        return array


# ----------------------------------------------------------------- messages


def tensor_error(path: str, name: str, message: str) -> CbrError:
    """``CbrError("{path}: {name}: {message}")`` -- the one message format for a tensor."""
    return CbrError(f"{path}: {name}: {message}")


def shape_mismatch(path: str, name: str, expected: Iterable[int], got: Iterable[int]) -> CbrError:
    """``model.pth: bn1.running_var: expected shape (64,), got (32,)``."""
    return tensor_error(path, name, f"expected shape {_shape(expected)}, got {_shape(got)}")


def missing_tensor(path: str, name: str, available: Iterable[str]) -> CbrError:
    """``model.pth: conv9.weight: no such tensor (did you mean 'conv1.weight'?)``."""
    names = list(available)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif names:
        hint = f"the file has {len(names)} tensors, e.g. {names[0]!r}"
    else:
        hint = "the file holds no tensors"
    return tensor_error(path, name, f"no such tensor ({hint})")


def _shape(shape: Iterable[int]) -> str:
    return repr(tuple(int(d) for d in shape))


# ------------------------------------------------------------------ policy


class Budget:
    """Bytes a read may still allocate; every storage and converted copy is charged first."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.left = max_bytes

    def charge(self, nbytes: int, name: str) -> None:
        if nbytes > self.left:
            raise tensor_error(
                self.path,
                name,
                f"needs {nbytes} bytes, beyond the limit of {self.max_bytes} bytes for one "
                f"file ({self.left} left)",
            )
        self.left -= nbytes


def to_float(
    array: np.ndarray, name: str, dtype: str, notes: list[str], budget: Budget
) -> np.ndarray:
    """Apply the dtype policy to a freshly read ``array``; returns a read-only array.

    ``dtype`` is the file's spelling (``bfloat16`` arrives as the float32 it widens to).
    """
    if array.dtype not in (np.float32, np.float64):
        if array.dtype.kind not in "biuf":
            raise tensor_error(budget.path, name, f"unsupported dtype {dtype}")
        budget.charge(array.size * 4, name)
        array = array.astype(np.float32)
        if not name.endswith(COUNTER_SUFFIX):
            notes.append(f"{name}: {dtype} converted to float32")
    elif dtype not in ("float32", "float64") and not name.endswith(COUNTER_SUFFIX):
        notes.append(f"{name}: {dtype} converted to float32")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    array.flags.writeable = False
    return array


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: the upper half of a float32, exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def select(path: str, info: Mapping[str, TensorInfo], names: Iterable[str] | None) -> list[str]:
    """The names to load, in file order; unknown ones are an error with a close match."""
    if names is None:
        return list(info)
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if name not in info:
            raise missing_tensor(path, name, info)
    chosen = set(wanted)
    return [name for name in info if name in chosen]


def numel(shape: Iterable[int]) -> int:
    """Product of ``shape`` in Python ints (no overflow, whatever a header declares)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ------------------------------------------------------------ opening the file


def _file_error(path: str) -> Callable[[str], CbrError]:
    """Weight files' wording of :mod:`cbr_cli.io.readfile`'s reasons: ``PATH: reason``."""

    def make(reason: str) -> CbrError:
        if reason == "file not found":
            reason = "no such file"
        elif reason == "is a directory, not a regular file":
            reason = "is a directory, not a weight file"
        elif not reason.startswith(("is ", "file is empty", "cannot read")):
            reason = f"cannot read ({reason})"
        return CbrError(f"{path}: {reason}")

    return make


def open_weights(path: str) -> tuple[BinaryIO, int]:
    """Open ``path`` if it is a non-empty regular file (:func:`cbr_cli.io.readfile.open_sized`).

    Returns
    -------
    (file, size)
        The open binary file (caller closes it) and its size in bytes.

    Raises
    ------
    CbrError
        For a missing file, a directory, a FIFO/socket/device (reading one could block or
        never end), an empty file, or an OS error -- one line naming ``path``.
    """
    from cbr_cli.io.readfile import open_sized

    return open_sized(path, _file_error(path))


def read_weights(path: str, limit: int, what: str = "file") -> bytes:
    """The whole of ``path`` (a regular file of at most ``limit`` bytes)."""
    from cbr_cli.io.readfile import read_exact

    handle, size = open_weights(path)
    with handle:
        if size > limit:
            raise CbrError(f"{path}: {what} is {size} bytes, more than the limit of {limit}")
        return read_exact(handle, size, path, what)
