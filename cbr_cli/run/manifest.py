"""``manifest.json``: what was run, on what, with which versions -- enough to reproduce it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cbr_cli.run.records import ApplyOptions, ImageRecord
from cbr_cli.spec.pipeline_types import PipelineSpec

if TYPE_CHECKING:
    pass


def run_notes(spec: PipelineSpec) -> list[str]:
    """The spec's notes, then the weight file's (conversions made reading its tensors)."""
    notes = list(spec.notes)
    if spec.weights is not None:
        notes += [f"{spec.weights.display}: {note}" for note in spec.weights.notes]
    return list(dict.fromkeys(notes))


def run_description(spec: PipelineSpec, options: ApplyOptions) -> dict[str, Any]:
    """What was run and with which versions (no inputs, no time): what ``cbr apply``'s and
    ``cbr batch``'s manifests share."""
    import platform
    from importlib import metadata

    from cbr_cli import __version__

    versions = {"cbr-cli": __version__, "python": platform.python_version()}
    for package in ("numpy", "scipy", "pillow", "isal", "pyyaml", "typer", "rich"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cbr_version": __version__,
        "config_source": spec.source,
        "pipeline": spec.to_plain(),
        "seeds": {
            layer.name: layer.conv.seed
            for layer in spec.layers
            if layer.conv.weight is None and layer.conv.kernels is None
        },
        "options": {
            "colormap": options.colormap,
            "normalize": options.normalize,
            "save_npy": options.save_npy,
            "pngs": options.pngs,
            "npy_dtype": options.npy_dtype,
            "resize": list(options.resize) if options.resize else None,
        },
        "versions": versions,
    }


def manifest(
    spec: PipelineSpec, records: list[ImageRecord], options: ApplyOptions
) -> dict[str, Any]:
    """``cbr apply``'s manifest: what was run, on what, with which versions, and when."""
    return {
        **run_description(spec, options),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [{"path": r.path, "name": r.name, **r.source} for r in records],
    }
