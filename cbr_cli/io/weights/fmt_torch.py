"""``torch.save`` files (``.pt``/``.pth``/``.bin``, zip format) read without torch, running no code.

Layout (torch >= 1.6): a zip with ``<prefix>/data.pkl`` (the pickled state_dict),
``<prefix>/data/<key>`` (one raw little-endian storage per key) and ``<prefix>/byteorder``.

The pickle is loaded by :class:`StrictUnpickler`, whose ``find_class`` -- the only way a
pickle can name a Python callable -- allows exactly what a state_dict needs, mirroring the
defaults of torch's ``weights_only`` unpickler (``torch/_weights_only_unpickler.py``):
``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` /
``_rebuild_parameter`` / ``_rebuild_parameter_with_state`` and the typed storage classes
(``torch.FloatStorage``, ...).  They resolve to local stand-ins built on numpy; any other
global (``os.system``, ``builtins.eval``, ``posix.system``, ``subprocess.Popen``, ...) is
refused before it exists, so a hostile pickle cannot call it.  Storages are described by
``persistent_load`` and read (bounded, in chunks) only for the tensors asked for; a
tensor's size/stride/offset must lie inside its storage and are applied with
``numpy.lib.stride_tricks.as_strided`` on that bounded buffer, then copied.

Legacy (non-zip) ``torch.save`` files are refused with a conversion hint: their format
cannot be read without unpickling arbitrary objects first.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.io.weights.tensorfile import (
    Budget,
    TensorFile,
    TensorInfo,
    bfloat16_to_float32,
    numel,
    open_weights,
    select,
    tensor_error,
    to_float,
)
from cbr_cli.io.weights.zipread import open_zip, read_member

PICKLE_LIMIT = 256 << 20  # a state_dict's pickle is ~100 bytes per tensor
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")

# torch storage class -> (dtype name, numpy dtype; bfloat16 is read as uint16 bits)
STORAGES: dict[str, tuple[str, str]] = {
    "DoubleStorage": ("float64", "f8"),
    "FloatStorage": ("float32", "f4"),
    "HalfStorage": ("float16", "f2"),
    "BFloat16Storage": ("bfloat16", "u2"),
    "LongStorage": ("int64", "i8"),
    "IntStorage": ("int32", "i4"),
    "ShortStorage": ("int16", "i2"),
    "CharStorage": ("int8", "i1"),
    "ByteStorage": ("uint8", "u1"),
    "BoolStorage": ("bool", "?"),
}
KEY = re.compile(r"^[A-Za-z0-9_.]{1,64}$")

LEGACY_HINT = (
    "cbr reads only the zip format of torch >= 1.6 without running code; convert it once "
    "with torch: torch.save(torch.load(FILE, weights_only=True), 'model.pth'), or save it "
    "with safetensors"
)


# ----------------------------------------------------- stand-ins for torch


class _Frozen:
    """Base of the stand-ins: no ``__dict__``, and a hostile BUILD opcode cannot set state."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError("BUILD on a tensor, storage or storage type is not allowed")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


class StorageType(_Frozen):
    """What ``torch.FloatStorage`` & co. resolve to: a dtype, nothing callable or mutable."""

    __slots__ = ("dtype", "numpy", "torch_name")

    def __init__(self, torch_name: str, dtype: str, numpy: str) -> None:
        object.__setattr__(self, "torch_name", torch_name)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "numpy", numpy)


class Storage(_Frozen):
    """A storage as ``persistent_load`` describes it; its bytes are read on demand."""

    __slots__ = ("key", "numel", "type")

    def __init__(self, key: str, storage_type: StorageType, count: int) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "type", storage_type)
        object.__setattr__(self, "numel", count)


class Tensor(_Frozen):
    """A tensor as ``_rebuild_tensor_v2`` describes it: a strided view of a storage."""

    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: Storage, offset: int, shape: tuple, stride: tuple) -> None:
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "stride", stride)


