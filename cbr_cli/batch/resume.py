"""When is an image done? Fingerprints, done-markers and clean-up for ``cbr batch``.

An image is done when its folder holds a **done-marker**, ``.cbr-done.json``, written
last (atomically) after every other file of the image, and the marker's fingerprint
equals the current one. Like the files it stands for, the marker is not fsync-ed (that
was 2 ms of a 24 ms feature-only image, and a durable marker would vouch for files that
are not): after a power loss, a marker that is empty or cut short is not valid JSON
and a file it lists that is empty fails :func:`finished`, so the image is redone.
The fingerprint is a SHA-256 over

* the cbr version;
* the resolved pipeline (``PipelineSpec.to_plain()``) and the SHA-256 of every
  ``.npy`` file it names (weights, BN parameters, ...), so editing an array counts;
* what shapes the outputs: the colour the images are read in, ``resize``,
  ``colormap``, ``normalize``, ``save_npy``, ``channel_pngs``, ``pngs``,
  ``npy_dtype``;
* the dataset-wide BN statistics, if any (adding an image to the folder changes
  them, and with them every image's outputs: all are redone);
* the input file: absolute path, size and modification time in nanoseconds
  (rsync's and make's quick check). The content is not hashed -- reading every input
  again on each resume would cost as much I/O as decoding it. A content change that
  keeps size and mtime goes unnoticed: use ``--force``.

Anything else (``--jobs``, the progress display) does not change the outputs.

The marker is small (~6.6 KB for 64 channels in 3 stages, where it held 59 KB listing
everything): what is long is hashed into the fingerprint or derived, not stored::

    {"format": 2, "fingerprint": "<sha256 hex>",
     "image": {"path": "<the input>", "source": {<how it was decoded>},
               "outputs": {"channel_pngs": true, "save_npy": false},
               "labels": {"<layer>": ["c0", "c1", ...]},
               "stages": [{"layer": "<layer>", "stage": "conv", "shape": [C, H, W],
                           "stats": {"min": ["<f4", "<base64>"], ...}}, ...]}}

* the resolved pipeline, its arrays and the input's identity are in the fingerprint
  only; ``path`` stays (the orphan check asks whether the input still exists) and
  ``source`` (the folder manifest shows it);
* the files are not listed: they are :func:`cbr_cli.io.image_folder.output_names` of
  the stages and the ``outputs`` flags (:func:`cbr_cli.io.image_folder.marker_names`),
  the names the image writer used;
* the per-channel statistics are exact columns (:mod:`cbr_cli.io.columns`), so
  ``stats.csv`` and ``aggregate.csv`` are byte for byte those of the numbers themselves;
  the labels are stored once per layer (every stage of a layer has its channels' labels).

A marker of format 1 (earlier cbr versions: everything listed in JSON) is stale, as a
marker of another cbr version: the image is redone, without a warning, and the files it
lists are cleaned as before (names of cbr's shape only). Any other file is not a marker
as cbr writes it: a one-line warning, and the image is redone.

A rerun skips an image whose marker matches and whose files all exist and are
non-empty; any other image is redone. Before its files are written, a pending record
(``.cbr-pending.json``) lists every file cbr wrote there before and every file it is
about to write; then the marker and those files go (see
:meth:`cbr_cli.io.image_folder.ImageFolder.prepare`). Only files a record lists or
derives (and that have the shape of cbr's names), files with exactly the names this
run writes, and temporary files of those are removed; other files are never touched.
Why this survives SIGKILL at any moment: every file appears by ``rename``, complete or
not at all; the pending record comes before the files and the marker last, so a folder
without a valid marker is redone and cleaned of everything cbr may have put there;
the dataset statistics are cached only once complete, and are deterministic anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cbr_cli.errors import CbrError
from cbr_cli.io.image_folder import MARKER, marker_names

MARKER_FORMAT = 2
STALE_FORMATS = (1,)
"""Formats of earlier cbr versions: such a marker is stale (redone without a warning)."""


def digest(data: Any) -> str:
    """SHA-256 (hex) of ``data`` as canonical JSON (sorted keys, floats by ``repr``)."""
    from cbr_cli.io.writers import to_jsonable

    text = json.dumps(to_jsonable(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes."""
    from cbr_cli.io.readfile import open_regular  # a FIFO or a device would never end

    sha = hashlib.sha256()
    try:
        with open_regular(path, lambda reason: CbrError(f"cannot read {path}: {reason}", 1)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    except OSError as exc:
        raise CbrError(f"cannot read {path}: {exc.strerror or exc}", 1) from None
    return sha.hexdigest()


def npy_digests(plain: Any) -> dict[str, str]:
    """``{path: sha256}`` of every ``.npy`` file named in config data, and of its
    ``weights:`` file (a state_dict or model), so that editing any of them in place counts."""
    found: dict[str, str] = {}
    if isinstance(plain, dict) and isinstance(plain.get("weights"), str):
        found[plain["weights"]] = file_digest(plain["weights"])

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, str) and value.lower().endswith(".npy") and value not in found:
            found[value] = file_digest(value)

    visit(plain)
    return found


