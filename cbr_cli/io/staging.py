"""``cbr apply`` over an earlier run without losing it: write beside it, then commit by renames.

A run writes every image's files into ``OUT/.cbr-staging-<hex8>/<image>/``. When all are
written, :meth:`Staging.commit` writes ``journal.json`` (which files to move in, which old
ones to remove) and then the run's ``manifest.json`` into the staging folder: that file's
appearance is the **commit point**. Then, in a short phase of renames:

1. ``OUT/manifest.json`` is removed, so no manifest ever describes files that are gone;
2. the files the old manifest records in the image folders this run writes, and that
   this run does not write again, are removed (older runs' files of other image folders
   are kept, and stay recorded in the new manifest's ``files``);
3. every new file is renamed into ``OUT/<image>/`` (a real folder, made if missing);
4. the staging manifest is renamed to ``OUT/manifest.json``; the staging folder is removed.

A run killed before the commit point leaves the old output as it was, plus a staging
folder that the next run removes (:func:`recover`); a failed run (disk full, a late
config error, Ctrl-C) removes it at once. A run killed after the commit point is
completed by the next run: the journal says what is left to do, and every step can be
repeated. So OUT always holds the old complete output or the new one, and
``manifest.json``, when present, lists files that are there.

An ``OUT/manifest.json`` without ``files`` (written before cbr recorded them) records
nothing: then only files with the new run's names are replaced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from cbr_cli.errors import CbrError
from cbr_cli.io.image_folder import MANIFEST, STAGING_PREFIX, OutTree, is_output_name, is_reserved

JOURNAL = "journal.json"


def _image_file(rel: object) -> PurePosixPath | None:
    """``<image>/<file>`` as cbr records it, or None for anything else."""
    if not isinstance(rel, str):
        return None
    path = PurePosixPath(rel)
    ok = (
        len(path.parts) == 2
        and not path.is_absolute()
        and path.parts[0] not in (".", "..")
        and not is_reserved(path.parts[0])
        and is_output_name(path.name)
    )
    return path if ok else None


def _recorded_files(tree: OutTree) -> list[PurePosixPath]:
    """The files ``OUT/manifest.json`` records (none if it is missing or foreign)."""
    from cbr_cli.io.statefiles import load

    data, _ = load(tree.root / MANIFEST)  # a link, FIFO or huge file records nothing
    files = data.get("files") if isinstance(data, dict) else None
    found = [_image_file(rel) for rel in files] if isinstance(files, list) else []
    return [path for path in found if path is not None]


class Staging:
    """A new ``cbr apply`` run, written beside the old output until :meth:`commit`."""

    def __init__(self, tree: OutTree) -> None:
        self.tree = tree
        for _ in range(100):
            self.path = tree.root / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
            try:
                os.mkdir(self.path)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise CbrError(f"cannot create directory {self.path}: {exc.strerror}", 1) from None
        self.committed = False

    def folder(self, name: str) -> Path:
        """The staging folder of the image folder ``OUT/<name>`` (made on first use)."""
        path = self.path / name
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        return path

    def commit(self, manifest: dict[str, Any], files: Iterable[str]) -> None:
        """Write the journal and ``manifest`` (with ``files``), then move the run into place.

        ``files`` are this run's files, relative to OUT (``<image>/<file>``), all already
        written below the staging folder.
        """
        from cbr_cli.io.writers import write_json

        new = sorted(set(files))
        self._check_targets(new)
        touched = {PurePosixPath(rel).parent for rel in new}
        old = _recorded_files(self.tree)
        remove = [p.as_posix() for p in old if p.parent in touched and p.as_posix() not in new]
        kept = [
            p.as_posix()
            for p in old
            if p.parent not in touched and os.path.lexists(self.tree.root.joinpath(*p.parts))
        ]
        write_json(self.path / JOURNAL, {"format": 1, "move": new, "remove": remove})
        write_json(self.path / MANIFEST, {**manifest, "files": sorted({*new, *kept})})
        self.committed = True
        roll_forward(self.tree, self.path)

    def _check_targets(self, files: list[str]) -> None:
        """Refuse, before the commit point, a target that a rename could not replace."""
        checked: set[str] = set()
        for rel in files:
            path = PurePosixPath(rel)
            if path.parent.as_posix() not in checked:
                checked.add(path.parent.as_posix())
                self.tree.folder(path.parent.as_posix())
            target = self.tree.root.joinpath(*path.parts)
            if os.path.isdir(target) and not os.path.islink(target):
                shown = Path(self.tree.label, *path.parts)
                raise CbrError(f"cannot write {shown}: Is a directory", exit_code=1)

    def discard(self) -> None:
        """Remove the staging folder of a run that did not reach its commit point."""
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)


def roll_forward(tree: OutTree, staging: Path) -> None:
    """Complete the commit of a staging folder whose manifest is written (steps 1-4).

    Raises
    ------
    CbrError
        A rename or removal failed; running cbr again completes the commit.
    """
    from cbr_cli.io.statefiles import load

    journal, _ = load(staging / JOURNAL)
    moves = journal.get("move") if isinstance(journal, dict) else None
    removes = journal.get("remove") if isinstance(journal, dict) else None
    if not isinstance(moves, list) or not isinstance(removes, list):
        shutil.rmtree(staging, ignore_errors=True)  # not a journal cbr wrote: not committed
        return
    tree.remove(".", [MANIFEST], temps=False)
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in filter(None, map(_image_file, removes)):
        by_folder[path.parent.as_posix()].append(path.name)
    for folder, names in by_folder.items():
        tree.remove(folder, names)
    moved: dict[str, list[str]] = defaultdict(list)
    try:
        for path in filter(None, map(_image_file, moves)):
            source = staging.joinpath(*path.parts)
            target = tree.folder(path.parent.as_posix(), create=True) / path.name
            if os.path.lexists(source):
                os.replace(source, target)
            moved[path.parent.as_posix()].append(path.name)
        for folder, names in moved.items():  # temporary files of an older, killed write
            tree.remove(folder, names, files=False)
        os.replace(staging / MANIFEST, tree.root / MANIFEST)
    except OSError as exc:
        raise CbrError(
            f"cannot move the new output into {tree.label}: {exc.strerror or exc}; "
            "run cbr again to complete it",
            exit_code=1,
        ) from None
    shutil.rmtree(staging, ignore_errors=True)


def recover(tree: OutTree) -> None:
    """Finish what an earlier, killed ``cbr apply`` left in OUT, or remove it.

    A staging folder with its manifest is committed (rolled forward); one without is
    removed; temporary files of cbr's report files in OUT's root are removed.
    """
    try:
        entries = [
            Path(e.path)
            for e in os.scandir(tree.root)
            if e.name.startswith(STAGING_PREFIX) and e.is_dir(follow_symlinks=False)
        ]
    except OSError as exc:
        raise CbrError(f"cannot list {tree.label}: {exc.strerror or exc}", 1) from None
    ready = [p for p in entries if (p / MANIFEST).is_file()]
    for staging in sorted(ready, key=lambda p: (p / MANIFEST).stat().st_mtime_ns):
        roll_forward(tree, staging)
    for staging in entries:
        if staging not in ready:
            shutil.rmtree(staging, ignore_errors=True)
    tree.clean_root_temps()