def _int_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest
):
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2: the first argument is not a storage")
    if not (_int_tuple(size) and _int_tuple(stride) and len(size) == len(stride)):
        raise pickle.UnpicklingError("_rebuild_tensor_v2: size and stride must be int tuples")
    if not (isinstance(storage_offset, int) and storage_offset >= 0):
        raise pickle.UnpicklingError("_rebuild_tensor_v2: bad storage offset")
    if min(size, default=0) < 0 or min(stride, default=0) < 0:
        raise pickle.UnpicklingError("_rebuild_tensor_v2: negative size or stride")
    if numel(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.numel:
            raise pickle.UnpicklingError(
                f"tensor of size {size}, stride {stride}, offset {storage_offset} reaches "
                f"element {last} of a storage of {storage.numel}"
            )
    return Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("_rebuild_parameter: the data is not a tensor")
    return data


ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): StorageType(name, *spec) for name, spec in STORAGES.items()},
}


class StrictUnpickler(pickle.Unpickler):
    """``find_class`` allows only :data:`ALLOWED`; ``persistent_load`` makes :class:`Storage`."""

    def __init__(self, data: bytes, path: str, member: str) -> None:
        super().__init__(io.BytesIO(data))
        self.path = path
        self.member = member
        self.storages: dict[str, Storage] = {}

    def find_class(self, module: str, name: str) -> object:
        found = ALLOWED.get((module, name))
        if found is None:
            raise CbrError(
                f"{self.path}: refused to load the global '{module}.{name}' named in "
                f"{self.member} (only tensors and OrderedDict are allowed; nothing was run)"
            )
        return found

    def persistent_load(self, pid: object) -> Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
            and isinstance(pid[2], str)
            and KEY.match(pid[2])
            and isinstance(pid[4], int)
            and not isinstance(pid[4], bool)
            and pid[4] >= 0
        ):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, count = pid
        known = self.storages.get(key)
        if known is not None:
            if known.type != storage_type or known.numel != count:
                raise pickle.UnpicklingError(f"storage {key} described twice differently")
            return known
        storage = Storage(key, storage_type, count)
        self.storages[key] = storage
        return storage


# -------------------------------------------------------------------- read


def read(path: str, names: Iterable[str] | None, max_bytes: int) -> TensorFile:
    handle, _ = open_weights(path)
    with handle:
        magic = handle.read(4)
        if not magic.startswith(b"PK"):
            raise CbrError(f"{path}: not a zip-format torch.save file; {LEGACY_HINT}")
        handle.seek(0)
        with open_zip(path, handle) as archive:
            prefix, member = _find_pickle(path, archive)
            little = _byteorder(path, archive, prefix)
            found = _unpickle(path, read_member(path, archive, member, PICKLE_LIMIT), member)
            tensors_in, notes = _state_dict(path, found)
            info = {
                name: TensorInfo(name, tuple(t.shape), t.storage.type.dtype)
                for name, t in tensors_in.items()
            }
            chosen = select(path, info, names)
            budget = Budget(path, max_bytes)
            loaded: dict[str, np.ndarray] = {}
            buffers: dict[str, np.ndarray] = {}
            for name in chosen:
                tensor = tensors_in[name]
                storage = tensor.storage
                if storage.key not in buffers:
                    buffers[storage.key] = _storage_array(
                        path, archive, prefix, storage, little, budget, name
                    )
                array = _view(buffers[storage.key], tensor, budget, name)
                if storage.type.dtype == "bfloat16":
                    array = bfloat16_to_float32(array)
                loaded[name] = to_float(array, name, storage.type.dtype, notes, budget)
    return TensorFile(path, "torch", info, loaded, tuple(notes))


def _find_pickle(path: str, archive: zipfile.ZipFile) -> tuple[str, str]:
    pickles = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pickles) != 1:
        what = "no" if not pickles else f"{len(pickles)}"
        raise CbrError(
            f"{path}: a zip but not a torch.save file ({what} '<name>/data.pkl' members)"
        )
    return pickles[0][: -len("data.pkl")], pickles[0]