def input_state(path: str) -> dict[str, Any] | None:
    """Absolute path, size and mtime (ns) of an input file; None if it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def image_fingerprint(run_key: str, path: str) -> str | None:
    """The fingerprint of one image under ``run_key``; None if the file is unreadable."""
    stat = input_state(path)
    return None if stat is None else digest({"run": run_key, "input": stat})


def load_marker(
    folder: str | os.PathLike[str],
    fingerprint: str | None = None,
    stages: Sequence[tuple[str, str, int]] | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The done-marker of an image folder if it is one as cbr writes it, and a warning.

    ``(marker, None)`` for a valid marker, ``(None, None)`` if there is none, and
    ``(None, warning)`` (one line naming the file) for a file that is not a marker as
    cbr writes it (:func:`cbr_cli.io.statefiles.check_marker`; ``fingerprint`` and
    ``stages`` as there): the image counts as unfinished.
    """
    from cbr_cli.io.statefiles import check_marker, load

    path = Path(folder) / MARKER
    data, problem = load(path)
    if data is not None and data.get("format") in STALE_FORMATS:
        return None, None
    if problem is None and data is not None:
        problem = check_marker(data, MARKER_FORMAT, fingerprint, stages)
        if problem is None:
            return data, None
    if problem is None:
        return None, None
    return None, f"{path}: {problem}; ignored: the image is redone"


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The done-marker of an image folder, or None if missing or not a valid marker."""
    return load_marker(folder)[0]


def finished(
    folder: str | os.PathLike[str],
    fingerprint: str | None,
    stages: Sequence[tuple[str, str, int]] | None = None,
    warn: Callable[[str], None] | None = None,
) -> bool:
    """True if ``folder`` holds a matching marker and every file it stands for is there.

    ``stages`` (layer, stage, channels) are what the pipeline writes: a marker with the
    current fingerprint must list exactly these. ``warn`` is called with a one-line
    warning if the marker file is not one as cbr writes it.
    """
    if fingerprint is None:
        return False
    marker, problem = load_marker(folder, fingerprint, stages)
    if problem is not None and warn is not None:
        warn(problem)
    if marker is None or marker["fingerprint"] != fingerprint:
        return False
    for name in marker_names(marker["image"]):
        try:
            if os.stat(Path(folder) / name).st_size == 0:
                return False
        except OSError:
            return False
    return True


def write_marker(
    folder: str | os.PathLike[str],
    fingerprint: str | None,
    image: dict[str, Any],
    *,
    channel_pngs: bool,
    save_npy: bool,
    pngs: bool = True,
    report: bool = False,
) -> None:
    """Write the done-marker of ``image`` (an ``ImageRecord.to_dict()``): last,
    atomically, not fsync-ed (see the module docstring)."""
    from cbr_cli.io.writers import write_json

    write_json(
        Path(folder) / MARKER,
        {
            "format": MARKER_FORMAT,
            "fingerprint": fingerprint,
            "image": marker_image(
                image, channel_pngs=channel_pngs, save_npy=save_npy, pngs=pngs, report=report
            ),
        },
        compact=True,
        durable=False,
    )


def marker_image(
    image: dict[str, Any],
    *,
    channel_pngs: bool,
    save_npy: bool,
    pngs: bool = True,
    report: bool = False,
) -> dict[str, Any]:
    """The ``image`` part of a done-marker (see the module docstring) from an
    ``ImageRecord.to_dict()``."""
    from cbr_cli.io.columns import STAT_KEYS, encode_stats

    labels: dict[str, list[str]] = {}
    stages = []
    for stage in image["stages"]:
        channels = stage["channels"]
        names = [c["label"] for c in channels]
        if labels.setdefault(stage["layer"], names) != names:
            raise ValueError(f"layer {stage['layer']!r}: stages with different labels")
        _, height, width = stage["shape"]
        columns = {key: [c[key] for c in channels] for key in STAT_KEYS}
        stages.append(
            {
                "layer": stage["layer"],
                "stage": stage["stage"],
                "shape": list(stage["shape"]),
                "stats": encode_stats(columns, height * width),
            }
        )
    return {
        "path": image["path"],
        "source": image["source"],
        "outputs": {
            "channel_pngs": channel_pngs,
            "save_npy": save_npy,
            "pngs": pngs,
            "report": report,
        },
        "labels": labels,
        "stages": stages,
    }


def marker_stats(stage: dict[str, Any]) -> dict[str, list[float | None]]:
    """The per-channel statistics of a stage of a valid marker: ``{key: values}`` for
    every key of :data:`cbr_cli.io.columns.STAT_KEYS` (``None``: non-finite)."""
    from cbr_cli.io.columns import STAT_KEYS, decode_column

    channels, height, width = stage["shape"]
    return {
        key: decode_column(stage["stats"][key], key, channels, height * width) for key in STAT_KEYS
    }
