"""What ``cbr apply`` was asked (:class:`ApplyOptions`) and what it wrote, per image and stage.

Plain records: ``to_dict`` gives the JSON of ``--json`` and the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cbr_cli.core.stats import ChannelStats

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ApplyOptions:
    """``normalize``: ``auto`` (per stage, :func:`cbr_cli.io.render.ranges.auto_normalize`)
    or one mode for every stage; ``range_rule``: ``--range`` (``max`` or ``pNN``);
    ``report``: draw the kernels and histogram pictures and write ``report.html``;
    ``command``: the command line, as the report shows it."""

    out_dir: str = "cbr-out"
    colormap: str | None = None
    normalize: str = "auto"
    save_npy: bool = False
    channel_pngs: bool = True
    resize: tuple[int, int] | None = None
    range_rule: str = "p99.5"
    report: bool = False
    command: str = ""
    pngs: bool = True
    """False (``--no-pngs``): no PNG at all; arrays (``save_npy``) and statistics only."""
    npy_dtype: str = "float32"
    """``--dtype``: ``"float32"`` or ``"float16"`` for the ``.npy`` files (and ``--store``)."""


@dataclass
class StageRecord:
    layer: str
    stage: str
    shape: tuple[int, int, int]
    colormap: str
    ranges: list[tuple[float, float]]
    stats: list[ChannelStats]
    labels: list[str]
    files: dict[str, Any] = field(default_factory=dict)
    normalize: str = "per-stage"
    range_rule: str = "max"
    note: str = ""
    """How the colours were scaled, as the grid states it."""
    clipped: list[bool] = field(default_factory=list)
    """Per channel: data beyond the display range (drawn in the end colours)."""

    def to_dict(self) -> dict[str, Any]:
        """Without ``ranges`` (``--no-pngs``: nothing drawn) the stage has no colours:
        no ``colormap``, ``normalize``, ``range`` and ``note``, no channel ``vmin``,
        ``vmax`` and ``clipped``."""
        pairs = zip(self.stats, self.labels, strict=True)
        channels = [{**s.to_dict(), "label": label} for s, label in pairs]
        view: dict[str, Any] = {}
        if self.ranges:
            clipped = self.clipped or [False] * len(self.stats)
            for channel, (vmin, vmax), clip in zip(channels, self.ranges, clipped, strict=True):
                channel.update(vmin=vmin, vmax=vmax, clipped=clip)
            view = {
                "colormap": self.colormap,
                "normalize": self.normalize,
                "range": self.range_rule,
                "note": self.note,
            }
        return {
            "layer": self.layer,
            "stage": self.stage,
            "shape": list(self.shape),
            **view,
            "channels": channels,
            "files": self.files,
        }


@dataclass
class ImageRecord:
    path: str
    name: str
    out_dir: str
    source: dict[str, Any]
    stages: list[StageRecord] = field(default_factory=list)
    input_png: str = ""
    layers: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per layer, the report's pictures: ``kernels`` and ``hist`` paths."""
    report: str = ""
    """``cbr batch``: the image's own page, ``<folder>/report.html``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "out_dir": self.out_dir,
            "source": self.source,
            "input_png": self.input_png,
            "stages": [s.to_dict() for s in self.stages],
            "layers": self.layers,
            **({"report": self.report} if self.report else {}),
        }


@dataclass
class ApplyResult:
    images: list[ImageRecord]
    manifest: str
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    """One line each: where the run departs from PyTorch or ignores input (as `cbr shape`)."""
    notes: list[str] = field(default_factory=list)
    """One line each: the weight file's conversions, where a model's chain stopped, ..."""
    report: str | None = None
    """``OUT/report.html``, when written."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": [i.to_dict() for i in self.images],
            "manifest": self.manifest,
            "report": self.report,
            "warnings": self.warnings,
            "notes": self.notes,
        }
