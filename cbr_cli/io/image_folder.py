"""OUT and its image folders: the only module that knows the names of cbr's files there.

Layout (``OUT`` is ``--out``)::

    OUT/<image>/input.png                   the input as the pipeline sees it
    OUT/<image>/<layer>_<stage>_grid.png    every channel of a stage
    OUT/<image>/<layer>_<stage>_c<NN>.png   one channel (NN: at least two digits)
    OUT/<image>/<layer>_<stage>.npy         with --save-npy
    OUT/<image>/<layer>_kernels.png         the report's pictures: the layer's weights
    OUT/<image>/<layer>_hist.png            and its conv -> BN -> activation histograms
    OUT/<image>/report.html                 ``cbr batch``: the image's report page
    OUT/report.html                         ``cbr apply``'s report of the run
    OUT/index.html                          ``cbr batch``'s gallery of the folder
    OUT/<image>/.cbr-done.json              ``cbr batch``: the done-marker, written last
    OUT/<image>/.cbr-pending.json           ``cbr batch``: files an unfinished image may hold
    OUT/.<name>.<hex8>.tmp                  an atomic write in progress (:mod:`cbr_cli.io.writers`)
    OUT/.cbr-staging-<hex8>/                ``cbr apply``: a new run before its commit

plus the report names of :data:`RESERVED`, which no image folder may take.

Two safety rules hold for everything cbr does in OUT:

* **Real folders only.** Every folder cbr creates, enters, writes into or cleans below
  OUT is a real directory: a symbolic link on any component below OUT is refused with
  an error naming it (OUT itself may be a link the user made). Clean-up lists and
  unlinks through directory descriptors opened with ``O_NOFOLLOW``, so it cannot be
  led out of OUT.
* **Only cbr's own files are removed**: names that cbr's own record lists (``cbr
  apply``'s ``manifest.json``, ``cbr batch``'s pending record) or derives from its
  stages (``cbr batch``'s done-marker: :func:`marker_names`, through
  :func:`output_names` as they were written) and that have the shape of cbr's output
  names, or exactly the names the current run is
  about to write, and temporary files whose inner name is one of those. A user's
  ``holiday_act.png`` or ``notes.txt`` in an image folder is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from cbr_cli.errors import CbrError
from cbr_cli.io.outlock import LOCK_FILE

INPUT_PNG = "input.png"
IMAGE_REPORT = "report.html"
MARKER = ".cbr-done.json"
PENDING = ".cbr-pending.json"
MANIFEST = "manifest.json"
STAGING_PREFIX = ".cbr-staging-"
REPORT_FILES = (
    MANIFEST, "bn_stats.json", "stats.csv", "aggregate.csv", "failures.txt",
    "report.html", "index.html",
)  # fmt: skip
RESERVED = frozenset({*REPORT_FILES, LOCK_FILE})
"""Names of cbr's own files in OUT's root; image folders never take them (any case)."""

_TEMP = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")
# The shape of an output name: only such names are taken from a record, so an edited
# or foreign record cannot make cbr delete, say, notes.txt or a folder.
_OUTPUT = re.compile(
    r"^(input\.png|[^/\\]+_(conv|bn|act)(_grid\.png|_c\d{2,}\.png|\.npy)"
    r"|[^/\\]+_(kernels|hist)\.png|report\.html)$"
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _cannot_create(path: str | os.PathLike[str], exc: OSError) -> CbrError:
    return CbrError(f"cannot create directory {path}: {exc.strerror or exc}", exit_code=1)


def is_reserved(name: str) -> bool:
    """True if ``name`` (any case) is one of cbr's own names in OUT's root."""
    low = name.lower()
    return low in RESERVED or low.startswith(STAGING_PREFIX)


def grid_name(layer: str, stage: str) -> str:
    return f"{layer}_{stage}_grid.png"


def channel_name(layer: str, stage: str, channel: int, channels: int) -> str:
    """``<layer>_<stage>_c<NN>.png``, zero-padded to the digits of ``channels - 1`` (min 2)."""
    digits = max(2, len(str(channels - 1)))
    return f"{layer}_{stage}_c{channel:0{digits}d}.png"


def npy_name(layer: str, stage: str) -> str:
    return f"{layer}_{stage}.npy"


def kernels_name(layer: str) -> str:
    return f"{layer}_kernels.png"


def hist_name(layer: str) -> str:
    return f"{layer}_hist.png"


def output_names(
    stages: Iterable[tuple[str, str, int]],
    *,
    channel_pngs: bool,
    save_npy: bool,
    report: bool = False,
    pngs: bool = True,
) -> list[str]:
    """Every file name one image gets, for stages given as ``(layer, stage, channels)``.

    ``report`` adds each layer's kernels picture and histogram figure; ``pngs=False``
    (``--no-pngs``): no PNG at all, the ``.npy`` files only (if ``save_npy``).
    """
    names = [INPUT_PNG] if pngs else []
    layers: list[str] = []
    for layer, stage, channels in stages:
        if pngs and channel_pngs:
            names += [channel_name(layer, stage, c, channels) for c in range(channels)]
        if pngs:
            names.append(grid_name(layer, stage))
        if save_npy:
            names.append(npy_name(layer, stage))
        if layer not in layers:
            layers.append(layer)
    if report:
        for layer in layers:
            names += [kernels_name(layer), hist_name(layer)]
    return names


def is_output_name(name: str) -> bool:
    """True if ``name`` has the shape of a file cbr writes into an image folder."""
    return bool(_OUTPUT.match(name))


def marker_names(image: Any) -> list[str]:
    """The file names a done-marker's ``image`` stands for, derived as they were written.

    A marker does not list its files: they are :func:`output_names` of its stages
    (``layer``, ``stage``, ``shape[0]`` channels) and its ``outputs`` flags. Read from a
    file anyone may have edited, so only well-formed stages count, at most
    :data:`cbr_cli.io.statefiles.MAX_CHANNEL_STAGES` channels in all (else no names),
    and only names of the shape of cbr's output names are given out.
    """
    from cbr_cli.io.statefiles import MAX_CHANNEL_STAGES, STAGES

    outputs = image.get("outputs") if isinstance(image, dict) else None
    stages = image.get("stages") if isinstance(image, dict) else None
    if not isinstance(outputs, dict) or not isinstance(stages, list):
        return []
    flags = [outputs.get(flag) for flag in ("channel_pngs", "save_npy")]
    flags += [outputs.get("pngs", True), outputs.get("report", False)]  # optional
    if not all(isinstance(flag, bool) for flag in flags):
        return []
    found = []
    for stage in stages:
        shape = stage.get("shape") if isinstance(stage, dict) else None
        if not isinstance(shape, list) or not shape:
            continue
        layer, kind, channels = stage.get("layer"), stage.get("stage"), shape[0]
        if isinstance(layer, str) and kind in STAGES and type(channels) is int and channels > 0:
            found.append((layer, kind, channels))
    if sum(channels for *_, channels in found) > MAX_CHANNEL_STAGES:
        return []
    names = output_names(
        found, channel_pngs=flags[0], save_npy=flags[1], pngs=flags[2], report=flags[3]
    )
    if flags[3]:
        names.append(IMAGE_REPORT)
    return [name for name in names if is_output_name(name)]


def temp_target(name: str) -> str | None:
    """The destination name of a temporary file ``.<name>.<hex8>.tmp``, else None."""
    match = _TEMP.match(name)
    return match.group("name") if match else None


class OutTree:
    """OUT, as the user named it (for messages) and as an absolute path (for work)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.label = os.fspath(out_dir)
        self.root = Path(os.path.abspath(out_dir))

    def _refuse(self, path: Path, what: str) -> CbrError:
        shown = Path(self.label, path.relative_to(self.root))
        return CbrError(
            f"--out {self.label}: {shown} is {what}; cbr writes only into real folders below OUT"
        )

    def create_root(self) -> list[Path]:
        """Create OUT (and missing parents); return the folders created, outermost first."""
        missing = []
        current = self.root
        while not os.path.lexists(current):
            missing.append(current)
            current = current.parent
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise CbrError(f"--out {self.label}: exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CbrError(
                f"cannot create directory {self.label}: a file is in the way", 1
            ) from None
        except OSError as exc:
            raise _cannot_create(self.label, exc) from None
        return missing[::-1]

    def folder(self, rel: str, *, create: bool = False) -> Path:
        """``OUT/rel``, checked (and with ``create`` made) one real folder at a time.

        Raises
        ------
        CbrError
            A component below OUT is a symbolic link or not a folder (naming it), or
            cannot be created.
        """
        current = self.root
        for part in PurePosixPath(rel).parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if not create:
                    continue  # nothing there yet: nothing below it can be a link either
                try:
                    os.mkdir(current)
                except FileExistsError:
                    mode = os.lstat(current).st_mode  # made meanwhile: check what it is
                except OSError as exc:
                    raise _cannot_create(current, exc) from None
                else:
                    continue
            if stat.S_ISLNK(mode):
                raise self._refuse(current, "a symbolic link")
            if not stat.S_ISDIR(mode):
                raise self._refuse(current, "a file")
        return current

    @contextlib.contextmanager
    def open_folder(self, rel: str) -> Iterator[int | None]:
        """A descriptor of the real folder ``OUT/rel`` (None if it does not exist).

        Every component below OUT is opened relative to its parent with ``O_NOFOLLOW``,
        so a link put anywhere on the way is refused, never followed.
        """
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            for part in PurePosixPath(rel).parts:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.close(fd)
                    fd = -1
                    break
                except OSError:  # ELOOP (a link) or ENOTDIR (a file): say which
                    self.folder(rel)
                    raise
                os.close(fd)
                fd = child
            yield None if fd < 0 else fd
        finally:
            if fd >= 0:
                os.close(fd)

    def check_all(self, rels: Iterable[str]) -> None:
        """:meth:`folder` for many folders, each shared parent checked once."""
        seen: set[PurePosixPath] = set()
        for rel in rels:
            path = PurePosixPath(rel)
            for prefix in [*path.parents[::-1][1:], path]:
                if prefix not in seen:
                    seen.add(prefix)
                    self.folder(prefix.as_posix())

    def remove(
        self, rel: str, names: Iterable[str], *, temps: bool = True, files: bool = True
    ) -> None:
        """Unlink the files ``names`` of the folder ``OUT/rel`` (missing ones are fine).

        With ``temps``, also the temporary files whose inner name is one of ``names``
        (with ``files=False``, only those). Only files and links are unlinked (a link
        is removed, never followed); a folder of that name is left alone.
        """
        wanted = {n for n in names if n and "/" not in n and n not in (".", "..")}
        try:
            with self.open_folder(rel) as fd:
                if fd is None:
                    return
                doomed = [n for n in wanted if n != MARKER]
                doomed = ([MARKER] if MARKER in wanted else []) + sorted(doomed)
                if not files:
                    doomed = []
                if temps:
                    doomed += [
                        entry.name for entry in os.scandir(fd) if temp_target(entry.name) in wanted
                    ]
                for name in doomed:
                    try:
                        if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                            continue  # a folder with a file's name is not cbr's file
                        os.unlink(name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
        except CbrError:
            raise
        except OSError as exc:
            where = Path(self.label, rel)
            raise CbrError(f"cannot clean {where}: {exc.strerror or exc}", 1) from None

    def remove_empty(self, rel: str) -> None:
        """Remove ``OUT/rel`` and its parents below OUT while they are empty real folders."""
        parts = list(PurePosixPath(rel).parts)
        while parts:
            path = self.root.joinpath(*parts)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    return
                os.rmdir(path)
            except OSError:  # not empty (other images, the user's files) or gone
                return
            parts.pop()

    def clean_root_temps(self) -> None:
        """Remove temporary files of cbr's report files an interrupted run left in OUT."""
        self.remove(".", RESERVED, files=False)


class ImageFolder:
    """One image's folder ``OUT/rel``: creating it, and removing only cbr's files in it."""

    def __init__(self, tree: OutTree, rel: str) -> None:
        self.tree = tree
        self.rel = PurePosixPath(rel).as_posix()
        self.path = tree.root.joinpath(*PurePosixPath(rel).parts)

    def create(self) -> Path:
        """Make the folder (real folders all the way down from OUT); return its path."""
        return self.tree.folder(self.rel, create=True)

    def _read(self, name: str) -> Any:
        """The JSON object of the state file ``name`` here, or None (missing, a link, a
        FIFO, too big, not JSON: :func:`cbr_cli.io.statefiles.load`)."""
        from cbr_cli.io.statefiles import load

        self.tree.folder(self.rel)  # no link on the way
        return load(self.path / name)[0]

    def recorded(self) -> set[str]:
        """Names of this folder that the marker or the pending record says cbr wrote."""
        names: set[str] = set()
        pending = self._read(PENDING)
        if isinstance(pending, dict) and isinstance(pending.get("files"), list):
            names.update(n for n in pending["files"] if isinstance(n, str))
        marker = self._read(MARKER)
        image = marker.get("image") if isinstance(marker, dict) else None
        if isinstance(image, dict):
            names.update(marker_names(image))  # a marker of today's format
            stages = image.get("stages")  # format 1 (cbr 0.x): the files are listed
            for stage in stages if isinstance(stages, list) else []:
                if isinstance(stage, dict):
                    names.update(self._own(_strings(stage.get("files"))))
            names.update(self._own(_strings(image.get("input_png"))))
        return {n for n in names if is_output_name(n)}

    def _own(self, paths: Iterable[str]) -> Iterator[str]:
        """File names of this folder among OUT-relative ``paths``."""
        for path in paths:
            p = PurePosixPath(path)
            if p.parent.as_posix() == self.rel:
                yield p.name

    def source(self) -> str | None:
        """The input path the marker or the pending record names, if any."""
        for name, keys in ((MARKER, ("image", "path")), (PENDING, ("input",))):
            value = self._read(name)
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, str):
                return value
        return None

    def has_record(self) -> bool:
        return any(os.path.lexists(self.path / name) for name in (MARKER, PENDING))

    def prepare(self, names: list[str], source: str) -> None:
        """Make the folder ready for a new set of files ``names`` (of the input ``source``).

        First the pending record (every name recorded before, and ``names``) is written, so
        an image cut short at any later point is cleaned by the next run; then the marker
        and the recorded files and those named ``names`` are removed.
        """
        from cbr_cli.io.writers import atomic_writer

        folder = self.create()
        doomed = self.recorded() | set(names)
        record = {"format": 1, "input": source, "files": sorted(doomed)}
        # Not fsync-ed: like the feature maps it covers (a killed process loses neither).
        with atomic_writer(folder / PENDING, "w", durable=False) as handle:
            json.dump(record, handle, indent=1)
        self.tree.remove(self.rel, [MARKER, *sorted(doomed)])
        self.tree.remove(self.rel, [PENDING], files=False)  # of a record cut short

    def drop_pending(self) -> None:
        """After the marker is written: the pending record (and any temporary copy of
        it) is no longer needed."""
        self.tree.remove(self.rel, [PENDING])

    def clear(self, *, remove_empty: bool = False) -> None:
        """Remove cbr's files: the marker first, then recorded files, the pending record last.

        With ``remove_empty``, an emptied folder (and emptied parents below OUT) goes too.
        """
        self.tree.remove(self.rel, [MARKER, *sorted(self.recorded())])
        self.tree.remove(self.rel, [PENDING, MARKER])
        if remove_empty:
            self.tree.remove_empty(self.rel)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside nested lists and dicts (a record's file paths)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def find_recorded_folders(tree: OutTree) -> Iterator[ImageFolder]:
    """Image folders below OUT holding a marker or a pending record (links not followed)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(tree.root.joinpath(*PurePosixPath(rel).parts)))
        except OSError:
            continue
        names = {e.name for e in entries}
        if rel and (MARKER in names or PENDING in names):
            yield ImageFolder(tree, rel)
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                stack.append(f"{rel}/{entry.name}" if rel else entry.name)


def unique_names(
    paths: Sequence[str], taken: Iterable[str] = (), *, reserved: bool = False
) -> list[str]:
    """Output folder names: the file stem, disambiguated deterministically on collision.

    The first file with a stem keeps it; later ones get ``<stem>-<ext>`` (``a-jpg``),
    then ``<stem>-<ext>-2``, ``-3``, ... Hidden-file stems keep their dot. Names in
    ``taken`` (e.g. sibling folders) are never given out, nor, with ``reserved``, cbr's
    own names in OUT's root (:func:`is_reserved`: ``manifest.json``
    from ``manifest.json.png`` becomes ``manifest.json-png``). Comparison ignores case.
    """
    used: set[str] = {name.lower() for name in taken}

    def free(name: str) -> bool:
        return name.lower() not in used and not (reserved and is_reserved(name))

    names = []
    for path in paths:
        p = Path(path)
        stem = p.stem or p.name
        candidates = [stem, f"{stem}-{p.suffix.lstrip('.').lower() or 'file'}"]
        if reserved and is_reserved(candidates[1]):  # ".cbr-staging-x-png": every suffix is
            candidates[1] = f"_{candidates[1]}"
        name = next((c for c in candidates if free(c)), None)
        n = 2
        while name is None:
            if free(f"{candidates[1]}-{n}"):
                name = f"{candidates[1]}-{n}"
            n += 1
        used.add(name.lower())
        names.append(name)
    return names
