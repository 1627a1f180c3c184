"""Which files ``cbr batch`` and ``cbr calibrate`` read, and where batch's outputs go. No printing.

Discovery
---------
Files directly in ``IN`` (with ``recursive``: in every subfolder too) whose suffix is
one of :data:`cbr_cli.io.images.IMAGE_SUFFIXES` (any case). Everything else is skipped
silently: other suffixes, hidden files and folders (name starting with ``.``),
dangling symbolic links, and symbolic links to folders (not followed, so no cycles;
links to files are read). ``glob`` keeps only files whose path relative to ``IN``
(with ``/`` separators) matches it whole under :func:`fnmatch.fnmatchcase` rules,
where ``*`` also matches ``/``: ``*.png`` at any depth, ``cats/*`` everything below
the top-level folder ``cats``, ``*/cats/*`` below any folder named ``cats``. The
result is sorted by relative path, component by component, in code-point order
(independent of the locale and the file system).

Layout
------
``IN/<dir>/<file>`` writes into ``OUT/<dir>/<name>/``, where ``<name>`` is the file's
stem, made unique within ``<dir>`` by :func:`cbr_cli.io.image_folder.unique_names` (``a.png``
and ``a.jpg``: ``a`` and ``a-png``, in sorted order, so ``a.jpg`` keeps ``a``). A
stem that equals a subfolder's name holding images also gets the suffix, so an
image's folder never is a mirrored folder. In ``OUT``'s root no image folder takes one
of cbr's own names (:data:`cbr_cli.io.image_folder.RESERVED`: ``manifest.json.png`` gets
``manifest.json-png``), and a subfolder of ``IN`` named like one is refused. ``OUT``
may not lie inside ``IN`` (its outputs would become inputs) nor contain it (an image's
folder could be ``IN``).
"""

from __future__ import annotations

import fnmatch
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cbr_cli.errors import CbrError
from cbr_cli.io.image_folder import is_reserved, unique_names
from cbr_cli.io.images import IMAGE_SUFFIXES


def discover(
    in_dir: str | os.PathLike[str], recursive: bool = False, glob: str | None = None
) -> list[Path]:
    """Image files under ``in_dir``, sorted (see the module docstring).

    Raises
    ------
    CbrError
        ``in_dir`` is not a folder, a folder cannot be listed, or no image is found
        (the message says what was looked for).
    """
    root = Path(in_dir)
    if not root.is_dir():
        raise CbrError(f"{in_dir}: not a folder" if root.exists() else f"{in_dir}: no such folder")
    found: list[Path] = []
    folders = [root]
    skipped_folders = False
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise CbrError(f"cannot list folder {folder}: {exc.strerror or exc}", 1) from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    folders.append(Path(entry.path))
                else:
                    skipped_folders = True
            elif entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                path = Path(entry.path)
                if glob is None or fnmatch.fnmatchcase(path.relative_to(root).as_posix(), glob):
                    found.append(path)
    if not found:
        raise CbrError(_nothing_found(in_dir, recursive, glob, skipped_folders))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _nothing_found(
    in_dir: str | os.PathLike[str], recursive: bool, glob: str | None, skipped_folders: bool
) -> str:
    """``no images in IN (.png, ...) matching GLOB; add --recursive ...``, as applies."""
    where = f"{in_dir} or its subfolders" if recursive else f"{in_dir}"
    matching = "" if glob is None else f" matching {glob!r}"
    hint = "; add --recursive to include subfolders" if skipped_folders else ""
    return f"no images in {where} ({', '.join(IMAGE_SUFFIXES)}){matching}{hint}"


def check_overlap(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Refuse an output folder inside the input folder, or containing it."""
    source = Path(in_dir).resolve()
    target = Path(out_dir).resolve()
    if target == source or source in target.parents:
        raise CbrError(
            f"--out {out_dir}: the output folder must not be inside the input folder "
            f"{in_dir} (outputs would become inputs)"
        )
    if target in source.parents:
        raise CbrError(
            f"--out {out_dir}: the output folder must not contain the input folder "
            f"{in_dir} (an image's output folder could be the input folder)"
        )


@dataclass(frozen=True)
class ImageJob:
    """One input image and its output folder.

    Attributes
    ----------
    index : int
        Position in the sorted input list.
    path : str
        The image, absolute.
    rel : str
        The image relative to ``IN`` (``/``-separated): how reports name it.
    folder : str
        Its output folder, absolute.
    out_rel : str
        The output folder relative to ``OUT`` (``/``-separated).
    """

    index: int
    path: str
    rel: str
    folder: str
    out_rel: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.out_rel).name


def plan_outputs(
    in_dir: str | os.PathLike[str], images: list[Path], out_dir: str | os.PathLike[str]
) -> list[ImageJob]:
    """An :class:`ImageJob` per image of ``discover(in_dir, ...)``, in the same order."""
    root = Path(in_dir)
    out_root = Path(os.path.abspath(out_dir))
    rels = [PurePosixPath(p.relative_to(root).as_posix()) for p in images]
    by_folder: dict[PurePosixPath, list[int]] = defaultdict(list)
    subfolders: dict[PurePosixPath, set[str]] = defaultdict(set)
    for i, rel in enumerate(rels):
        by_folder[rel.parent].append(i)
        for parent in rel.parents:
            if parent != PurePosixPath("."):
                subfolders[parent.parent].add(parent.name)
    for name in subfolders[PurePosixPath(".")]:
        if is_reserved(name):
            raise CbrError(
                f"{Path(in_dir, name)}: a subfolder named like cbr's own {name!r} in OUT "
                "cannot be mirrored there; rename it"
            )
    names: dict[int, str] = {}
    for folder, members in by_folder.items():
        chosen = unique_names(
            [rels[i].name for i in members],
            taken=subfolders[folder],
            reserved=folder == PurePosixPath("."),
        )
        names.update(zip(members, chosen, strict=True))
    jobs = []
    for i, (path, rel) in enumerate(zip(images, rels, strict=True)):
        out_rel = rel.parent / names[i]
        jobs.append(
            ImageJob(
                index=i,
                path=os.path.abspath(path),
                rel=rel.as_posix(),
                folder=str(out_root.joinpath(*out_rel.parts)),
                out_rel=out_rel.as_posix(),
            )
        )
    return jobs
