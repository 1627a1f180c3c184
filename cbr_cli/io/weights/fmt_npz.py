"""``.npz`` files (``np.savez`` of a state_dict): never unpickled, sizes checked first.

Each member's ``.npy`` header is parsed with :mod:`numpy.lib.format` before its data is
used; object arrays (which only a pickle can hold) are refused, as ``np.load(...,
allow_pickle=False)`` would, and a header that declares more data than the member holds
is an error, never an allocation.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.io.weights.tensorfile import (
    Budget,
    TensorFile,
    TensorInfo,
    numel,
    open_weights,
    select,
    tensor_error,
    to_float,
)
from cbr_cli.io.weights.zipread import open_zip, read_head, read_member

HEADER_LIMIT = 1 << 16  # numpy's own header limit is 10 000 bytes by default


def read(path: str, names: Iterable[str] | None, max_bytes: int) -> TensorFile:
    handle, _ = open_weights(path)
    with handle, open_zip(path, handle) as archive:
        members = {}
        info = {}
        for item in archive.infolist():
            if item.is_dir():
                continue
            if not item.filename.endswith(".npy"):
                raise CbrError(f"{path}: {item.filename}: not a .npy member; not an .npz of arrays")
            name = item.filename[: -len(".npy")]
            header = read_head(path, archive, item.filename, HEADER_LIMIT + 16, name)
            dtype, shape, fortran, _ = _parse_header(path, name, header)
            info[name] = TensorInfo(name, shape, dtype.name)
            members[name] = (item.filename, dtype, shape, fortran)
        chosen = select(path, info, names)
        budget = Budget(path, max_bytes)
        notes: list[str] = []
        tensors = {}
        for name in chosen:
            member, dtype, shape, fortran = members[name]
            nbytes = numel(shape) * dtype.itemsize
            budget.charge(nbytes, name)
            data = read_member(path, archive, member, nbytes + HEADER_LIMIT + 16, name)
            _, _, _, start = _parse_header(path, name, data)
            if len(data) - start != nbytes:
                raise tensor_error(
                    path,
                    name,
                    f"header declares shape {shape} ({nbytes} bytes of {dtype.name}), "
                    f"the member holds {len(data) - start}",
                )
            array = np.frombuffer(data, dtype=dtype, count=numel(shape), offset=start)
            array = array.reshape(shape, order="F" if fortran else "C")
            tensors[name] = to_float(np.array(array), name, dtype.name, notes, budget)
    return TensorFile(path, "npz", info, tensors, tuple(notes))


def _parse_header(path: str, name: str, data: bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, data_start)`` of a ``.npy`` image."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise tensor_error(path, name, f"not a valid .npy member ({_short(exc)})") from None
    if dtype.hasobject:
        raise tensor_error(
            path, name, "holds Python objects (a pickle); refused, only numeric arrays are read"
        )
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise tensor_error(path, name, f"unsupported dtype {dtype} (expected a real numeric array)")
    return dtype, tuple(int(d) for d in shape), bool(fortran), stream.tell()


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
