"""``.safetensors`` files: header checked here, data read by the ``safetensors`` package.

Layout: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {}}``),
then the data, offsets relative to its start.  The header is validated completely before
anything is read: a header that lies about sizes or offsets is a one-line error, and no
buffer is sized by what it declares.  safetensors' numpy API has no bfloat16 (numpy has no
such dtype), so BF16 tensors are read from the byte ranges this module has checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.io.readfile import read_exact
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

MAX_HEADER = 100 << 20  # the format's own limit (safetensors refuses larger headers)

# safetensors dtype -> (our name, numpy dtype or None for bfloat16)
DTYPES: dict[str, tuple[str, str | None]] = {
    "F64": ("float64", "<f8"),
    "F32": ("float32", "<f4"),
    "F16": ("float16", "<f2"),
    "BF16": ("bfloat16", None),
    "I64": ("int64", "<i8"),
    "I32": ("int32", "<i4"),
    "I16": ("int16", "<i2"),
    "I8": ("int8", "i1"),
    "U8": ("uint8", "u1"),
    "BOOL": ("bool", "?"),
}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}


def read(path: str, names: Iterable[str] | None, max_bytes: int) -> TensorFile:
    handle, size = open_weights(path)
    with handle:
        entries, data_start = _header(path, handle, size)
    info = {name: TensorInfo(name, tuple(e["shape"]), DTYPES[e["dtype"]][0]) for name, e in entries}
    offsets = dict(entries)
    chosen = select(path, info, names)
    budget = Budget(path, max_bytes)
    notes: list[str] = []
    tensors: dict[str, np.ndarray] = {}
    raw = _load(path, [n for n in chosen if offsets[n]["dtype"] != "BF16"], budget, offsets)
    bf16 = [n for n in chosen if offsets[n]["dtype"] == "BF16"]
    if bf16:
        handle, _ = open_weights(path)
        with handle:
            for name in bf16:
                begin, end = offsets[name]["data_offsets"]
                budget.charge(2 * (end - begin), name)
                handle.seek(data_start + begin)
                bits = np.frombuffer(read_exact(handle, end - begin, path, name), "<u2")
                raw[name] = bfloat16_to_float32(bits).reshape(info[name].shape)
    for name in chosen:
        tensors[name] = to_float(raw[name], name, info[name].dtype, notes, budget)
    return TensorFile(path, "safetensors", info, tensors, tuple(notes))


def _load(path: str, names: list[str], budget: Budget, offsets: dict) -> dict[str, np.ndarray]:
    """Tensors other than BF16 through ``safetensors.safe_open(framework="np")``."""
    if not names:
        return {}
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CbrError(
            f"{path}: reading .safetensors needs the 'safetensors' package "
            "(pip install 'cbr-cli[safetensors]')"
        ) from None
    out = {}
    try:
        with safe_open(path, framework="np") as handle:
            for name in names:
                begin, end = offsets[name]["data_offsets"]
                budget.charge(end - begin, name)
                # get_tensor copies out of the memory map: independent of the file.
                out[name] = handle.get_tensor(name)
    except SafetensorError as exc:
        raise CbrError(f"{path}: not a valid safetensors file ({_one_line(exc)})") from None
    except OSError as exc:
        raise CbrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return out


def _header(path: str, handle, size: int) -> tuple[list[tuple[str, dict]], int]:
    """Parse and validate the header; returns ``[(name, entry), ...]`` and the data start."""
    if size < 8:
        raise CbrError(f"{path}: not a safetensors file (only {size} bytes)")
    length = int.from_bytes(read_exact(handle, 8, path, "header length"), "little")
    if length > min(MAX_HEADER, size - 8):
        raise CbrError(
            f"{path}: not a valid safetensors file (header declares {length} bytes, "
            f"the file has {size - 8} after the length)"
        )
    try:
        header = json.loads(read_exact(handle, length, path, "header").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CbrError(
            f"{path}: not a valid safetensors file (header is not JSON: {exc})"
        ) from None
    if not isinstance(header, dict):
        raise CbrError(f"{path}: not a valid safetensors file (header is not a JSON object)")
    data_size = size - 8 - length
    entries = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        entries.append((name, _entry(path, name, entry, data_size)))
    spans = sorted((e["data_offsets"][0], e["data_offsets"][1], n) for n, e in entries)
    position = 0
    for begin, end, name in spans:
        if begin < position:
            raise tensor_error(path, name, f"data_offsets [{begin}, {end}] overlap another tensor")
        position = max(position, end)
    return entries, 8 + length


def _entry(path: str, name: str, entry: object, data_size: int) -> dict:
    if not isinstance(entry, dict) or set(entry) - {"dtype", "shape", "data_offsets"}:
        raise tensor_error(path, name, "header entry must have dtype, shape and data_offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise tensor_error(
            path, name, f"unsupported dtype {dtype!r} (expected one of {list(DTYPES)})"
        )
    if not (isinstance(shape, list) and all(_nonneg_int(d) for d in shape)):
        raise tensor_error(path, name, f"shape must be a list of non-negative ints, got {shape!r}")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(_nonneg_int(o) for o in offsets)
    ):
        raise tensor_error(path, name, f"data_offsets must be [begin, end], got {offsets!r}")
    begin, end = offsets
    nbytes = numel(shape) * (ITEMSIZE.get(dtype, 1))
    if end < begin or end > data_size:
        raise tensor_error(
            path,
            name,
            f"data_offsets [{begin}, {end}] run past the data ({data_size} bytes in the file)",
        )
    if end - begin != nbytes:
        raise tensor_error(
            path,
            name,
            f"shape {tuple(shape)} of {dtype} needs {nbytes} bytes, but data_offsets "
            f"[{begin}, {end}] hold {end - begin}",
        )
    return entry


def _nonneg_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
