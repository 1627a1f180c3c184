"""Folders of images: discovery, the worker pool, resume markers, dataset-wide BatchNorm
(``cbr calibrate``), and the folder-level reports of ``cbr batch``. No printing.

May import everything below it: errors, core, io, spec, run.
"""
