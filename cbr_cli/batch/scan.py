"""A folder of images as the pipeline will read it: shared by ``cbr batch`` and ``cbr calibrate``.

* :class:`RunSetup` -- what every worker needs to read an image and run the layers.
* :func:`scan_folder` -- a header scan (no pixels decoded, ~0.1 ms per file): the
  colour to read the folder in and the sizes the first layer will see.
* :func:`check_config` -- the pipeline checked against those channel counts and, when
  every image reaches it at one size, against that size (the arithmetic of
  ``cbr shape``), so a config that cannot work is one error before any image is
  processed, not the same failure once per image.

No printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cbr_cli.errors import CbrError
from cbr_cli.run.inputs import load_batch
from cbr_cli.run.pipeline import BuiltLayer, build_layers, normalize_input
from cbr_cli.run.records import ApplyOptions
from cbr_cli.spec.pipeline_types import PipelineSpec


@dataclass
class RunSetup:
    """What every worker needs to run the pipeline on an image (given to the pool).

    ``color`` overrides ``spec.input.color`` (``cbr batch`` reads a folder that mixes
    gray and colour images as RGB, as ``cbr apply`` does a batch).
    """

    spec: PipelineSpec
    color: str | None = None
    options: ApplyOptions = field(default_factory=ApplyOptions)
    _built: dict[int, list[BuiltLayer]] = field(default_factory=dict, repr=False, compare=False)

    def layers(self, channels: int) -> list[BuiltLayer]:
        """Built layers for ``channels`` input channels (built once per process)."""
        if channels not in self._built:
            self._built[channels] = build_layers(self.spec, channels)
        return self._built[channels]

    def load(self, path: str) -> np.ndarray:
        """The pipeline's input for one image: (1, C, H, W) float32, normalised."""
        pixels, _ = load_batch(
            [path], self.color or self.spec.input.color, self.options.resize, self.spec.input
        )
        return normalize_input(pixels[0][None], self.spec.input)


def failure_reason(exc: BaseException) -> str:
    """One line saying why an image failed."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    return " ".join(str(exc).split())


@dataclass(frozen=True)
class FolderScan:
    """What the file headers say about a folder (unreadable files are left out).

    Attributes
    ----------
    color : {"gray", "rgb"} or None
        How to read the images: ``input.color`` if configured; else ``"rgb"`` if the
        folder mixes gray and colour images (as ``cbr apply`` reads a batch); else
        None (as stored).
    channels : frozenset of int
        The channel counts the first layer sees when read that way.
    sizes : frozenset of (H, W)
        The sizes the first layer sees: ``{resize}`` when resizing, else the sizes in
        the headers -- or any two of them (the scan stops once it knows there is more
        than one).
    """

    color: str | None
    channels: frozenset[int]
    sizes: frozenset[tuple[int, int]]


def scan_folder(
    spec: PipelineSpec, paths: Sequence[str], resize: tuple[int, int] | None = None
) -> FolderScan:
    """Read the headers of ``paths`` as far as needed to fill a :class:`FolderScan`.

    Nothing is read when the colour is configured and ``resize`` is given. A PNG whose
    EXIF orientation comes after its pixel data is seen unrotated here (see
    :func:`cbr_cli.io.images.read_image_size`).
    """
    from cbr_cli.io.images import read_image_size

    color = spec.input.color
    channels: set[int] = set() if color is None else {3 if color == "rgb" else 1}
    sizes: set[tuple[int, int]] = set() if resize is None else {resize}
    for path in paths:
        if (color is not None or len(channels) > 1) and (resize is not None or len(sizes) > 1):
            break  # nothing left to learn
        try:
            count, height, width = read_image_size(path, color)  # type: ignore[arg-type]
        except CbrError:
            continue  # it fails when read, and is reported then
        channels.add(count)
        if resize is None:
            sizes.add((height, width))
    if color is None and len(channels) > 1:
        color, channels = "rgb", {3}
    return FolderScan(color, frozenset(channels), frozenset(sizes))


def check_config(setup: RunSetup, scan: FolderScan) -> None:
    """Check the pipeline against the folder now, before any image is processed.

    When every image reaches the first layer at one size, first checks every layer's
    shape arithmetic at that size
    (:func:`cbr_cli.spec.layerstack.analyze`: a kernel larger than its padded input,
    padding too large for reflect, ...); then builds the layers and the input
    normalisation for each channel count (weights or per-channel lists that do not
    fit). The built layers stay cached in ``setup``, so forked workers inherit them.

    Raises
    ------
    CbrError
        Naming the layer (and the image size, for a shape error).
    """
    from cbr_cli.spec.layerstack import analyze

    resize = setup.options.resize
    for count in sorted(scan.channels):
        if len(scan.sizes) == 1:  # the arithmetic first: nothing is allocated for it
            ((height, width),) = scan.sizes
            try:
                analyze(setup.spec, (count, height, width))
            except CbrError as exc:
                size = f"{height}x{width}"
                why = f"with --resize {size}" if resize is not None else f"every image is {size}"
                raise CbrError(f"{exc.message} ({why})", exc.exit_code) from None
        # (sizes differ: a layer may fail for some images only, reported per image)
        setup.layers(count)
        normalize_input(np.zeros((1, count, 1, 1), dtype=np.float32), setup.spec.input)
