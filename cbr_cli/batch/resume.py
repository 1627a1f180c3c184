"""When is an image done? Fingerprints, done-markers and clean-up for ``cbr batch``.

An image is done when its folder holds a **done-marker**, ``.cbr-done.json``, written
last (atomically, fsync-ed) after every other file of the image, and the marker's
fingerprint equals the current one. The fingerprint is a SHA-256 over

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

A rerun skips an image whose marker matches and whose listed files all exist and are
non-empty; any other image is redone. Before its files are written, a pending record
(``.cbr-pending.json``) lists every file cbr wrote there before and every file it is
about to write; then the marker and those files go (see
:meth:`cbr_cli.io.image_folder.ImageFolder.prepare`). Only files a record lists (and that
have the shape of cbr's names), files with exactly the names this run writes, and
temporary files of those are removed; other files are never touched. Why this
survives SIGKILL at any moment: every file appears by ``rename``, complete or not at
all; the pending record comes before the files and the marker last, so a folder
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
from cbr_cli.io.image_folder import INPUT_PNG, MARKER

MARKER_FORMAT = 1


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
    out_root: str,
    stages: Sequence[tuple[str, str, int]] | None = None,
    warn: Callable[[str], None] | None = None,
) -> bool:
    """True if ``folder`` holds a matching marker and every file it lists is there.

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
    # input.png unless the run wrote no PNG (--no-pngs; older markers always name it)
    listed = [Path(folder) / INPUT_PNG] if marker["image"].get("input_png", True) else []
    for stage in marker["image"]["stages"]:
        for value in stage["files"].values():
            names = value if isinstance(value, list) else [value]
            listed.extend(Path(out_root) / name for name in names)
    for path in listed:
        try:
            if os.stat(path).st_size == 0:
                return False
        except OSError:
            return False
    return True


def write_marker(folder: str | os.PathLike[str], fingerprint: str | None, image: dict) -> None:
    """Write the done-marker: last, atomically, fsync-ed."""
    from cbr_cli.io.writers import write_json

    write_json(
        Path(folder) / MARKER,
        {"format": MARKER_FORMAT, "fingerprint": fingerprint, "image": image},
        compact=True,
    )


def relative_record(image: dict[str, Any], out_root: str) -> dict[str, Any]:
    """An ``ImageRecord.to_dict()`` with its output paths relative to ``out_root``."""

    def rel(path: str) -> str:
        return Path(os.path.relpath(path, out_root)).as_posix()

    stages = []
    for stage in image["stages"]:
        files = {
            key: [rel(v) for v in value] if isinstance(value, list) else rel(value)
            for key, value in stage["files"].items()
        }
        stages.append({**stage, "files": files})
    record = {**image, "out_dir": rel(image["out_dir"]), "stages": stages}
    if image.get("input_png"):
        record["input_png"] = rel(image["input_png"])
    if image.get("layers"):
        record["layers"] = {
            layer: {kind: rel(path) for kind, path in files.items()}
            for layer, files in image["layers"].items()
        }
    if image.get("report"):
        record["report"] = rel(image["report"])
    return record
