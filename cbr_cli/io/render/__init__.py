"""Feature maps -> pictures: colormaps, value ranges, colouring, grids, colour bars, text,
kernel pictures, histograms and the HTML report (issue 10).

Modules, one job each: :mod:`.colormaps` (lookup tables), :mod:`.ranges` (display ranges:
``--range max|pNN``, per-stage normalisation), :mod:`.colorize` (values -> colours),
:mod:`.text` (Pillow's scalable font), :mod:`.resample` (area-average shrink, nearest
enlarge), :mod:`.colorbar`, :mod:`.montage` (labelled grid layout), :mod:`.grid` (one
stage's channels as a finished grid), :mod:`.kernel_picture`, :mod:`.histograms`
(matplotlib, imported on use), :mod:`.report_context` and :mod:`.report` (Jinja2 HTML).
"""
