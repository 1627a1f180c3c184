"""``cbr batch --store``: every image's feature maps in one Zarr (v3) store.

The one module that imports ``zarr`` (the ``cbr-cli[zarr]`` extra); import it only when
``--store`` is given.

Layout
------
::

    features.zarr/
      zarr.json            attributes["cbr"]: format, fingerprints, pipeline, versions
      image                (N,) str      the images' paths relative to IN, sorted
      done                 (N,) uint8    1 once every chunk of that image is written
      <layer>/
        image              (N,) str      the same paths (a coordinate for xarray)
        <stage>            (N, C, H, W)  float32 or float16, NaN where not done

``<stage>`` is ``conv``, ``bn`` or ``act``; dimension names are ``image``, ``channel``,
``y``, ``x``. Chunks are one image each, ``(1, C, H, W)``, or, for maps larger than
:data:`CHUNK_BYTES`, a few chunks per image split along the channels ``(1, c, H, W)``:
every chunk belongs to one image, so worker processes writing different images never
write the same chunk (no locks). Chunks are zstd-compressed (ReLU maps are sparse).

Crash safety
------------
* Creation: the store is built under a temporary name beside ``path`` and renamed into
  place when complete, so ``path`` is either absent or a whole store.
* An image counts only when its ``done`` flag is 1, and the flag is written after all
  of its chunks: a SIGKILL leaves images with some chunks and no flag, which a
  resumed run rewrites whole (and the ``*.partial`` files zarr's atomic writes leave
  behind are removed on opening). Every chunk is encoded deterministically, so the
  resumed store has the bytes of an uninterrupted run. As for feature-map PNGs, nothing
  is fsync-ed: a killed process loses nothing, a power loss may.
* Reopening checks two fingerprints: the **config** (pipeline, its ``.npy`` files, the
  colour, ``resize``, dtype, dataset-wide BN statistics, cbr version) and the **input
  set** (every image's path, size and mtime). If either differs the store is not
  touched and :func:`open_store` raises a one-line CbrError saying which; ``rebuild``
  (``--force``) replaces it. An error rather than a silent rebuild: a store holds
  hours of work, and a different input set also changes N, the arrays' shape.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbr_cli.errors import CbrError

STORE_FORMAT = 1
CHUNK_BYTES = 32 * 2**20  # uncompressed; larger per-image maps are split along the channels
DIMENSIONS = ["image", "channel", "y", "x"]
DTYPES = ("float32", "float16")
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr LocalStore's temporary files
_SIDE = ".cbr-tmp-"  # a store being built or removed, beside the store


@dataclass(frozen=True)
class StoreLayout:
    """What a store holds.

    Attributes
    ----------
    images : tuple of str
        The images' paths relative to IN, in sorted order (the ``image`` axis).
    arrays : dict of str to (C, H, W)
        ``"<layer>/<stage>"`` to the shape of one image's map, in pipeline order.
    dtype : {"float32", "float16"}
    """

    images: tuple[str, ...]
    arrays: dict[str, tuple[int, int, int]]
    dtype: str = "float32"


def stage_shapes(spec: Any, input_shape: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    """``{"<layer>/<stage>": (C, H, W)}`` for every stage the pipeline outputs.

    ``input_shape`` is ``(C, H, W)`` of the first layer's input; the sizes come from
    :func:`cbr_cli.spec.layerstack.analyze` (the arithmetic of ``cbr shape``).
    """
    from cbr_cli.spec.layerstack import analyze

    shapes: dict[str, tuple[int, int, int]] = {}
    for row in analyze(spec, input_shape).layers:
        c, h, w = row.output_shape
        for stage in row.stages:
            shapes[f"{row.name}/{stage}"] = (c, h, w)
    return shapes


def one_size(sizes: Sequence[tuple[int, int]] | frozenset[tuple[int, int]]) -> tuple[int, int]:
    """The one size every image reaches the first layer at.

    Raises
    ------
    CbrError
        Several sizes (or none): a store holds arrays of one shape.
    """
    found = sorted(sizes)
    if len(found) != 1:
        shown = " and ".join(f"{h}x{w}" for h, w in found[:2]) or "no readable image"
        raise CbrError(
            f"--store: every image must reach the first layer at one size (found {shown}); "
            "use --resize HxW"
        )
    return found[0]


def store_keys(config: Mapping[str, Any], inputs: Sequence[str]) -> tuple[str, str]:
    """The config and input-set fingerprints (SHA-256 hex) a store is checked against.

    ``config`` is everything that shapes the stored numbers (see the module docstring);
    ``inputs`` the images' paths in store order (path, size and mtime are hashed).
    """
    from cbr_cli.batch.resume import digest, input_state

    return digest(dict(config)), digest([input_state(p) for p in inputs])


def _chunk_channels(shape: tuple[int, int, int], itemsize: int) -> int:
    c, h, w = shape
    per_channel = max(1, h * w * itemsize)
    pieces = math.ceil(c * per_channel / CHUNK_BYTES)
    return max(1, math.ceil(c / max(1, pieces)))


def _require_zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise CbrError("--store needs the zarr package: pip install 'cbr-cli[zarr]'", 2) from None
    return zarr


def _cbr_attrs(path: str) -> dict[str, Any] | None:
    """The ``cbr`` attributes of a store's root group, or None if it is not a cbr store."""
    zarr = _require_zarr()
    try:
        root = zarr.open_group(path, mode="r")
        attrs = root.attrs.get("cbr")
    except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError):
        return None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == STORE_FORMAT else None


