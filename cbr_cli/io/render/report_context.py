"""What the HTML pages show, as plain data: the contract between a run and its templates.

:class:`ReportContext` is ``cbr apply``'s ``report.html``; :class:`IndexContext` is ``cbr
batch``'s ``index.html``. Every path (:attr:`Picture.src`, :attr:`IndexEntry.report`) is
relative to the page, with ``/`` separators, so the output folder can be zipped and
mailed; the templates URL-quote and HTML-escape them (and every other string).

:func:`report_context` builds a :class:`ReportContext` from what ``cbr apply`` already
produces as plain data - ``ApplyResult.to_dict()`` and ``manifest.json`` - plus the
pictures only the report has (kernels, histograms).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChannelRow",
    "ImageView",
    "IndexContext",
    "IndexEntry",
    "LayerView",
    "Picture",
    "ReportContext",
    "StageView",
    "Table",
    "channel_rows",
    "relative",
    "report_context",
    "shape_table",
]

STAGE_TITLES = {"conv": "conv output", "bn": "after BatchNorm", "act": "after activation"}


@dataclass(frozen=True)
class Picture:
    """An image file, ``src`` relative to the page; ``alt`` describes it."""

    src: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A table as data: ``rows[i][j]`` is the text under ``columns[j]``."""

    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class ChannelRow:
    """One channel of one stage in the statistics table.

    ``dead``: all zero. ``clipped``: data beyond the display range ``[vmin, vmax]``.
    """

    index: int
    label: str
    min: float
    max: float
    mean: float
    std: float
    frac_zero: float
    frac_negative: float
    vmin: float
    vmax: float
    dead: bool = False

    @property
    def clipped(self) -> bool:
        return self.min < self.vmin or self.max > self.vmax


@dataclass(frozen=True)
class StageView:
    """One stage (``conv``, ``bn``, ``act``) of one layer for one image."""

    stage: str
    grid: Picture
    note: str
    """How its colours were scaled, e.g. ``shared range (max of |x|): channels comparable``."""
    channels: list[Picture]
    """Full-size per-channel PNGs, in channel order (the filmstrip); may be empty."""
    rows: list[ChannelRow]

    @property
    def title(self) -> str:
        return STAGE_TITLES.get(self.stage, self.stage)


@dataclass(frozen=True)
class LayerView:
    """One layer for one image: its input, kernels, stages, histograms."""

    name: str
    input: Picture
    stages: list[StageView]
    labels: list[str]
    """Channel labels, for the filmstrip's channel selector."""
    kernels: Picture | None = None
    histogram: Picture | None = None


@dataclass(frozen=True)
class ImageView:
    """One input image and its layers."""

    name: str
    source: str
    input: Picture
    layers: list[LayerView]


@dataclass(frozen=True)
class ReportContext:
    """Everything ``report.html`` shows, in reading order."""

    title: str
    command: str
    pipeline_yaml: str
    versions: dict[str, str | None]
    warnings: list[str]
    shape_table: Table
    images: list[ImageView]
    created: str = ""


@dataclass(frozen=True)
class IndexEntry:
    """One image of a ``cbr batch`` folder: a thumbnail linking to its report, or a failure."""

    name: str
    report: str | None = None
    thumbnail: Picture | None = None
    message: str = ""
    """Empty for a processed image; the one-line error for a failed one."""

    @property
    def failed(self) -> bool:
        return bool(self.message)


@dataclass(frozen=True)
class IndexContext:
    """Everything ``index.html`` shows: the gallery, the aggregate statistics, failures."""

    title: str
    command: str
    versions: dict[str, str | None]
    warnings: list[str]
    entries: list[IndexEntry]
    aggregate: Table
    created: str = ""
    failures: list[IndexEntry] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Building a report context from plain data


