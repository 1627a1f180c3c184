"""What ``cbr batch`` is asked to do (:class:`BatchOptions`) and what it did (:class:`BatchResult`).

Their own module, so that the folder reports (:mod:`cbr_cli.batch.reports`) and the run
(:mod:`cbr_cli.batch.runner`) share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cbr_cli.run.records import ApplyOptions


@dataclass(frozen=True)
class BatchOptions:
    """How ``cbr batch`` runs; ``output`` holds the per-image options of ``cbr apply``."""

    out_dir: str
    recursive: bool = False
    glob: str | None = None
    jobs: int | None = None
    force: bool = False
    fail_fast: bool = False
    prune: bool = False
    dask: str | None = None
    """``--dask``: a scheduler ``tcp://HOST:PORT`` or ``local[:N]`` (see
    :mod:`cbr_cli.batch.dask_pool`); None runs on local worker processes."""
    store: str | None = None
    """``--store``: the Zarr feature store (:mod:`cbr_cli.batch.zarr_store`); a relative
    path is under ``out_dir``. None writes none."""
    output: ApplyOptions = field(default_factory=ApplyOptions)


@dataclass
class BatchResult:
    """What a run did. ``status`` maps an image (relative path) to ``"processed"``,
    ``"skipped"`` (finished by an earlier run), ``"failed"`` or ``"not run"`` (after
    ``fail_fast`` stopped)."""

    out_dir: str
    status: dict[str, str]
    failures: list[tuple[str, str]]
    files: dict[str, str]
    stopped: bool = False
    warnings: list[str] = field(default_factory=list)
    """One line each: state files in OUT that were not as cbr writes them (ignored)."""
    orphans: list[str] = field(default_factory=list)
    """Image folders (relative to OUT) of images no longer in IN (see :meth:`_Run.orphans`)."""
    pruned: bool = False
    """True if the ``orphans`` were removed (``prune``)."""
    store: str | None = None
    """The feature store's absolute path (``--store``), or None."""

    def count(self, status: str) -> int:
        return sum(1 for s in self.status.values() if s == status)