def _byteorder(path: str, archive: zipfile.ZipFile, prefix: str) -> bool:
    if prefix + "byteorder" not in archive.namelist():
        return True  # files before torch 1.x recorded none; they are little-endian
    order = read_member(path, archive, prefix + "byteorder", 16).strip()
    if order not in (b"little", b"big"):
        raise CbrError(f"{path}: {prefix}byteorder: expected 'little' or 'big', got {order[:16]!r}")
    return order == b"little"


def _unpickle(path: str, data: bytes, member: str) -> object:
    unpickler = StrictUnpickler(data, path, member)
    try:
        return unpickler.load()
    except CbrError:
        raise
    # What a malformed or hostile pickle raises once no global can be resolved:
    # pickle.UnpicklingError from the opcodes and our stand-ins, EOFError when cut short,
    # TypeError/ValueError/... when an allowed callable gets arguments it cannot take.
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        RecursionError,
        MemoryError,
        OverflowError,
        UnicodeDecodeError,
    ) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CbrError(f"{path}: {member}: not a loadable state_dict pickle ({reason})") from None


def _state_dict(path: str, found: object) -> tuple[dict[str, Tensor], list[str]]:
    """The tensors of a state_dict, or of the state_dict inside a checkpoint dict."""
    notes: list[str] = []
    if not isinstance(found, dict):
        raise CbrError(
            f"{path}: holds a pickled {type(found).__name__}, not a state_dict (a dict of tensors)"
        )
    tensors = {k: v for k, v in found.items() if isinstance(v, Tensor)}
    if not tensors:
        for key in STATE_DICT_KEYS:
            inner = found.get(key)
            if isinstance(inner, dict) and any(isinstance(v, Tensor) for v in inner.values()):
                notes.append(f"tensors taken from the checkpoint's {key!r} entry")
                found = inner
                tensors = {k: v for k, v in inner.items() if isinstance(v, Tensor)}
                break
    if not tensors:
        raise CbrError(f"{path}: holds no tensors at the top level (not a state_dict)")
    bad = [k for k in tensors if not isinstance(k, str)]
    if bad:
        raise CbrError(f"{path}: state_dict key {bad[0]!r} is not a string")
    skipped = len(found) - len(tensors)
    if skipped:
        notes.append(f"{skipped} non-tensor entr{'y' if skipped == 1 else 'ies'} skipped")
    return tensors, notes


def _storage_array(
    path: str,
    archive: zipfile.ZipFile,
    prefix: str,
    storage: Storage,
    little: bool,
    budget: Budget,
    name: str,
) -> np.ndarray:
    dtype = np.dtype(storage.type.numpy).newbyteorder("<" if little else ">")
    nbytes = storage.numel * dtype.itemsize
    budget.charge(nbytes, name)
    member = f"{prefix}data/{storage.key}"
    if member not in archive.namelist():
        raise tensor_error(path, name, f"its storage {member} is missing from the archive")
    data = read_member(path, archive, member, nbytes, name)
    if len(data) != nbytes:
        raise tensor_error(
            path,
            name,
            f"storage {member} holds {len(data)} bytes, the pickle declares {storage.numel} "
            f"x {dtype.itemsize}",
        )
    return np.frombuffer(data, dtype=dtype)


def _view(buffer: np.ndarray, tensor: Tensor, budget: Budget, name: str) -> np.ndarray:
    """The tensor's elements (checked against the storage when unpickled), copied."""
    count = numel(tensor.shape)
    budget.charge(count * buffer.itemsize, name)
    if count == 0:
        return np.zeros(tensor.shape, dtype=buffer.dtype)
    view = np.lib.stride_tricks.as_strided(
        buffer[tensor.offset :],
        shape=tensor.shape,
        strides=tuple(s * buffer.itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view, order="C")
