"""Running a spec on given images: the pipeline (per-stage arrays) and ``cbr apply``'s work
(images in, feature maps, PNGs, arrays and the manifest out). No printing.

May import everything below it: errors, core, io, spec.
"""