def _side_path(path: str, kind: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{_SIDE}{kind}-{uuid.uuid4().hex[:8]}")


def _clean_side(path: str) -> None:
    """Remove what an interrupted build or rebuild left beside the store."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}{_SIDE}"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def _clean_partial(path: str) -> None:
    """Remove zarr's temporary chunk files a killed writer left."""
    for folder, _, files in os.walk(path):
        for name in files:
            if _PARTIAL.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


def _build(path: str, layout: StoreLayout, attrs: dict[str, Any]) -> None:
    """Create the whole (empty) store under a temporary name, then rename it into place."""
    zarr = _require_zarr()
    from zarr.codecs import ZstdCodec

    from cbr_cli.io.writers import to_jsonable

    if layout.dtype not in DTYPES:
        raise CbrError(f"--dtype: expected one of {', '.join(DTYPES)} (got {layout.dtype!r})")
    n = len(layout.images)
    tmp = _side_path(path, "new")
    names = np.array(layout.images, dtype=str)
    root = zarr.open_group(tmp, mode="w-", zarr_format=3)
    for group in [root] + [root.require_group(name.split("/")[0]) for name in layout.arrays]:
        if "image" not in group:
            image = group.create_array(
                "image", shape=(n,), chunks=(max(1, n),), dtype=str, dimension_names=["image"]
            )
            image[:] = names
    root.create_array(
        "done",
        shape=(n,),
        chunks=(1,),
        dtype="uint8",
        fill_value=0,
        compressors=None,
        dimension_names=["image"],
    )
    itemsize = np.dtype(layout.dtype).itemsize
    for name, (c, h, w) in layout.arrays.items():
        group_name, stage = name.split("/")
        root[group_name].create_array(
            stage,
            shape=(n, c, h, w),
            chunks=(1, _chunk_channels((c, h, w), itemsize), h, w),
            dtype=layout.dtype,
            fill_value=np.nan,
            compressors=ZstdCodec(level=3),
            dimension_names=DIMENSIONS,
            config={"write_empty_chunks": False},
        )
    root.attrs["cbr"] = to_jsonable(
        {**attrs, "format": STORE_FORMAT, "arrays": list(layout.arrays), "dtype": layout.dtype}
    )
    os.rename(tmp, path)


def open_store(
    path: str | os.PathLike[str],
    layout: StoreLayout,
    keys: tuple[str, str],
    attrs: Mapping[str, Any] | None = None,
    *,
    rebuild: bool = False,
) -> FeatureStore:
    """Create the store at ``path``, or reopen it to resume (see the module docstring).

    Parameters
    ----------
    path : path
        The store (a folder). Its parent folder must exist.
    layout : StoreLayout
    keys : (config fingerprint, input-set fingerprint)
        From :func:`store_keys`.
    attrs : mapping, optional
        More attributes for ``attributes["cbr"]`` (the pipeline, versions, ...); JSON-able.
    rebuild : bool
        Replace a store of another config or input set instead of refusing it.

    Raises
    ------
    CbrError
        ``path`` exists and is not a cbr store; it holds another config or input set
        (without ``rebuild``); zarr is not installed; it cannot be written.
    """
    path = os.path.abspath(os.fspath(path))
    config_key, inputs_key = keys
    meta = {**(attrs or {}), "config_key": config_key, "inputs_key": inputs_key}
    try:
        _clean_side(path)
        if os.path.lexists(path):
            found = _cbr_attrs(path)
            if found is None:
                raise CbrError(
                    f"--store {path}: exists and is not a cbr feature store; give another path"
                )
            why = None
            if found.get("inputs_key") != inputs_key:
                why = "another set of input images"
            elif found.get("config_key") != config_key:
                why = "features of another config (pipeline, weights, resize, dtype or BN stats)"
            if why is not None and not rebuild:
                raise CbrError(
                    f"--store {path}: holds {why}; use --force to rebuild it or give another path"
                )
            if why is not None:
                old = _side_path(path, "old")
                os.rename(path, old)  # then the new store, then the old one goes
                _build(path, layout, meta)
                shutil.rmtree(old, ignore_errors=True)
            else:
                _clean_partial(path)
        else:
            _build(path, layout, meta)
    except OSError as exc:
        raise CbrError(f"--store {path}: {exc.strerror or exc}", 1) from None
    store = FeatureStore(path)
    if store.arrays != list(layout.arrays) or store.count != len(layout.images):
        raise CbrError(f"--store {path}: its arrays do not match the pipeline; use --force", 2)
    return store


class FeatureStore:
    """An open store: which images are done, and a writer to hand to worker processes."""

    def __init__(self, path: str) -> None:
        zarr = _require_zarr()
        self.path = path
        self._root = zarr.open_group(path, mode="r")
        meta = self._root.attrs["cbr"]
        self.arrays: list[str] = list(meta["arrays"])
        self.dtype: str = meta["dtype"]
        self.count: int = self._root["done"].shape[0]

    def done(self) -> np.ndarray:
        """``(N,)`` bool: the images whose every chunk is written."""
        return np.asarray(self._root["done"][:], dtype=bool)

    def writer(self) -> StoreWriter:
        """A small picklable handle that writes images from any process."""
        return StoreWriter(self.path, tuple(self.arrays), self.dtype)


@dataclass(frozen=True)
class StoreWriter:
    """Writes whole images into a store; picklable, opens the arrays once per process."""

    path: str
    arrays: tuple[str, ...]
    dtype: str

    def _open(self) -> dict[str, Any]:
        key = (self.path, self.arrays)
        if key not in _open_arrays:
            zarr = _require_zarr()
            root = zarr.open_group(self.path, mode="r+")
            _open_arrays[key] = {name: root[name] for name in (*self.arrays, "done")}
        return _open_arrays[key]

    def write(self, index: int, maps: Mapping[str, np.ndarray], name: str = "") -> None:
        """Write image ``index``'s maps (``"<layer>/<stage>"`` -> (C, H, W)), then its flag.

        Raises
        ------
        CbrError
            A map is missing or has another shape than the store (naming the image).
        """
        arrays = self._open()
        for array_name in self.arrays:
            data = maps.get(array_name)
            want = arrays[array_name].shape[1:]
            if data is None or tuple(data.shape) != tuple(want):
                got = "missing" if data is None else "x".join(map(str, data.shape))
                raise CbrError(
                    f"{name or index}: {array_name} is {got}, the store holds "
                    f"{'x'.join(map(str, want))}: every image must give one output size "
                    "(use --resize HxW)",
                    1,
                )
        for array_name in self.arrays:
            with np.errstate(over="ignore"):  # float16: beyond 65504 is inf, as in numpy
                arrays[array_name][index] = np.asarray(maps[array_name], dtype=self.dtype)
        arrays["done"][index] = 1  # last: the image counts from here on

    def clear(self, index: int) -> None:
        """Unmark image ``index`` (flag first), then drop its chunks."""
        arrays = self._open()
        arrays["done"][index] = 0
        for array_name in self.arrays:
            arrays[array_name][index] = np.nan  # all fill value: zarr deletes the chunks


_open_arrays: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}


def maps_of(results: Sequence[Any]) -> dict[str, np.ndarray]:
    """``{"<layer>/<stage>": (C, H, W)}`` from one image's ``run_layers`` results."""
    return {f"{r.layer}/{r.stage}": r.data[0] for r in results}


def store_task(item: tuple[int, str, str, StoreWriter, Any]) -> str | None:
    """Compute one image and write it into the store (a pool task); None or why it failed.

    ``item`` is ``(index, path, name, writer, batch_stats)``; the pool's state is a
    :class:`cbr_cli.batch.scan.RunSetup`.
    """
    from cbr_cli.batch.pool import state
    from cbr_cli.batch.scan import failure_reason
    from cbr_cli.run.pipeline import run_layers

    index, path, name, writer, batch_stats = item
    setup = state()
    try:
        x = setup.load(path)
        results = run_layers(setup.layers(x.shape[1]), x, batch_stats=batch_stats)
        writer.write(index, maps_of(results), name)
    except (CbrError, MemoryError) as exc:
        with contextlib.suppress(CbrError, OSError):
            writer.clear(index)
        return failure_reason(exc)
    return None


def tree_digest(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative file: sha256}`` of every file in a store (for tests and checks)."""
    import hashlib

    root = Path(path)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
