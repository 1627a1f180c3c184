"""Reading back the state files cbr keeps in OUT, validated. No printing.

``cbr batch`` reads two kinds of files it wrote earlier: each image's done-marker
(``<image folder>/.cbr-done.json``, :mod:`cbr_cli.batch.resume`) and the cache of the
dataset-wide BN statistics (``OUT/bn_stats.json``). A user may edit them, another
program may write them, a different cbr may have left them. Whatever they contain,
reading them never raises: a file is either exactly what cbr writes -- the types,
lengths, shapes and finite numbers below -- or it is treated as absent, so the work it
stood for is done again, and the caller gets one line saying why (a warning it can
show). Files that are missing, or valid but stale (another pipeline, other inputs),
are absent without a warning: that is the normal reason to redo work.

Reads are bounded: at most :data:`MAX_STATE_BYTES` are read, from a regular file
opened without following a symlink and without blocking (a FIFO planted in OUT does
not hang the run, ``/dev/zero`` does not fill memory).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

MAX_STATE_BYTES = 64 << 20
"""Largest state file read (a marker holds ~30 bytes per channel and stage)."""

MAX_CHANNEL_STAGES = 200_000
"""Most channels (summed over stages) a marker may stand for: bounds the work of
decoding it and the file names cleanup derives from it, whatever the file says."""

STAGES = ("conv", "bn", "act")


_MISSING = object()


class _Invalid(ValueError):
    """Raised inside this module only; becomes the ``problem`` string of a read."""


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "nothing (missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
    return names.get(type(value), "a number")


def _need(ok: bool, where: str, expected: str, value: Any) -> None:
    if not ok:
        raise _Invalid(f"{where}: expected {expected}, got {_kind(value)}")


def _object(value: Any, where: str) -> dict[str, Any]:
    _need(isinstance(value, dict), where, "an object", value)
    return value


def _list(value: Any, where: str, length: int | None = None) -> list[Any]:
    _need(isinstance(value, list), where, "a list", value)
    if length is not None and len(value) != length:
        raise _Invalid(f"{where}: expected {length} entries, got {len(value)}")
    return value


def _str(value: Any, where: str) -> str:
    _need(isinstance(value, str), where, "a string", value)
    return value


def _int(value: Any, where: str, low: int = 0) -> int:
    _need(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
    if value < low:
        raise _Invalid(f"{where}: expected an integer >= {low}, got {value}")
    return value


def _number(value: Any, where: str, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    _need(ok, where, "a number" + (" or null" if nullable else ""), value)
    if not math.isfinite(value):  # only reachable for floats built in Python, not JSON
        raise _Invalid(f"{where}: expected a finite number, got {value}")
    return float(value)


def _reject_constant(name: str) -> None:
    raise _Invalid(f"non-finite number {name} (cbr writes null)")


def load(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``path``: ``(data, None)``; ``(None, None)`` if there is no such
    file; ``(None, problem)`` if it cannot be read or is not a JSON object."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "a symbolic link (not followed)"
        return None, f"cannot open it ({exc.strerror or exc})"
    try:
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return None, "not a regular file"
            if info.st_size > MAX_STATE_BYTES:
                return None, f"larger than {MAX_STATE_BYTES} bytes"
            raw = f.read(MAX_STATE_BYTES + 1)  # in case it grows meanwhile
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or exc})"
    if len(raw) > MAX_STATE_BYTES:
        return None, f"larger than {MAX_STATE_BYTES} bytes"
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except _Invalid as exc:
        return None, str(exc)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return None, f"not valid JSON ({str(exc).splitlines()[0]})"
    if not isinstance(data, dict):  # every state file is an object
        return None, f"expected a JSON object, got {_kind(data)}"
    return data, None


# ------------------------------------------------------------------ markers


def _stage(
    value: Any, where: str, labels: Mapping[str, Any], total: list[int]
) -> tuple[str, str, int]:
    from cbr_cli.io.columns import STAT_KEYS, ColumnError, decode_column

    stage = _object(value, where)
    layer = _str(stage.get("layer", _MISSING), f"{where}.layer")
    kind = _str(stage.get("stage", _MISSING), f"{where}.stage")
    if kind not in STAGES:
        raise _Invalid(f"{where}.stage: expected one of {', '.join(STAGES)}, got {kind!r}")
    if (
        not layer or "/" in layer or "\\" in layer or "\0" in layer
    ):  # cbr's file names start with it
        raise _Invalid(f"{where}.layer: expected a layer name, got {layer!r}")
    shape = _list(stage.get("shape", _MISSING), f"{where}.shape", 3)
    for i, size in enumerate(shape):
        _int(size, f"{where}.shape[{i}]", 1)
    total[0] += shape[0]
    if total[0] > MAX_CHANNEL_STAGES:
        raise _Invalid(f"{where}.shape[0]: more than {MAX_CHANNEL_STAGES} channels in all")
    if layer not in labels:
        raise _Invalid(f"image.labels: no labels for layer {layer!r}")
    _list(labels[layer], f"image.labels.{layer}", shape[0])
    stats = _object(stage.get("stats", _MISSING), f"{where}.stats")
    for key in STAT_KEYS:
        try:
            decode_column(stats.get(key, _MISSING), key, shape[0], shape[1] * shape[2])
        except ColumnError as exc:
            raise _Invalid(f"{where}.stats.{key}: {exc}") from None
    return layer, kind, shape[0]


def check_marker(
    data: Any,
    marker_format: int,
    fingerprint: str | None = None,
    stages: Sequence[tuple[str, str, int]] | None = None,
) -> str | None:
    """Why ``data`` is not a done-marker as cbr writes it (None if it is).

    The layout is described in :mod:`cbr_cli.batch.resume`; the statistics columns in
    :mod:`cbr_cli.io.columns`.

    Parameters
    ----------
    data : any
        The parsed JSON.
    marker_format : int
        The ``format`` cbr writes (:data:`cbr_cli.batch.resume.MARKER_FORMAT`).
    fingerprint : str, optional
        The current fingerprint: if the marker's equals it, the marker must also list
        exactly ``stages``.
    stages : sequence of (layer, stage, channels), optional
        The stages the current pipeline writes, in order.
    """
    try:
        marker = _object(data, "the marker")
        given = marker.get("format", _MISSING)
        if given != marker_format or isinstance(given, bool):
            shown = repr(given) if isinstance(given, (int, float, str)) else _kind(given)
            raise _Invalid(f"format: expected {marker_format}, got {shown}")
        marked = marker.get("fingerprint", _MISSING)
        _need(isinstance(marked, str) or marked is None, "fingerprint", "a string", marked)
        image = _object(marker.get("image", _MISSING), "image")
        _str(image.get("path", _MISSING), "image.path")
        _object(image.get("source", _MISSING), "image.source")
        outputs = _object(image.get("outputs", _MISSING), "image.outputs")
        for flag in ("channel_pngs", "save_npy"):
            value = outputs.get(flag, _MISSING)
            _need(isinstance(value, bool), f"image.outputs.{flag}", "a boolean", value)
        for flag, default in (("pngs", True), ("report", False)):  # optional
            value = outputs.get(flag, default)
            _need(isinstance(value, bool), f"image.outputs.{flag}", "a boolean", value)
        labels = _object(image.get("labels", _MISSING), "image.labels")
        for layer, names in labels.items():
            for c, label in enumerate(_list(names, f"image.labels.{layer}")):
                _str(label, f"image.labels.{layer}[{c}]")
        total = [0]
        found = [
            _stage(s, f"image.stages[{i}]", labels, total)
            for i, s in enumerate(_list(image.get("stages", _MISSING), "image.stages"))
        ]
    except _Invalid as exc:
        return str(exc)
    if stages is not None and marker["fingerprint"] == fingerprint and found != list(stages):
        return "image.stages: do not match the pipeline's layers, stages and channels"
    return None


# ---------------------------------------------------------------- BN cache


def check_bn_cache(
    data: Any, key: str, channels: Mapping[str, int], names: Sequence[str]
) -> tuple[bool, str | None]:
    """Is ``data`` the BN statistics cache for ``key``?

    Parameters
    ----------
    data : any
        The parsed JSON.
    key : str
        The current cache key (pipeline, inputs, ...).
    channels : mapping of str to int
        Every batch-mode BN layer of the pipeline and its channel count, in order.
    names : sequence of str
        The images (relative paths) the statistics are over.

    Returns
    -------
    (usable, problem)
        ``(True, None)``: valid and for ``key``. ``(False, None)``: valid but stale.
        ``(False, problem)``: not what cbr writes.
    """
    try:
        cache = _object(data, "the cache")
        cached_key = _str(cache.get("key", _MISSING), "key")
        _int(cache.get("images", _MISSING), "images")
        failures = _list(cache.get("failures", _MISSING), "failures")
        for i, failure in enumerate(failures):
            pair = _list(failure, f"failures[{i}]", 2)
            _str(pair[0], f"failures[{i}][0]")
            _str(pair[1], f"failures[{i}][1]")
        layers = _object(cache.get("layers", _MISSING), "layers")
        for name, entry in layers.items():
            layer = _object(entry, f"layers.{name}")
            _int(layer.get("count", _MISSING), f"layers.{name}.count", 2)
            for part in ("mean", "var"):
                values = _list(layer.get(part, _MISSING), f"layers.{name}.{part}")
                for i, v in enumerate(values):
                    number = _number(v, f"layers.{name}.{part}[{i}]")
                    if part == "var" and number is not None and number < 0:
                        raise _Invalid(f"layers.{name}.var[{i}]: expected a number >= 0, got {v}")
        if cached_key != key:
            return False, None
        known = set(names)
        failed = [pair[0] for pair in failures]
        for i, name in enumerate(failed):
            if name not in known:
                raise _Invalid(f"failures[{i}]: {name!r} is not one of the images")
        if len(set(failed)) != len(failed):
            raise _Invalid("failures: an image is listed twice")
        if not layers:  # every image failed: no statistics
            if len(set(failed)) != len(known):
                raise _Invalid("layers: empty, but not every image failed")
        elif list(layers) != list(channels):
            raise _Invalid(f"layers: expected {', '.join(channels)}, got {', '.join(layers)}")
        for name, count in channels.items():
            for part in ("mean", "var") if layers else ():
                if len(layers[name][part]) != count:
                    raise _Invalid(
                        f"layers.{name}.{part}: expected {count} entries, "
                        f"got {len(layers[name][part])}"
                    )
    except _Invalid as exc:
        return False, str(exc)
    return True, None


def read_bn_cache(
    path: str | os.PathLike[str], key: str, channels: Mapping[str, int], names: Sequence[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """The BN statistics cache at ``path`` if it is valid and for ``key`` (see
    :func:`check_bn_cache`), else None; and a warning naming the file if it is invalid."""
    data, problem = load(path)
    if problem is None and data is not None:
        usable, problem = check_bn_cache(data, key, channels, names)
        if usable:
            return data, None
    if problem is None:
        return None, None
    return None, f"{os.fspath(path)}: {problem}; ignored: the BN statistics are computed again"