def relative(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to the folder ``start``, with ``/`` separators."""
    return os.path.relpath(os.fspath(path), os.fspath(start)).replace(os.sep, "/")


def _pair(value: Sequence[Any]) -> str:
    return "x".join(str(v) for v in value)


def shape_table(layers: Sequence[Mapping[str, Any]]) -> Table:
    """The ``cbr shape`` table from its JSON rows (``StackResult.to_plain()["layers"]``)."""
    columns = [
        "layer",
        "input",
        "output",
        "kernel",
        "stride",
        "padding (t, b, l, r)",
        "dilation",
        "groups",
        "stages",
        "params",
        "MACs",
        "receptive field",
    ]
    rows = []
    for row in layers:
        pad = row["padding"]
        rows.append(
            [
                str(row["name"]),
                _pair(row["input_shape"]),
                _pair(row["output_shape"]),
                _pair(row["kernel_size"]),
                _pair(row["stride"]),
                f"{pad['top']}, {pad['bottom']}, {pad['left']}, {pad['right']}"
                + ("" if row["padding_mode"] == "zeros" else f" ({row['padding_mode']})"),
                _pair(row["dilation"]),
                str(row["groups"]),
                " -> ".join(row["stages"]),
                f"{row['params']:,}",
                f"{row['macs']:,}",
                _pair(row["receptive_field"]),
            ]
        )
    return Table(columns, rows)


def channel_rows(channels: Sequence[Mapping[str, Any]]) -> list[ChannelRow]:
    """Statistics rows from a stage's ``channels`` list in ``manifest.json`` / ``to_dict()``."""
    return [
        ChannelRow(
            index=int(c["channel"]),
            label=str(c.get("label", f"c{c['channel']}")),
            min=float(c["min"]),
            max=float(c["max"]),
            mean=float(c["mean"]),
            std=float(c["std"]),
            frac_zero=float(c["frac_zero"]),
            frac_negative=float(c["frac_negative"]),
            vmin=float(c["vmin"]),
            vmax=float(c["vmax"]),
            dead=bool(c.get("dead", False)),
        )
        for c in channels
    ]


def report_context(
    result: Mapping[str, Any],
    manifest: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    command: str,
    pipeline_yaml: str,
    notes: Mapping[str, str] | None = None,
    kernels: Mapping[tuple[str, str], str] | None = None,
    histograms: Mapping[tuple[str, str], str] | None = None,
    title: str = "cbr report",
) -> ReportContext:
    """The report of one ``cbr apply`` run, from its plain data.

    Parameters
    ----------
    result : mapping
        ``ApplyResult.to_dict()``: images, their stages, files, channel statistics.
    manifest : mapping
        ``manifest.json``: ``versions``, ``geometry`` (the ``cbr shape`` rows), ``created``.
    out_dir : path
        The folder ``report.html`` goes into; every path becomes relative to it.
    command : str
        The command line, as the user typed it (``shlex.join(sys.argv)``).
    pipeline_yaml : str
        The resolved pipeline as YAML.
    notes : mapping of stage name to str, optional
        How each stage's colours were scaled (``grid.normalize_note``), where a stage
        of ``result`` has no ``note`` of its own.
    kernels, histograms : mapping of (image name, layer) to path, optional
        The kernels picture and histogram figure files, where an image of ``result``
        does not list them in its ``layers`` (``kernels`` and ``hist`` paths).
    """
    notes = notes or {}
    kernels = kernels or {}
    histograms = histograms or {}
    geometry = manifest.get("geometry", {})
    layers_plain = next(iter(geometry.values()), []) if geometry else []
    images = []
    for image in result["images"]:
        name = image["name"]
        input_picture = Picture(relative(image["input_png"], out_dir), f"input of {name}")
        by_layer: dict[str, list[Mapping[str, Any]]] = {}
        for stage in image["stages"]:
            by_layer.setdefault(stage["layer"], []).append(stage)
        layers = []
        previous = input_picture
        for layer, stages in by_layer.items():
            views = []
            for stage in stages:
                files = stage["files"]
                what = f"{layer} {STAGE_TITLES.get(stage['stage'], stage['stage'])}"
                channels = stage["channels"]
                views.append(
                    StageView(
                        stage=stage["stage"],
                        grid=Picture(relative(files["grid"], out_dir), f"{what}, all channels"),
                        note=stage.get("note") or notes.get(stage["stage"], ""),
                        channels=[
                            Picture(relative(path, out_dir), f"{what}, {channels[c]['label']}")
                            for c, path in enumerate(files.get("channels", []))
                        ],
                        rows=channel_rows(channels),
                    )
                )
            labels = [c["label"] for c in stages[0]["channels"]]
            own = image.get("layers", {}).get(layer, {})
            kernel_file = own.get("kernels") or kernels.get((name, layer))
            hist_file = own.get("hist") or histograms.get((name, layer))
            layers.append(
                LayerView(
                    name=layer,
                    input=previous,
                    stages=views,
                    labels=labels,
                    kernels=None
                    if kernel_file is None
                    else Picture(relative(kernel_file, out_dir), f"{layer} kernels"),
                    histogram=None
                    if hist_file is None
                    else Picture(relative(hist_file, out_dir), f"{layer} histograms"),
                )
            )
            previous = views[-1].grid
        images.append(ImageView(name, image["path"], input_picture, layers))
    return ReportContext(
        title=title,
        command=command,
        pipeline_yaml=pipeline_yaml,
        versions=dict(manifest.get("versions", {})),
        warnings=list(result.get("warnings", [])),
        shape_table=shape_table(layers_plain),
        images=images,
        created=str(manifest.get("created", "")),
    )
